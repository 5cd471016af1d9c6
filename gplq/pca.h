/*
 * pca.h: the principal subspace of the teacher's penultimate features, and GPLQ's stage-1
 * feature-mimicking loss measured in it.
 *
 * GPLQ keeps the top k eigenvectors V_k of the features' covariance, k the smallest multiple of
 * 32 whose explained variance reaches 60%, and penalizes || (f_s - mu) V_k - (f_t - mu) V_k ||^2
 * per image. The mean cancels in that difference, so the loss needs only V_k; mu is kept for
 * reports and for anyone projecting features.
 */
#ifndef GPLQ_PCA_H
#define GPLQ_PCA_H

#include <stddef.h>

typedef struct {
    int dim;          /* feature size C */
    int k;            /* components kept */
    float *mean;      /* (dim), owned */
    float *basis;     /* (dim, k) row-major: column j is the j-th component, owned */
    float *eigvals;   /* (dim) all eigenvalues, descending, owned */
    double explained; /* variance fraction of the k kept */
} pca_basis;

/* Fits feats (n, dim) (n >= 2). k is the smallest multiple of `multiple` whose explained variance
 * reaches var_target (capped at dim); with k_fixed > 0, k = k_fixed instead. Uses LAPACK's
 * ssyevd (from OpenBLAS). Returns 0, or -1 with a message. Free with pca_free. */
int pca_fit(pca_basis *p, const float *feats, int n, int dim, double var_target, int multiple,
            int k_fixed, char *err, size_t errlen);
void pca_free(pca_basis *p);

/* loss = scale / B * sum_i || (fs_i - ft_i) V_k ||^2 for fs, ft (B, dim); dfs (optional)
 * += d loss / d fs = 2 scale / B * (fs - ft) V_k V_k^T. Returns the loss. */
float pca_loss_forward_backward(const pca_basis *p, const float *fs, const float *ft, int B,
                                float scale, float *dfs);

#endif
