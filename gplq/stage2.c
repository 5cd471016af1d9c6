/*
 * stage2.c: see stage2.h.
 */
#include "gplq/stage2.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "gplq/quant.h"
#include "gplq/ridge.h"
#include "util/clock.h"

static void qweight_free(stage2_qweight *q) {
    free(q->steps);
    free(q->codes);
    memset(q, 0, sizeof *q);
}

void stage2_result_free(stage2_result *r) {
    for (int i = 0; r->qw && i < r->nlin; i++) qweight_free(&r->qw[i]);
    for (int l = 0; l < r->depth; l++) {
        if (r->qwt_w) free(r->qwt_w[l]);
        if (r->qwt_b) free(r->qwt_b[l]);
    }
    free(r->lin); free(r->qw);
    free(r->qwt_w); free(r->qwt_b); free(r->r2); free(r->mse_before); free(r->mse_after);
    memset(r, 0, sizeof *r);
}

const stage2_qweight *stage2_find(const stage2_result *r, const char *name) {
    for (int i = 0; i < r->nlin; i++)
        if (!strcmp(r->lin[i].name, name)) return &r->qw[i];
    return NULL;
}

/* Quantizes w (rows, cols) in place to its dequantized values, keeping codes and steps. */
static int quantize_matrix(stage2_qweight *q, float *w, int rows, int cols, int bits, int minmax,
                           char *err, size_t errlen) {
    static const float max_only[1] = {1.0f};
    q->rows = rows;
    q->cols = cols;
    q->bits = bits;
    q->steps = malloc(sizeof(float) * rows);
    q->codes = malloc((size_t)rows * cols);
    if (!q->steps || !q->codes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return quant_weight(q->steps, q->codes, w, NULL, w, rows, cols, bits, minmax ? max_only : NULL,
                        1, err, errlen);
}

/* The result's per-block and per-linear arrays, zeroed (stage2_result_free frees them, also
 * half made). */
static int result_alloc(stage2_result *res, const model *m, char *err, size_t errlen) {
    int L = model_get_dims(m).blocks;
    res->depth = L;
    res->nlin = model_linears(m, NULL, 0);
    res->lin = calloc(res->nlin, sizeof *res->lin);
    res->qw = calloc(res->nlin, sizeof *res->qw);
    res->qwt_w = calloc(L, sizeof *res->qwt_w);
    res->qwt_b = calloc(L, sizeof *res->qwt_b);
    res->r2 = calloc(L, sizeof *res->r2);
    res->mse_before = calloc(L, sizeof(double));
    res->mse_after = calloc(L, sizeof(double));
    if (!res->lin || !res->qw || !res->qwt_w || !res->qwt_b || !res->r2 || !res->mse_before ||
        !res->mse_after) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    model_linears(m, res->lin, res->nlin);
    return 0;
}

/* Stage 2's first step: every matrix of m quantized in place (codes and steps into res), the
 * patch embedding at its own bits. */
static int quantize_weights(const stage2_config *c, stage2_result *res, char *err,
                            size_t errlen) {
    for (int i = 0; i < res->nlin; i++) {
        const model_linear *l = &res->lin[i];
        int bits = l->kind == MODEL_LIN_PATCH ? c->patch_wbits : c->wbits;
        if (quantize_matrix(&res->qw[i], l->w, l->rows, l->cols, bits, c->minmax, err, errlen))
            return -1;
    }
    return 0;
}

/* The largest (tokens x dim) of any block's input: the size of one image's row block in X,
 * Y and Z. */
static size_t max_block_floats(const model_config *c, int L, int *max_dim) {
    size_t most = 0;
    *max_dim = 0;
    for (int l = 0; l < L; l++) {
        int T, C;
        model_block_shape(c, l, &T, &C);
        most = (size_t)T * C > most ? (size_t)T * C : most;
        *max_dim = C > *max_dim ? C : *max_dim;
    }
    return most;
}

/* Images per block-level pass: 128, or model_infer_batch's fewer for large images (the block
 * buffers of 128 DeiT-S images are 780 MB, for each of the two models). */
static int pass_images(const model *m) { return model_infer_batch(m, MODEL_INFER_ROWS, 128); }

/* The quantized model's embedding of the first n calibration images in order, into X
 * (n, tokens, dim of block 0), pass_images at a time through xb. */
static int embed_calibration(model *m, const ds_set *calib, const int *order, int n, float *X,
                             float *xb, char *err, size_t errlen) {
    model_config mc = model_get_config(m);
    model_dims d = model_get_dims(m);
    int T, C, idx[128], P = pass_images(m);
    model_block_shape(&mc, 0, &T, &C);
    for (int i = 0; i < n; i += P) {
        int B = n - i < P ? n - i : P;
        for (int b = 0; b < B; b++) idx[b] = order[i + b];
        ds_batch(calib, idx, B, xb, d.mean, d.std, NULL, NULL);
        if (model_embed_forward(m, X + (size_t)i * T * C, xb, B, err, errlen)) return -1;
    }
    return 0;
}

/* The quantized model's PatchMerging of stage s on n images' tokens X (the previous stage's
 * shape) into Y (block l's), pass_images at a time. */
static int merge_calibration(model *m, int s, int l, int n, const float *X, float *Y, char *err,
                             size_t errlen) {
    model_config mc = model_get_config(m);
    int Tp, Cp, T, C;
    model_block_shape(&mc, l - 1, &Tp, &Cp);
    model_block_shape(&mc, l, &T, &C);
    int P = pass_images(m);
    for (int i = 0; i < n; i += P) {
        int B = n - i < P ? n - i : P;
        if (model_merge_forward(m, s, Y + (size_t)i * T * C, X + (size_t)i * Tp * Cp, B, err,
                                errlen))
            return -1;
    }
    return 0;
}

/* Block l on the same input X (n images' tokens): the FP model's output into Y, the quantized
 * model's into Z, pass_images at a time. */
static int block_outputs(model *m, model *fp, int l, int n, const float *X, float *Y,
                         float *Z, char *err, size_t errlen) {
    model_config mc = model_get_config(m);
    int T, C;
    model_block_shape(&mc, l, &T, &C);
    int P = pass_images(m);
    for (int i = 0; i < n; i += P) {
        int B = n - i < P ? n - i : P;
        size_t o = (size_t)i * T * C;
        if (model_block_forward(fp, l, Y + o, X + o, B, err, errlen) ||
            model_block_forward(m, l, Z + o, X + o, B, err, errlen))
            return -1;
    }
    return 0;
}

/* The quantization error of a block, D = Y - Y_Z (rows, C), into Y; returns its mean square. */
static double block_error(float *Y, const float *Z, size_t rows, int C) {
    double mse = 0;
    for (size_t i = 0; i < rows * C; i++) {
        Y[i] -= Z[i];
        mse += (double)Y[i] * Y[i];
    }
    return mse / ((double)rows * C);
}

/* QwT for block l: the ridge fit of the error D (in Y) on the block's input X (rows, C). If it
 * explains any of it (R^2 > 0), its weights and bias go into res and the quantized output Z is
 * compensated (Y, done with, is overwritten). */
static int fit_qwt(stage2_result *res, int l, double *sol, const float *X, float *Y, float *Z,
                   size_t rows, int C, double lambda, char *err, size_t errlen) {
    double sse;
    if (ridge_solve(sol, X, Y, (int)rows, C, lambda, err, errlen) ||
        ridge_r2(&res->r2[l], &sse, sol, X, Y, (int)rows, C, err, errlen))
        return -1;
    if (res->r2[l] > 0) {
        float *w = malloc(sizeof(float) * C * C), *bias = malloc(sizeof(float) * C);
        if (!w || !bias) {
            free(w); free(bias);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (int a = 0; a < C; a++) {
            for (int j = 0; j < C; j++) w[(size_t)j * C + a] = (float)sol[(size_t)a * C + j];
            bias[a] = (float)sol[(size_t)C * C + a];
        }
        res->qwt_w[l] = w;
        res->qwt_b[l] = bias;
        /* compensated output: Z += X W^T + b (Y, done with, holds the correction) */
        matmul_forward(Y, X, w, bias, (int)rows, C, C);
        axpy(Z, 1.0f, Y, rows * C);
        res->mse_after[l] = sse / ((double)rows * C);
    }
    return 0;
}

int stage2_run(model *m, model *fp, actq_set *aq, const stage2_config *c,
               const ds_set *calib, stage2_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    double t0 = clock_mono_s();
    model_config mc = model_get_config(m);
    model_dims d = model_get_dims(m);
    int L = d.blocks, Cmax;
    /* 1. weights */
    if (result_alloc(res, m, err, errlen) || quantize_weights(c, res, err, errlen)) goto fail;

    /* 2. QwT, block by block, on calibration images */
    int n = c->calib_images < calib->n ? c->calib_images : calib->n;
    size_t per = max_block_floats(&mc, L, &Cmax);
    size_t img = (size_t)d.in_chans * d.img_size * d.img_size;
    float *X = malloc(sizeof(float) * n * per), *Y = malloc(sizeof(float) * n * per);
    float *Z = malloc(sizeof(float) * n * per), *xb = malloc(sizeof(float) * img * 128);
    int *order = malloc(sizeof(int) * calib->n);
    double *sol = malloc(sizeof(double) * (Cmax + 1) * Cmax);
    int rc = -1;
    if (!X || !Y || !Z || !xb || !order || !sol) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rng_t r;
    rng_seed(&r, c->seed ^ 0xca11b4a7eULL);
    ds_shuffle(order, calib->n, &r);
    model_set_hooks(m, &aq->hooks);
    model_set_hooks(fp, &aq->hooks);
    model_set_qwt(m, NULL, NULL); /* blocks are fitted one at a time; the terms go on at the end */
    if (embed_calibration(m, calib, order, n, X, xb, err, errlen)) goto out;
    for (int l = 0; l < L; l++) {
        int T, C, s = model_block_merge(&mc, l);
        model_block_shape(&mc, l, &T, &C);
        if (s) { /* a new stage: its input is the quantized merge of the last one's output */
            if (merge_calibration(m, s, l, n, X, Z, err, errlen)) goto out;
            float *t = X;
            X = Z;
            Z = t;
        }
        size_t rows = (size_t)n * T;
        if (block_outputs(m, fp, l, n, X, Y, Z, err, errlen)) goto out;
        res->mse_before[l] = block_error(Y, Z, rows, C);
        res->mse_after[l] = res->mse_before[l];
        if (c->qwt && fit_qwt(res, l, sol, X, Y, Z, rows, C, c->lambda, err, errlen)) goto out;
        /* the next block's input is this block's (compensated) quantized output */
        float *t = X;
        X = Z;
        Z = t;
        if (c->tick && c->tick(c->tick_ctx, l + 1, L)) {
            rc = 1;
            goto out;
        }
    }
    model_set_qwt(m, (const float *const *)res->qwt_w, (const float *const *)res->qwt_b);
    rc = 0;
out:
    free(X); free(Y); free(Z); free(xb); free(order); free(sol);
    model_release_acts(m);
    model_release_acts(fp);
    res->seconds = clock_mono_s() - t0;
    if (rc) stage2_result_free(res);
    return rc;
fail:
    stage2_result_free(res);
    return -1;
}
