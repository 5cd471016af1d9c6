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

static void meta_model(meta *mt, const vit_config *c, onnx_kind kind, const char *source) {
    int n3 = c->in_chans;
    meta_add(mt, "gplq_onnx", "%s", onnx_kind_name(kind));
    meta_add(mt, "architecture", "%s", c->distilled ? "deit" : "vit");
    meta_add(mt, "input", "pixel_values [batch, %d, %d, %d], float, (pixel / 255 - mean) / std per "
             "channel", c->in_chans, c->img_size, c->img_size);
    meta_add(mt, "mean", n3 == 1 ? "[%.9g]" : n3 == 2 ? "[%.9g, %.9g]" : "[%.9g, %.9g, %.9g]",
             c->mean[0], c->mean[1], c->mean[2]);
    meta_add(mt, "std", n3 == 1 ? "[%.9g]" : n3 == 2 ? "[%.9g, %.9g]" : "[%.9g, %.9g, %.9g]",
             c->std[0], c->std[1], c->std[2]);
    meta_add(mt, "img_size", "%d", c->img_size);
    meta_add(mt, "num_classes", "%d", c->num_classes);
    /* the file's name, not its path: a job's path names the job, and the same model must
     * export to the same bytes whichever job (or retry) made it */
    const char *base = strrchr(source, '/');
    meta_add(mt, "source", "%s", base ? base + 1 : source);
}

/* The architecture of a loaded model: only ViT/DeiT has a graph builder today (onnx/vit.c);
 * a Swin one goes beside it and is chosen here. */
static int check_arch(const model *m, const char *path, char *err, size_t errlen) {
    if (m->arch != MODEL_VIT) {
        snprintf(err, errlen, "%s: a %s has no ONNX export yet (ViT/DeiT only)", path,
                 m->arch == MODEL_SWIN ? "Swin" : "model of this architecture");
        return -1;
    }
    return 0;
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
    if (check_arch(&m, in_path, err, errlen)) {
        model_free(&m);
        return -1;
    }
    onnx_graph *g = onnx_graph_new("gplq_fp32");
    meta mt = {.n = 0};
    meta_model(&mt, &m.vit.cfg, ONNX_KIND_FP32, in_path);
    if (!g) snprintf(err, errlen, "out of memory");
    else if (!onnx_vit_build(g, &m.vit, NULL, NULL, ONNX_KIND_FP32, opts, err, errlen))
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
    if (check_arch(&q.m, in_path, err, errlen) || onnx_qweights_open(&qw, &f, in_path, err, errlen))
        goto out;
    g = onnx_graph_new(kind == ONNX_KIND_QDQ ? "gplq_qdq" : "gplq_w4");
    if (!g) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (onnx_vit_build(g, &q.m.vit, kind == ONNX_KIND_QDQ ? &q.aq : NULL, &qw, kind, opts, err, errlen))
        goto out;
    meta mt = {.n = 0};
    meta_model(&mt, &q.m.vit.cfg, kind, in_path);
    meta_add(&mt, "wbits", "%d", qw.wbits);
    if (kind == ONNX_KIND_QDQ) meta_add(&mt, "abits", "%d", q.aq.abits);
    const char *top1 = st_meta(&f, "top1_gplq");
    if (top1) meta_add(&mt, "top1_gplq", "%s", top1);
    meta_add(&mt, "qwt", "%s", !q.m.vit.qwt_w ? "none" : opts && opts->qwt_fp16 ? "fp16" : "fp16 where lossless, else fp32");
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
