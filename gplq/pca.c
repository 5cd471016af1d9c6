/*
 * pca.c: see pca.h. The covariance is one sgemm, the eigendecomposition LAPACK's divide and
 * conquer (ssyevd), the loss two small sgemms.
 */
#include "gplq/pca.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran calling convention), exported by OpenBLAS. */
extern void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda,
                    float *w, float *work, const int *lwork, int *iwork, const int *liwork,
                    int *info);

void pca_free(pca_basis *p) {
    free(p->mean);
    free(p->basis);
    free(p->eigvals);
    memset(p, 0, sizeof *p);
}

int pca_fit(pca_basis *p, const float *feats, int n, int dim, double var_target, int multiple,
            int k_fixed, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (n < 2 || dim < 1 || multiple < 1) {
        snprintf(err, errlen, "PCA needs at least 2 features of size >= 1 (got %d of %d)", n, dim);
        return -1;
    }
    p->dim = dim;
    p->mean = calloc(dim, sizeof(float));
    p->eigvals = malloc(sizeof(float) * dim);
    float *centered = malloc(sizeof(float) * (size_t)n * dim);
    float *cov = malloc(sizeof(float) * (size_t)dim * dim);
    float *w = malloc(sizeof(float) * dim);
    float *work = NULL;
    int *iwork = NULL, rc = -1;
    if (!p->mean || !p->eigvals || !centered || !cov || !w) goto oom;
    double *acc = calloc(dim, sizeof(double));
    if (!acc) goto oom;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) acc[j] += feats[(size_t)i * dim + j];
    for (int j = 0; j < dim; j++) p->mean[j] = (float)(acc[j] / n);
    free(acc);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            centered[(size_t)i * dim + j] = feats[(size_t)i * dim + j] - p->mean[j];
    /* cov (dim, dim) = centered^T centered / (n - 1) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, n, 1.0f / (n - 1), centered,
                dim, centered, dim, 0.0f, cov, dim);
    /* workspace query, then the decomposition; eigenvalues come back ascending, eigenvectors in
     * the columns of the column-major matrix, i.e. the rows of our row-major cov */
    int lwork = -1, liwork = -1, info = 0, iw_query;
    float w_query;
    ssyevd_("V", "U", &dim, cov, &dim, w, &w_query, &lwork, &iw_query, &liwork, &info);
    lwork = (int)w_query + 1;
    liwork = iw_query;
    work = malloc(sizeof(float) * lwork);
    iwork = malloc(sizeof(int) * liwork);
    if (!work || !iwork) goto oom;
    ssyevd_("V", "U", &dim, cov, &dim, w, work, &lwork, iwork, &liwork, &info);
    if (info != 0) {
        snprintf(err, errlen, "eigendecomposition of the feature covariance failed (ssyevd info %d)",
                 info);
        goto out;
    }
    double total = 0;
    for (int j = 0; j < dim; j++) {
        p->eigvals[j] = w[dim - 1 - j] > 0 ? w[dim - 1 - j] : 0; /* descending; clip rounding */
        total += p->eigvals[j];
    }
    int k = k_fixed > 0 ? k_fixed : 0;
    if (!k) {
        double run = 0;
        for (int j = 0; j < dim; j++) {
            run += p->eigvals[j];
            if (total <= 0 || run >= var_target * total) {
                k = j + 1;
                break;
            }
        }
        k = (k + multiple - 1) / multiple * multiple;
    }
    if (k > dim) k = dim;
    if (k < 1) k = 1;
    p->k = k;
    double kept = 0;
    for (int j = 0; j < k; j++) kept += p->eigvals[j];
    p->explained = total > 0 ? kept / total : 1.0;
    p->basis = malloc(sizeof(float) * (size_t)dim * k);
    if (!p->basis) goto oom;
    /* component j is eigenvector dim-1-j: row (dim-1-j) of cov as laid out by LAPACK */
    for (int j = 0; j < k; j++)
        for (int i = 0; i < dim; i++)
            p->basis[(size_t)i * k + j] = cov[(size_t)(dim - 1 - j) * dim + i];
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory for PCA of %d features of size %d", n, dim);
out:
    free(centered);
    free(cov);
    free(w);
    free(work);
    free(iwork);
    if (rc) pca_free(p);
    return rc;
}

float pca_loss_forward_backward(const pca_basis *p, const float *fs, const float *ft, int B,
                                float scale, float *dfs) {
    int dim = p->dim, k = p->k;
    float *diff = malloc(sizeof(float) * (size_t)B * dim), *proj = malloc(sizeof(float) * (size_t)B * k);
    if (!diff || !proj) {
        free(diff);
        free(proj);
        return NAN;
    }
    for (size_t i = 0; i < (size_t)B * dim; i++) diff[i] = fs[i] - ft[i];
    /* proj (B, k) = diff V */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, k, dim, 1.0f, diff, dim, p->basis, k,
                0.0f, proj, k);
    double loss = 0;
    for (size_t i = 0; i < (size_t)B * k; i++) loss += (double)proj[i] * proj[i];
    if (dfs) /* dfs += 2 scale / B * proj V^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, dim, k, 2.0f * scale / B, proj, k,
                    p->basis, k, 1.0f, dfs, dim);
    free(diff);
    free(proj);
    return (float)(scale * loss / B);
}
