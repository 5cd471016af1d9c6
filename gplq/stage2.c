/*
 * stage2.c: see stage2.h.
 */
#include "gplq/stage2.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "gplq/quant.h"
#include "util/clock.h"

/* LAPACK (Fortran calling convention), exported by OpenBLAS. */
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda,
                   double *b, const int *ldb, int *info);

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

/* Ridge regression with a bias column in double: A = [X, 1] (n, C+1), D (n, C); returns the
 * solution (C+1, C) into sol, the R^2 of A sol against D and the remaining squared error. */
static int ridge(double *sol, double *r2, double *sse_out, const float *X, const float *D, int n,
                 int C, double lambda, char *err, size_t errlen) {
    int C1 = C + 1;
    double *ata = calloc((size_t)C1 * C1, sizeof(double)), *atd = calloc((size_t)C1 * C, sizeof(double));
    float *xtx = malloc(sizeof(float) * C * C), *xtd = malloc(sizeof(float) * C * C);
    if (!ata || !atd || !xtx || !xtd) {
        free(ata); free(atd); free(xtx); free(xtd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* the big products in float on sgemm; sums over rows for the bias column in double */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, n, 1.0f, X, C, X, C, 0.0f, xtx, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, n, 1.0f, X, C, D, C, 0.0f, xtd, C);
    double *sx = calloc(C, sizeof(double)), *sd = calloc(C, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < C; j++) sx[j] += X[(size_t)i * C + j], sd[j] += D[(size_t)i * C + j];
    double diag = 0;
    for (int a = 0; a < C; a++) {
        for (int b = 0; b < C; b++) {
            ata[(size_t)a * C1 + b] = xtx[(size_t)a * C + b];
            atd[(size_t)a * C + b] = xtd[(size_t)a * C + b];
        }
        ata[(size_t)a * C1 + C] = ata[(size_t)C * C1 + a] = sx[a];
        atd[(size_t)C * C + a] = sd[a];
        diag += xtx[(size_t)a * C + a];
    }
    ata[(size_t)C * C1 + C] = n;
    /* lambda is relative to the mean diagonal, so one default fits any activation scale */
    double reg = lambda * (diag + n) / C1;
    for (int a = 0; a < C1; a++) ata[(size_t)a * C1 + a] += reg;
    /* symmetric positive definite: Cholesky. A^T A is symmetric, so its row-major layout is
     * its column-major one; the right-hand sides go to LAPACK transposed (column-major). */
    int nrhs = C, info = 0;
    double *bt = malloc(sizeof(double) * C1 * C);
    for (int a = 0; a < C1; a++)
        for (int b = 0; b < C; b++) bt[(size_t)b * C1 + a] = atd[(size_t)a * C + b];
    dposv_("U", &C1, &nrhs, ata, &C1, bt, &C1, &info);
    for (int a = 0; a < C1; a++)
        for (int b = 0; b < C; b++) sol[(size_t)a * C + b] = bt[(size_t)b * C1 + a];
    free(bt);
    int rc = 0;
    if (info != 0) {
        snprintf(err, errlen, "QwT ridge regression is singular (dposv info %d)", info);
        rc = -1;
    } else {
        /* R^2 = 1 - SSE / SST over all rows and outputs. The fit's predictions [x, 1] sol
         * are a (rows, C) by (C, C) product: in double on dgemm, R2_ROWS rows at a time (as a
         * scalar loop on one core it was over half of a DeiT-S job's stage 2: 147 s, now 67) */
        enum { R2_ROWS = 1024 };
        double sse = 0, sst = 0;
        double *mean = calloc(C, sizeof(double));
        double *xd = malloc(sizeof(double) * R2_ROWS * C), *pd = malloc(sizeof(double) * R2_ROWS * C);
        if (!mean || !xd || !pd) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
        for (int j = 0; j < C && !rc; j++) mean[j] = sd[j] / n;
        for (int i0 = 0; i0 < n && !rc; i0 += R2_ROWS) {
            int m = n - i0 < R2_ROWS ? n - i0 : R2_ROWS;
            for (size_t k = 0; k < (size_t)m * C; k++) xd[k] = X[(size_t)i0 * C + k];
            for (int i = 0; i < m; i++) /* the bias row, then += x W */
                memcpy(pd + (size_t)i * C, sol + (size_t)C * C, sizeof(double) * C);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, C, C, 1.0, xd, C, sol, C,
                        1.0, pd, C);
            for (int i = 0; i < m; i++) {
                const float *d = D + (size_t)(i0 + i) * C;
                for (int j = 0; j < C; j++) {
                    double pred = pd[(size_t)i * C + j];
                    sse += (d[j] - pred) * (d[j] - pred);
                    sst += (d[j] - mean[j]) * (d[j] - mean[j]);
                }
            }
        }
        free(mean); free(xd); free(pd);
        *r2 = sst > 0 ? 1 - sse / sst : 0;
        *sse_out = sse;
    }
    free(ata); free(atd); free(xtx); free(xtd); free(sx); free(sd);
    return rc;
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
    if (ridge(sol, &res->r2[l], &sse, X, Y, (int)rows, C, lambda, err, errlen))
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
