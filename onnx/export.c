/*
 * export.c: see export.h.
 */
#include "onnx/export.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "gplq/export.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "onnx/graph.h"
#include "onnx/qweights.h"
#include "onnx/swin.h"
#include "onnx/vit.h"

#define ONNX_PRODUCER_VERSION "0.1.0"

const char *onnx_kind_name(onnx_kind k) {
    switch (k) {
    case ONNX_KIND_QDQ: return "qdq";
    case ONNX_KIND_W4: return "w4-matmulnbits";
    case ONNX_KIND_FP32: return "fp32";
    }
    return "?";
}

/* metadata_props: what a user needs to feed the model (input normalization and shape) and to
 * know what it is. */
#define NMETA_MAX 16
typedef struct {
    const char *k[NMETA_MAX], *v[NMETA_MAX];
    char buf[NMETA_MAX][256];
    int n;
} meta;

static void meta_add(meta *m, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void meta_add(meta *m, const char *k, const char *fmt, ...) {
    if (m->n >= NMETA_MAX) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->buf[m->n], sizeof m->buf[m->n], fmt, ap);
    va_end(ap);
    m->k[m->n] = k;
    m->v[m->n] = m->buf[m->n];
    m->n++;
}

static void meta_model(meta *mt, const model *m, onnx_kind kind, const char *source) {
    model_dims d = model_get_dims(m);
    int n3 = d.in_chans;
    meta_add(mt, "gplq_onnx", "%s", onnx_kind_name(kind));
    meta_add(mt, "architecture", "%s", m->arch == MODEL_SWIN ? "swin"
                                       : m->vit.cfg.distilled ? "deit" : "vit");
    meta_add(mt, "input", "pixel_values [batch, %d, %d, %d], float, (pixel / 255 - mean) / std per "
             "channel", d.in_chans, d.img_size, d.img_size);
    meta_add(mt, "mean", n3 == 1 ? "[%.9g]" : n3 == 2 ? "[%.9g, %.9g]" : "[%.9g, %.9g, %.9g]",
             d.mean[0], d.mean[1], d.mean[2]);
    meta_add(mt, "std", n3 == 1 ? "[%.9g]" : n3 == 2 ? "[%.9g, %.9g]" : "[%.9g, %.9g, %.9g]",
             d.std[0], d.std[1], d.std[2]);
    meta_add(mt, "img_size", "%d", d.img_size);
    meta_add(mt, "num_classes", "%d", d.num_classes);
    /* the file's name, not its path: a job's path names the job, and the same model must
     * export to the same bytes whichever job (or retry) made it */
    const char *base = strrchr(source, '/');
    meta_add(mt, "source", "%s", base ? base + 1 : source);
}

/* The graph of m by its architecture's builder (onnx/vit.c, onnx/swin.c). */
static int build(onnx_graph *g, const model *m, actq_set *aq, const onnx_qweights *qw,
                 onnx_kind kind, const onnx_opts *opts, char *err, size_t errlen) {
    switch (m->arch) {
    case MODEL_VIT: return onnx_vit_build(g, &m->vit, aq, qw, kind, opts, err, errlen);
    case MODEL_SWIN: return onnx_swin_build(g, &m->swin, aq, qw, kind, opts, err, errlen);
    }
    snprintf(err, errlen, "a model of architecture %d has no ONNX graph", (int)m->arch);
    return -1;
}

static int save(onnx_graph *g, const char *out_path, meta *mt, char *err, size_t errlen) {
    return onnx_graph_save(g, out_path, ONNX_PRODUCER_VERSION, mt->k, mt->v, mt->n, err, errlen);
}

static int export_fp32(const char *in_path, const char *out_path, const onnx_opts *opts,
                       char *err, size_t errlen) {
    st_file f;
    if (st_open(&f, in_path, err, errlen)) return -1;
    model m;
    int rc = ckpt_load_file(&m, &f, NULL, NULL, err, errlen);
    st_close(&f);
    if (rc) return -1;
    onnx_graph *g = onnx_graph_new("gplq_fp32");
    meta mt = {.n = 0};
    meta_model(&mt, &m, ONNX_KIND_FP32, in_path);
    if (!g) snprintf(err, errlen, "out of memory");
    else if (!build(g, &m, NULL, NULL, ONNX_KIND_FP32, opts, err, errlen))
        rc = save(g, out_path, &mt, err, errlen);
    else rc = -1;
    if (!g) rc = -1;
    onnx_graph_free(g);
    model_free(&m);
    return rc;
}

static int export_quantized(const char *in_path, const char *out_path, onnx_kind kind,
                            const onnx_opts *opts, char *err, size_t errlen) {
    /* gplq_load_quantized checks the whole file (format, config, every tensor's shape) */
    gplq_qmodel q;
    if (gplq_load_quantized(&q, in_path, err, errlen)) return -1;
    st_file f;
    if (st_open(&f, in_path, err, errlen)) {
        gplq_qmodel_free(&q);
        return -1;
    }
    int rc = -1;
    onnx_qweights qw;
    onnx_graph *g = NULL;
    if (onnx_qweights_open(&qw, &f, in_path, err, errlen))
        goto out;
    g = onnx_graph_new(kind == ONNX_KIND_QDQ ? "gplq_qdq" : "gplq_w4");
    if (!g) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (build(g, &q.m, kind == ONNX_KIND_QDQ ? &q.aq : NULL, &qw, kind, opts, err, errlen))
        goto out;
    meta mt = {.n = 0};
    meta_model(&mt, &q.m, kind, in_path);
    meta_add(&mt, "wbits", "%d", qw.wbits);
    if (kind == ONNX_KIND_QDQ) meta_add(&mt, "abits", "%d", q.aq.abits);
    const char *top1 = st_meta(&f, "top1_gplq");
    if (top1) meta_add(&mt, "top1_gplq", "%s", top1);
    int has_qwt = q.m.arch == MODEL_SWIN ? q.m.swin.qwt_w != NULL : q.m.vit.qwt_w != NULL;
    meta_add(&mt, "qwt", "%s", !has_qwt ? "none" : opts && opts->qwt_fp16 ? "fp16" : "fp16 where lossless, else fp32");
    rc = save(g, out_path, &mt, err, errlen);
out:
    onnx_graph_free(g);
    st_close(&f);
    gplq_qmodel_free(&q);
    return rc;
}

int onnx_export(const char *in_path, const char *out_path, onnx_kind kind, const onnx_opts *opts,
                char *err, size_t errlen) {
    if (kind == ONNX_KIND_FP32) return export_fp32(in_path, out_path, opts, err, errlen);
    return export_quantized(in_path, out_path, kind, opts, err, errlen);
}
