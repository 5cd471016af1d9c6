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
    qweight_free(&r->patch);
    qweight_free(&r->head);
    qweight_free(&r->head_dist);
    for (int l = 0; l < r->depth; l++) {
        if (r->qkv) qweight_free(&r->qkv[l]);
        if (r->proj) qweight_free(&r->proj[l]);
        if (r->fc1) qweight_free(&r->fc1[l]);
        if (r->fc2) qweight_free(&r->fc2[l]);
        if (r->qwt_w) free(r->qwt_w[l]);
        if (r->qwt_b) free(r->qwt_b[l]);
    }
    free(r->qkv); free(r->proj); free(r->fc1); free(r->fc2);
    free(r->qwt_w); free(r->qwt_b); free(r->r2); free(r->mse_before); free(r->mse_after);
    memset(r, 0, sizeof *r);
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
        /* R^2 = 1 - SSE / SST over all rows and outputs */
        double sse = 0, sst = 0;
        double *mean = calloc(C, sizeof(double));
        for (int j = 0; j < C; j++) mean[j] = sd[j] / n;
        for (int i = 0; i < n; i++) {
            const float *x = X + (size_t)i * C, *d = D + (size_t)i * C;
            for (int j = 0; j < C; j++) {
                double pred = sol[(size_t)C * C + j];
                for (int a = 0; a < C; a++) pred += x[a] * sol[(size_t)a * C + j];
                sse += (d[j] - pred) * (d[j] - pred);
                sst += (d[j] - mean[j]) * (d[j] - mean[j]);
            }
        }
        free(mean);
        *r2 = sst > 0 ? 1 - sse / sst : 0;
        *sse_out = sse;
    }
    free(ata); free(atd); free(xtx); free(xtd); free(sx); free(sd);
    return rc;
}

/* The result's per-block arrays, zeroed (stage2_result_free frees them, also half made). */
static int result_alloc(stage2_result *res, int L, char *err, size_t errlen) {
    res->depth = L;
    res->qkv = calloc(L, sizeof *res->qkv);
    res->proj = calloc(L, sizeof *res->proj);
    res->fc1 = calloc(L, sizeof *res->fc1);
    res->fc2 = calloc(L, sizeof *res->fc2);
    res->qwt_w = calloc(L, sizeof *res->qwt_w);
    res->qwt_b = calloc(L, sizeof *res->qwt_b);
    res->r2 = calloc(L, sizeof *res->r2);
    res->mse_before = calloc(L, sizeof(double));
    res->mse_after = calloc(L, sizeof(double));
    if (!res->qkv || !res->proj || !res->fc1 || !res->fc2 || !res->qwt_w || !res->qwt_b ||
        !res->r2 || !res->mse_before || !res->mse_after) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Stage 2's first step: every matrix of m quantized in place (codes and steps into res). */
static int quantize_weights(vit_model *m, const stage2_config *c, stage2_result *res, char *err,
                            size_t errlen) {
    const vit_config *vc = &m->cfg;
    int L = vc->depth, C = vc->dim, H = vc->mlp_hidden;
    vit_params *p = &m->params;
    int Pd = vc->in_chans * vc->patch * vc->patch;
    if (quantize_matrix(&res->patch, p->patch_w, C, Pd, c->patch_wbits, c->minmax, err, errlen) ||
        quantize_matrix(&res->head, p->head_w, vc->num_classes, C, c->wbits, c->minmax, err, errlen))
        return -1;
    if (vc->distilled &&
        quantize_matrix(&res->head_dist, p->headd_w, vc->num_classes, C, c->wbits, c->minmax, err,
                        errlen))
        return -1;
    for (int l = 0; l < L; l++)
        if (quantize_matrix(&res->qkv[l], p->qkv_w + (size_t)l * 3 * C * C, 3 * C, C, c->wbits, c->minmax, err, errlen) ||
            quantize_matrix(&res->proj[l], p->proj_w + (size_t)l * C * C, C, C, c->wbits, c->minmax, err, errlen) ||
            quantize_matrix(&res->fc1[l], p->fc1_w + (size_t)l * H * C, H, C, c->wbits, c->minmax, err, errlen) ||
            quantize_matrix(&res->fc2[l], p->fc2_w + (size_t)l * C * H, C, H, c->wbits, c->minmax, err, errlen))
            return -1;
    return 0;
}

/* The quantized model's embedding of the first n calibration images in order, into X
 * (n * tokens, dim), 128 images at a time through xb. */
static int embed_calibration(vit_model *m, const ds_set *calib, const int *order, int n, float *X,
                             float *xb, char *err, size_t errlen) {
    const vit_config *vc = &m->cfg;
    int C = vc->dim, T = vit_num_tokens(vc), idx[128];
    for (int i = 0; i < n; i += 128) {
        int B = n - i < 128 ? n - i : 128;
        for (int b = 0; b < B; b++) idx[b] = order[i + b];
        ds_batch(calib, idx, B, xb, vc->mean, vc->std, NULL, NULL);
        if (vit_embed_forward(m, X + (size_t)i * T * C, xb, B, err, errlen)) return -1;
    }
    return 0;
}

/* Block l on the same input X (n images' tokens): the FP model's output into Y, the quantized
 * model's into Z, 128 images at a time. */
static int block_outputs(vit_model *m, vit_model *fp, int l, int n, const float *X, float *Y,
                         float *Z, char *err, size_t errlen) {
    int C = m->cfg.dim, T = vit_num_tokens(&m->cfg);
    for (int i = 0; i < n; i += 128) {
        int B = n - i < 128 ? n - i : 128;
        size_t o = (size_t)i * T * C;
        if (vit_block_forward(fp, l, Y + o, X + o, B, err, errlen) ||
            vit_block_forward(m, l, Z + o, X + o, B, err, errlen))
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

int stage2_run(vit_model *m, vit_model *fp, actq_set *aq, const stage2_config *c,
               const ds_set *calib, stage2_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    double t0 = clock_mono_s();
    const vit_config *vc = &m->cfg;
    int L = vc->depth, C = vc->dim, T = vit_num_tokens(vc);
    /* 1. weights */
    if (result_alloc(res, L, err, errlen) || quantize_weights(m, c, res, err, errlen)) goto fail;

    /* 2. QwT, block by block, on calibration images */
    int n = c->calib_images < calib->n ? c->calib_images : calib->n;
    size_t rows = (size_t)n * T, img = (size_t)vc->in_chans * vc->img_size * vc->img_size;
    float *X = malloc(sizeof(float) * rows * C), *Y = malloc(sizeof(float) * rows * C);
    float *Z = malloc(sizeof(float) * rows * C), *xb = malloc(sizeof(float) * img * 128);
    int *order = malloc(sizeof(int) * calib->n);
    double *sol = malloc(sizeof(double) * (C + 1) * C);
    int rc = -1;
    if (!X || !Y || !Z || !xb || !order || !sol) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rng_t r;
    rng_seed(&r, c->seed ^ 0xca11b4a7eULL);
    ds_shuffle(order, calib->n, &r);
    vit_set_hooks(m, &aq->hooks);
    vit_set_hooks(fp, &aq->hooks);
    m->qwt_w = NULL; /* blocks are fitted one at a time; the term goes on at the end */
    if (embed_calibration(m, calib, order, n, X, xb, err, errlen)) goto out;
    for (int l = 0; l < L; l++) {
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
    m->qwt_w = (const float *const *)res->qwt_w;
    m->qwt_b = (const float *const *)res->qwt_b;
    rc = 0;
out:
    free(X); free(Y); free(Z); free(xb); free(order); free(sol);
    vit_release_acts(m);
    vit_release_acts(fp);
    res->seconds = clock_mono_s() - t0;
    if (rc) stage2_result_free(res);
    return rc;
fail:
    stage2_result_free(res);
    return -1;
}
