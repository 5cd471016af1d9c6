/*
 * actq.c: see actq.h.
 */
#include "gplq/actq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Slot of a point: blocks first (six points each), then the patch input, the head input and
 * the merges, as model_qpoints orders them. */
static int slot(const actq_set *s, int layer, qpoint p) {
    int base = s->depth * ACTQ_BLOCK_POINTS;
    switch (p) {
    case QP_PATCH_IN: return base;
    case QP_HEAD_IN: return base + 1;
    case QP_MERGE_IN: {
        /* the merges follow in stage order; few enough to search */
        for (int i = base + 2; i < s->nq; i++)
            if (s->where[i].layer == layer) return i;
        return -1;
    }
    case QP_QKV_IN: case QP_QKV_OUT: case QP_ATTN:
    case QP_PROJ_IN: case QP_FC1_IN: case QP_FC2_IN:
        if (layer < 0 || layer >= s->depth) return -1;
        return layer * ACTQ_BLOCK_POINTS + (int)(p - QP_QKV_IN);
    default: return -1;
    }
}

lsq_quantizer *actq_get(actq_set *s, int layer, qpoint p) {
    int i = slot(s, layer, p);
    return i < 0 ? NULL : &s->q[i];
}

void actq_slot_name(const actq_set *s, int i, char *out, size_t n) {
    static const char *const block[ACTQ_BLOCK_POINTS] = {"qkv_in", "qkv_out", "attn",
                                                         "proj_in", "fc1_in", "fc2_in"};
    const model_qpoint *w = &s->where[i];
    if (w->p == QP_PATCH_IN) snprintf(out, n, "patch_in");
    else if (w->p == QP_HEAD_IN) snprintf(out, n, "head_in");
    else if (w->p == QP_MERGE_IN) snprintf(out, n, "layers.%d.merge_in", w->layer);
    else snprintf(out, n, "blocks.%d.%s", w->layer, block[w->p - QP_QKV_IN]);
}

/* Per-channel points initialize from absmax, per-tensor ones (q|k|v, softmax, image) from
 * percentiles: what GPLQ's spec prescribes. */
static lsq_init_kind init_kind(qpoint p) {
    return p == QP_QKV_OUT || p == QP_ATTN || p == QP_PATCH_IN ? LSQ_INIT_PERCENTILE
                                                               : LSQ_INIT_ABSMAX;
}

/* out = fq(in) (a copy when not quantizing); observe: also feed the observer in OBSERVE mode.
 * The forward hook observes; the reforward hook (the engine's backward recomputing what
 * forward gave, model_hooks.reforward) never does: the forward pass saw these activations, and
 * the steps change only after the backward, so QUANT gives the same output again. */
static int fake_quant(actq_set *s, int layer, qpoint p, float *out, const float *in,
                      int64_t rows, int cols, int observe) {
    int i = slot(s, layer, p);
    if (i < 0 || rows > 0x7fffffff) {
        snprintf(s->err, sizeof s->err, "no quantizer for point %d of layer %d", (int)p, layer);
        return -1;
    }
    if (s->mode == ACTQ_QUANT) {
        lsq_forward(&s->q[i], out, in, (int)rows, cols);
        return 0;
    }
    if (out != in) memcpy(out, in, sizeof(float) * (size_t)rows * cols);
    if (observe && s->mode == ACTQ_OBSERVE &&
        lsq_observer_update(&s->obs[i], in, (int)rows, cols, s->err, sizeof s->err))
        return -1;
    return 0;
}

static int hook_forward(void *ctx, int layer, qpoint p, float *out, const float *in,
                        int64_t rows, int cols) {
    return fake_quant(ctx, layer, p, out, in, rows, cols, 1);
}

static int hook_reforward(void *ctx, int layer, qpoint p, float *out, const float *in,
                          int64_t rows, int cols) {
    return fake_quant(ctx, layer, p, out, in, rows, cols, 0);
}

static void hook_backward(void *ctx, int layer, qpoint p, float *din, const float *dout,
                          const float *in, int64_t rows, int cols) {
    actq_set *s = ctx;
    int i = slot(s, layer, p);
    if (s->mode == ACTQ_QUANT && i >= 0) {
        lsq_backward(&s->q[i], din, dout, in, (int)rows, cols);
        return;
    }
    if (din != dout) memcpy(din, dout, sizeof(float) * (size_t)rows * cols);
}

int actq_init(actq_set *s, const model *m, int abits, int patch_bits, char *err,
              size_t errlen) {
    memset(s, 0, sizeof *s);
    model_config mc = model_get_config(m), *c = &mc;
    s->depth = model_config_dims(c).blocks;
    s->abits = abits;
    s->patch_bits = patch_bits;
    s->nq = model_qpoints(c, NULL, 0);
    s->q = calloc(s->nq, sizeof *s->q);
    s->where = calloc(s->nq, sizeof *s->where);
    if (!s->q || !s->where) {
        free(s->q);
        free(s->where);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    model_qpoints(c, s->where, s->nq);
    for (int i = 0; i < s->nq; i++) {
        qpoint p = s->where[i].p;
        /* the linears' inputs per channel; q, k and v one step each; the rest per tensor */
        int channels = p == QP_QKV_OUT ? 3 : p == QP_ATTN || p == QP_PATCH_IN ? 1
                                                                             : s->where[i].cols;
        int bits = p == QP_PATCH_IN ? patch_bits : abits;
        int is_signed = p != QP_ATTN; /* softmax output is in [0, 1] */
        if (lsq_init(&s->q[i], bits, is_signed, channels, err, errlen)) {
            actq_free(s);
            return -1;
        }
    }
    s->mode = ACTQ_OFF;
    s->hooks = (model_hooks){.ctx = s, .forward = hook_forward, .backward = hook_backward,
                           .reforward = hook_reforward};
    return 0;
}

static void free_observers(actq_set *s) {
    if (!s->obs) return;
    for (int i = 0; i < s->nq; i++) lsq_observer_free(&s->obs[i]);
    free(s->obs);
    s->obs = NULL;
}

void actq_free(actq_set *s) {
    free_observers(s);
    for (int i = 0; s->q && i < s->nq; i++) lsq_free(&s->q[i]);
    free(s->q);
    free(s->where);
    memset(s, 0, sizeof *s);
}

int actq_observe_begin(actq_set *s, uint64_t seed, char *err, size_t errlen) {
    free_observers(s);
    s->obs = calloc(s->nq, sizeof *s->obs);
    if (!s->obs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < s->nq; i++)
        if (lsq_observer_init(&s->obs[i], s->minmax ? LSQ_INIT_ABSMAX : init_kind(s->where[i].p),
                              s->q[i].channels,
                              LSQ_OBSERVER_CAP_DEFAULT, seed + (uint64_t)i, err, errlen)) {
            free_observers(s);
            return -1;
        }
    s->mode = ACTQ_OBSERVE;
    return 0;
}

int actq_observe_end(actq_set *s, char *err, size_t errlen) {
    if (!s->obs) {
        snprintf(err, errlen, "actq_observe_end without actq_observe_begin");
        return -1;
    }
    for (int i = 0; i < s->nq; i++)
        if (lsq_observer_steps(&s->obs[i], &s->q[i], err, errlen)) {
            free_observers(s);
            return -1;
        }
    free_observers(s);
    s->mode = ACTQ_QUANT;
    return 0;
}

size_t actq_num_steps(const actq_set *s) {
    size_t n = 0;
    for (int i = 0; i < s->nq; i++) n += (size_t)s->q[i].channels;
    return n;
}

void actq_gather(const actq_set *s, float *flat, int grads) {
    for (int i = 0; i < s->nq; i++) {
        memcpy(flat, grads ? s->q[i].dstep : s->q[i].step, sizeof(float) * s->q[i].channels);
        flat += s->q[i].channels;
    }
}

void actq_scatter(actq_set *s, const float *flat) {
    for (int i = 0; i < s->nq; i++) {
        memcpy(s->q[i].step, flat, sizeof(float) * s->q[i].channels);
        lsq_clamp_steps(&s->q[i]);
        flat += s->q[i].channels;
    }
}

void actq_zero_grad(actq_set *s) {
    for (int i = 0; i < s->nq; i++) lsq_zero_grad(&s->q[i]);
}
