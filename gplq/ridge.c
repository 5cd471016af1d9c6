/*
 * ridge.c: see ridge.h.
 */
#include "gplq/ridge.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran calling convention), exported by OpenBLAS. */
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda,
                   double *b, const int *ldb, int *info);

int ridge_solve(double *sol, const float *X, const float *D, int n, int C, double lambda,
                char *err, size_t errlen) {
    int C1 = C + 1;
    double *ata = calloc((size_t)C1 * C1, sizeof(double));
    double *atd = calloc((size_t)C1 * C, sizeof(double));
    double *bt = malloc(sizeof(double) * C1 * C);
    double *sx = calloc(C, sizeof(double)), *sd = calloc(C, sizeof(double));
    float *xtx = malloc(sizeof(float) * C * C), *xtd = malloc(sizeof(float) * C * C);
    int rc = -1;
    if (!ata || !atd || !bt || !sx || !sd || !xtx || !xtd) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* the big products in float on sgemm; sums over rows for the bias column in double */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, n, 1.0f, X, C, X, C, 0.0f, xtx, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, n, 1.0f, X, C, D, C, 0.0f, xtd, C);
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
    double reg = lambda * (diag + n) / C1;
    for (int a = 0; a < C1; a++) ata[(size_t)a * C1 + a] += reg;
    /* symmetric positive definite: Cholesky. A^T A is symmetric, so its row-major layout is
     * its column-major one; the right-hand sides go to LAPACK transposed (column-major). */
    int nrhs = C, info = 0;
    for (int a = 0; a < C1; a++)
        for (int b = 0; b < C; b++) bt[(size_t)b * C1 + a] = atd[(size_t)a * C + b];
    dposv_("U", &C1, &nrhs, ata, &C1, bt, &C1, &info);
    if (info != 0) {
        snprintf(err, errlen, "QwT ridge regression is singular (dposv info %d)", info);
        goto out;
    }
    for (int a = 0; a < C1; a++)
        for (int b = 0; b < C; b++) sol[(size_t)a * C + b] = bt[(size_t)b * C1 + a];
    rc = 0;
out:
    free(ata); free(atd); free(bt); free(sx); free(sd); free(xtx); free(xtd);
    return rc;
}

/* each output's mean over the rows, into mean (C) */
static void column_means(double *mean, const float *D, int n, int C) {
    memset(mean, 0, sizeof(double) * C);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < C; j++) mean[j] += D[(size_t)i * C + j];
    for (int j = 0; j < C; j++) mean[j] /= n > 0 ? n : 1;
}

/* The predictions [x, 1] sol are a (rows, C) by (C, C) product: in double on dgemm, R2_ROWS
 * rows at a time (as ridge_r2_ref's loop on one core it was over half of a DeiT-S job's
 * stage 2: 147 s, now 67). */
enum { R2_ROWS = 1024 };

int ridge_r2(double *r2, double *sse_out, const double *sol, const float *X, const float *D,
             int n, int C, char *err, size_t errlen) {
    double *mean = malloc(sizeof(double) * C);
    double *xd = malloc(sizeof(double) * R2_ROWS * C), *pd = malloc(sizeof(double) * R2_ROWS * C);
    if (!mean || !xd || !pd) {
        free(mean); free(xd); free(pd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    column_means(mean, D, n, C);
    double sse = 0, sst = 0;
    for (int i0 = 0; i0 < n; i0 += R2_ROWS) {
        int m = n - i0 < R2_ROWS ? n - i0 : R2_ROWS;
        for (size_t k = 0; k < (size_t)m * C; k++) xd[k] = X[(size_t)i0 * C + k];
        for (int i = 0; i < m; i++) /* the bias row, then += x W */
            memcpy(pd + (size_t)i * C, sol + (size_t)C * C, sizeof(double) * C);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, C, C, 1.0, xd, C, sol, C, 1.0,
                    pd, C);
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
    return 0;
}

void ridge_r2_ref(double *r2, double *sse_out, const double *sol, const float *X,
                  const float *D, int n, int C) {
    double sse = 0, sst = 0;
    for (int j = 0; j < C; j++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += D[(size_t)i * C + j];
        mean /= n > 0 ? n : 1;
        for (int i = 0; i < n; i++) {
            double pred = sol[(size_t)C * C + j];
            for (int a = 0; a < C; a++) pred += X[(size_t)i * C + a] * sol[(size_t)a * C + j];
            double d = D[(size_t)i * C + j];
            sse += (d - pred) * (d - pred);
            sst += (d - mean) * (d - mean);
        }
    }
    *r2 = sst > 0 ? 1 - sse / sst : 0;
    *sse_out = sse;
}
