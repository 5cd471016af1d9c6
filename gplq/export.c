/*
 * export.c: see export.h.
 */
#include "gplq/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/layout.h"
#include "gplq/quant.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "util/half.h"

static void step_name(char *out, size_t n, const actq_set *aq, int i) {
    char where[64];
    actq_slot_name(aq, i, where, sizeof where);
    snprintf(out, n, "actq.%s.step", where);
}

/* 1 if every one of the n values is a half (converts to FP16 and back unchanged). */
static int all_half(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (half_round(v[i]) != v[i]) return 0;
    return 1;
}

/* FP16 copy of v (n), new (free), or NULL when out of memory. */
static uint16_t *to_half(const float *v, size_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; h && i < n; i++) h[i] = half_from_float(v[i]);
    return h;
}

/* Adds steps and QwT tensors (data borrowed from aq and s2). With half (2 * depth slots, the
 * caller frees what they hold after saving), a block's QwT whose values are all halves (the
 * pipeline rounds them so: gplq/pipeline.c) is stored as F16, half the bytes and lossless;
 * anything else stays F32. */
static int add_quant_tensors(st_writer *w, const model_config *mc, const actq_set *aq,
                             const stage2_result *s2, uint16_t **half, char *err,
                             size_t errlen) {
    char name[128];
    for (int i = 0; i < aq->nq; i++) {
        int64_t n = aq->q[i].channels;
        step_name(name, sizeof name, aq, i);
        if (st_writer_add(w, name, ST_F32, 1, &n, aq->q[i].step, err, errlen)) return -1;
    }
    for (int l = 0; l < s2->depth; l++) {
        if (!s2->qwt_w[l]) continue;
        int T, C;
        model_block_shape(mc, l, &T, &C);
        int64_t sw[2] = {C, C}, sb[1] = {C};
        const void *dw = s2->qwt_w[l], *db = s2->qwt_b[l];
        st_dtype t = ST_F32;
        if (half && all_half(s2->qwt_w[l], (size_t)C * C) && all_half(s2->qwt_b[l], C)) {
            half[2 * l] = to_half(s2->qwt_w[l], (size_t)C * C);
            half[2 * l + 1] = to_half(s2->qwt_b[l], C);
            if (!half[2 * l] || !half[2 * l + 1]) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            dw = half[2 * l], db = half[2 * l + 1], t = ST_F16;
        }
        snprintf(name, sizeof name, "blocks.%d.qwt.weight", l);
        if (st_writer_add(w, name, t, 2, sw, dw, err, errlen)) return -1;
        snprintf(name, sizeof name, "blocks.%d.qwt.bias", l);
        if (st_writer_add(w, name, t, 1, sb, db, err, errlen)) return -1;
    }
    return 0;
}

static int add_meta(st_writer *w, const actq_set *aq, const stage2_result *s2,
                    const char *const *keys, const char *const *vals, int nextra) {
    char buf[512];
    int rc = st_writer_meta(w, "gplq_format", GPLQ_Q_FORMAT);
    /* the weight bits: any matrix's but the patch embedding's (the head's, the last) */
    snprintf(buf, sizeof buf, "%d", s2->qw[s2->nlin - 1].bits);
    rc |= st_writer_meta(w, "wbits", buf);
    snprintf(buf, sizeof buf, "%d", aq->abits);
    rc |= st_writer_meta(w, "abits", buf);
    snprintf(buf, sizeof buf, "%d", s2->qw[0].bits); /* model_linears: the patch first */
    rc |= st_writer_meta(w, "patch_wbits", buf);
    snprintf(buf, sizeof buf, "%d", aq->patch_bits);
    rc |= st_writer_meta(w, "patch_abits", buf);
    rc |= st_writer_meta(w, "quantizers",
                         "{\"weights\": \"per output channel, symmetric, signed, clip percentile by MSE\", "
                         "\"qkv_in\": \"per channel, signed, LSQ\", \"qkv_out\": \"per tensor for each of q, k, v, signed, LSQ\", "
                         "\"attn\": \"per tensor, unsigned (softmax output), LSQ\", \"proj_in\": \"per channel, signed, LSQ\", "
                         "\"fc1_in\": \"per channel, signed, LSQ\", \"fc2_in\": \"per channel, signed, LSQ\", "
                         "\"head_in\": \"per channel, signed, LSQ\", \"patch_in\": \"per tensor, signed, LSQ\", "
                         "\"merge_in\": \"per channel, signed, LSQ (Swin's PatchMerging)\", "
                         "\"qwt\": \"per block, out = block(x) + x W^T + b\"}");
    for (int i = 0; i < nextra; i++) rc |= st_writer_meta(w, keys[i], vals[i]);
    return rc;
}

int gplq_export(const char *dir, const model *m, const actq_set *aq, const stage2_result *s2,
                const char *const *keys, const char *const *vals, int nextra, char *err,
                size_t errlen) {
    char path[4096];
    int rc = -1, nqm = s2->nlin, ninfo;
    model_config mc = model_get_config(m);
    const param_info *info = model_param_info(m, &ninfo);
    const float *params = model_params(m);
    uint8_t **packed = calloc(nqm + 1, sizeof *packed);
    uint16_t **half = calloc(2 * (size_t)s2->depth + 1, sizeof *half);
    st_writer *w = st_writer_new();
    if (!packed || !half || !w) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* model.q: the timm tensors except the quantized matrices, then those packed */
    if (ckpt_add_config(w, &mc, err, errlen)) goto out;
    for (int i = 0; i < ninfo; i++) {
        const param_info *pi = &info[i];
        if (pi->numel == 0) continue;
        size_t per = pi->numel / pi->layers;
        for (int l = 0; l < pi->layers; l++) {
            char name[128];
            ckpt_param_name(name, sizeof name, pi, l);
            if (stage2_find(s2, name)) continue;
            if (st_writer_add(w, name, ST_F32, pi->ndim, pi->shape, params + pi->offset + l * per,
                              err, errlen))
                goto out;
        }
    }
    for (int k = 0; k < nqm; k++) {
        const stage2_qweight *q = &s2->qw[k];
        quant_type t = quant_type_for_bits(q->bits);
        size_t rb = quant_row_bytes(t, q->cols);
        packed[k] = malloc(rb * q->rows);
        if (!packed[k]) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        for (int r = 0; r < q->rows; r++)
            if (quant_pack_ref(t, packed[k] + rb * r, q->codes + (size_t)r * q->cols, q->cols, err, errlen))
                goto out;
        char name[128];
        int64_t sq[2] = {q->rows, (int64_t)rb}, ss[1] = {q->rows};
        snprintf(name, sizeof name, "%s.qweight", s2->lin[k].name);
        if (st_writer_add(w, name, ST_U8, 2, sq, packed[k], err, errlen)) goto out;
        snprintf(name, sizeof name, "%s.wscale", s2->lin[k].name);
        if (st_writer_add(w, name, ST_F32, 1, ss, q->steps, err, errlen)) goto out;
    }
    if (add_quant_tensors(w, &mc, aq, s2, half, err, errlen)) goto out;
    if (add_meta(w, aq, s2, keys, vals, nextra)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snprintf(path, sizeof path, "%s/" LAYOUT_ARTIFACT_Q, dir);
    if (st_writer_save(w, path, err, errlen)) goto out;
    st_writer_free(w);
    /* model.fakequant: dequantized FP32 under timm names, plus steps and QwT */
    w = st_writer_new();
    if (!w || ckpt_add_model(w, m, err, errlen) || add_quant_tensors(w, &mc, aq, s2, NULL, err, errlen) ||
        add_meta(w, aq, s2, keys, vals, nextra))
        goto out;
    snprintf(path, sizeof path, "%s/" LAYOUT_ARTIFACT_FAKEQUANT, dir);
    if (st_writer_save(w, path, err, errlen)) goto out;
    rc = 0;
out:
    for (int k = 0; packed && k < nqm; k++) free(packed[k]);
    free(packed);
    for (int l = 0; half && l < 2 * s2->depth; l++) free(half[l]);
    free(half);
    st_writer_free(w);
    return rc;
}

void gplq_qmodel_free(gplq_qmodel *q) {
    for (int l = 0; q->qwt_w && l < q->depth; l++) {
        free(q->qwt_w[l]);
        free(q->qwt_b[l]);
    }
    free(q->qwt_w);
    free(q->qwt_b);
    actq_free(&q->aq);
    model_free(&q->m);
    memset(q, 0, sizeof *q);
}

/* The activation bits (abits and patch_abits) from the metadata. */
static void read_abits(const st_file *f, int *abits, int *pabits) {
    *abits = st_meta(f, "abits") ? atoi(st_meta(f, "abits")) : 0;
    *pabits = st_meta(f, "patch_abits") ? atoi(st_meta(f, "patch_abits")) : 8;
}

/* Matrix name (rows, cols) of engine tensor pi into dst, dequantized from its packed codes
 * (name.qweight) and per-row steps (name.wscale) at the file's weight bits. */
static int dequantize_param(const st_file *f, const char *path, const char *name,
                            const param_info *pi, size_t per, float *dst, char *err,
                            size_t errlen) {
    char qn[160], sn[160];
    snprintf(qn, sizeof qn, "%s.qweight", name);
    snprintf(sn, sizeof sn, "%s.wscale", name);
    const st_tensor *tq = st_find(f, qn), *ts = st_find(f, sn);
    int rows = (int)pi->shape[0], cols = (int)(per / pi->shape[0]);
    int bits = !strcmp(name, "patch_embed.proj.weight") && st_meta(f, "patch_wbits")
                   ? atoi(st_meta(f, "patch_wbits"))
                   : atoi(st_meta(f, "wbits") ? st_meta(f, "wbits") : "0");
    if (bits < 2 || bits > 8 || !tq || !ts || tq->dtype != ST_U8 || ts->dtype != ST_F32 ||
        tq->ndim != 2 || tq->shape[0] != rows ||
        (size_t)tq->shape[1] != quant_row_bytes(quant_type_for_bits(bits), cols) ||
        ts->numel != rows) {
        snprintf(err, errlen, "%s: '%s' is missing, or its packed form does not match %d x %d "
                 "at %d bits", path, name, rows, cols, bits);
        return -1;
    }
    quant_type qt = quant_type_for_bits(bits);
    size_t rb = quant_row_bytes(qt, cols);
    float *scales = malloc(sizeof(float) * rows);
    if (!scales) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st_to_f32(ts, scales);
    for (int r = 0; r < rows; r++)
        quant_dequantize_ref(qt, dst + (size_t)r * cols, (const uint8_t *)tq->data + rb * r,
                             scales[r], cols);
    free(scales);
    return 0;
}

/* Every parameter of q's model: FP32 directly, or dequantized from .qweight/.wscale. */
static int load_params(gplq_qmodel *q, const st_file *f, const char *path, char *err,
                       size_t errlen) {
    int ninfo;
    const param_info *info = model_param_info(&q->m, &ninfo);
    for (int i = 0; i < ninfo; i++) {
        const param_info *pi = &info[i];
        if (pi->numel == 0) continue;
        int layers = pi->layers;
        size_t per = pi->numel / layers;
        for (int l = 0; l < layers; l++) {
            char name[128];
            ckpt_param_name(name, sizeof name, pi, l);
            float *dstp = model_params(&q->m) + pi->offset + l * per;
            const st_tensor *t = st_find(f, name);
            if (t && (size_t)t->numel == per && t->dtype == ST_F32) {
                st_to_f32(t, dstp);
                continue;
            }
            if (dequantize_param(f, path, name, pi, per, dstp, err, errlen)) return -1;
        }
    }
    return 0;
}

/* The activation quantizers' steps. */
static int load_steps(gplq_qmodel *q, const st_file *f, const char *path, char *err,
                      size_t errlen) {
    for (int i = 0; i < q->aq.nq; i++) {
        char name[128];
        step_name(name, sizeof name, &q->aq, i);
        const st_tensor *t = st_find(f, name);
        if (!t || t->dtype != ST_F32 || t->numel != q->aq.q[i].channels) {
            snprintf(err, errlen, "%s: '%s' missing or of the wrong size", path, name);
            return -1;
        }
        st_to_f32(t, q->aq.q[i].step);
    }
    return 0;
}

/* QwT's per-block compensation, for the blocks that have one; switched on in the model if any
 * block does. */
static int load_qwt(gplq_qmodel *q, const st_file *f, const char *path, char *err,
                    size_t errlen) {
    model_config mc = model_get_config(&q->m);
    int L = q->depth;
    q->qwt_w = calloc(L, sizeof(float *));
    q->qwt_b = calloc(L, sizeof(float *));
    if (!q->qwt_w || !q->qwt_b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int any = 0;
    for (int l = 0; l < L; l++) {
        char wn[64], bn[64];
        int T, C;
        model_block_shape(&mc, l, &T, &C);
        snprintf(wn, sizeof wn, "blocks.%d.qwt.weight", l);
        snprintf(bn, sizeof bn, "blocks.%d.qwt.bias", l);
        const st_tensor *tw = st_find(f, wn), *tb = st_find(f, bn);
        if (!tw && !tb) continue;
        if (!tw || !tb || tw->numel != (int64_t)C * C || tb->numel != C ||
            (tw->dtype != ST_F32 && tw->dtype != ST_F16) ||
            (tb->dtype != ST_F32 && tb->dtype != ST_F16)) {
            snprintf(err, errlen, "%s: QwT tensors of block %d are incomplete or misshapen", path, l);
            return -1;
        }
        q->qwt_w[l] = malloc(sizeof(float) * C * C);
        q->qwt_b[l] = malloc(sizeof(float) * C);
        if (!q->qwt_w[l] || !q->qwt_b[l]) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        st_to_f32(tw, q->qwt_w[l]);
        st_to_f32(tb, q->qwt_b[l]);
        any = 1;
    }
    if (any) model_set_qwt(&q->m, (const float *const *)q->qwt_w, (const float *const *)q->qwt_b);
    return 0;
}

int gplq_load_quantized(gplq_qmodel *q, const char *path, char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    st_file f;
    if (st_open(&f, path, err, errlen)) return -1;
    int rc = -1;
    const char *fmt = st_meta(&f, "gplq_format");
    if (!fmt || strcmp(fmt, GPLQ_Q_FORMAT)) {
        snprintf(err, errlen, "%s: not a gplq quantized model (format '%s', this gplq reads '%s')",
                 path, fmt ? fmt : "none", GPLQ_Q_FORMAT);
        goto out_file;
    }
    /* from the metadata: ckpt_infer needs the quantized matrices' names to exist */
    model_config c;
    int abits, pabits;
    if (ckpt_config_from_meta(&f, &c, err, errlen)) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
        goto out_file;
    }
    read_abits(&f, &abits, &pabits);
    if (model_init(&q->m, &c, err, errlen)) goto out_file;
    q->depth = model_get_dims(&q->m).blocks;
    if (actq_init(&q->aq, &q->m, abits, pabits, err, errlen)) goto out_model;
    if (load_params(q, &f, path, err, errlen) || load_steps(q, &f, path, err, errlen))
        goto out_model;
    q->aq.mode = ACTQ_QUANT;
    model_set_hooks(&q->m, &q->aq.hooks);
    if (load_qwt(q, &f, path, err, errlen)) goto out_model;
    rc = 0;
    goto out_file;
out_model:
    gplq_qmodel_free(q);
out_file:
    st_close(&f);
    return rc;
}
