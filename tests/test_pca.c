/*
 * test_pca.c: the PCA of stage 1: eigenvectors are orthonormal and satisfy C v = lambda v on the
 * sample covariance, the k rule (smallest multiple of 32 reaching 60% of the variance) picks
 * what a direct count picks, and the feature loss's gradient matches finite differences.
 */
#include <stdlib.h>

#include "engine/rng.h"
#include "gplq/pca.h"
#include "tests/test.h"

/* n samples of dim features with standard deviations sd[j] along a random rotation */
static float *make_features(int n, int dim, const float *sd, rng_t *r) {
    float *x = malloc(sizeof(float) * n * dim);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) x[i * dim + j] = 3.0f + sd[j] * rng_normal(r);
    /* mix pairs of coordinates by Givens rotations so the eigenvectors are not the axes */
    for (int g = 0; g < dim; g++) {
        int a = (int)rng_below(r, dim), b = (int)rng_below(r, dim);
        if (a == b) continue;
        float th = rng_uniform(r) * 6.2831853f, c = cosf(th), s = sinf(th);
        for (int i = 0; i < n; i++) {
            float u = x[i * dim + a], v = x[i * dim + b];
            x[i * dim + a] = c * u - s * v;
            x[i * dim + b] = s * u + c * v;
        }
    }
    return x;
}

TEST(eigenvectors_are_orthonormal_and_explain_the_covariance) {
    rng_t r;
    rng_seed(&r, 3);
    int n = 3000, dim = 96;
    float sd[96];
    for (int j = 0; j < dim; j++) sd[j] = expf(-0.05f * j);
    float *x = make_features(n, dim, sd, &r);
    pca_basis p;
    char err[256];
    CHECK(pca_fit(&p, x, n, dim, 0.6, 32, 0, err, sizeof err) == 0);
    /* the k rule, counted directly from the eigenvalues */
    double total = 0, run = 0;
    for (int j = 0; j < dim; j++) total += p.eigvals[j];
    int need = 0;
    while (run < 0.6 * total) run += p.eigvals[need++];
    int want = (need + 31) / 32 * 32;
    CHECK_MSG(p.k == want, "k %d, expected %d (60%% reached at %d)", p.k, want, need);
    CHECK(p.explained >= 0.6);
    for (int j = 1; j < dim; j++) CHECK(p.eigvals[j] <= p.eigvals[j - 1]);
    /* V^T V = I */
    double worst = 0;
    for (int a = 0; a < p.k; a++)
        for (int b = 0; b < p.k; b++) {
            double dot = 0;
            for (int i = 0; i < dim; i++) dot += (double)p.basis[i * p.k + a] * p.basis[i * p.k + b];
            worst = fmax(worst, fabs(dot - (a == b)));
        }
    CHECK_MSG(worst < 1e-4, "V^T V - I: %.3g", worst);
    /* C v = lambda v for the first components, C in double from the data */
    double *cov = calloc((size_t)dim * dim, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int a = 0; a < dim; a++)
            for (int b = 0; b < dim; b++)
                cov[a * dim + b] += (x[i * dim + a] - p.mean[a]) * (double)(x[i * dim + b] - p.mean[b]) / (n - 1);
    for (int c = 0; c < 4; c++) {
        double res = 0;
        for (int a = 0; a < dim; a++) {
            double cv = 0;
            for (int b = 0; b < dim; b++) cv += cov[a * dim + b] * p.basis[b * p.k + c];
            res = fmax(res, fabs(cv - p.eigvals[c] * p.basis[a * p.k + c]));
        }
        CHECK_MSG(res < 1e-4 * p.eigvals[0], "component %d: |Cv - lv| = %.3g", c, res);
    }
    free(cov);
    free(x);
    pca_free(&p);
}

TEST(loss_gradient_matches_finite_differences) {
    rng_t r;
    rng_seed(&r, 4);
    int n = 500, dim = 40, B = 3;
    float sd[40];
    for (int j = 0; j < dim; j++) sd[j] = 1.0f / (1 + j);
    float *x = make_features(n, dim, sd, &r);
    pca_basis p;
    char err[256];
    CHECK(pca_fit(&p, x, n, dim, 0.6, 8, 0, err, sizeof err) == 0);
    float fs[120], ft[120], dfs[120] = {0};
    for (int i = 0; i < B * dim; i++) fs[i] = rng_normal(&r), ft[i] = rng_normal(&r);
    pca_loss_forward_backward(&p, fs, ft, B, 0.7f, dfs);
    double worst = 0;
    for (int i = 0; i < B * dim; i += 7) {
        float save = fs[i], eps = 1e-2f;
        fs[i] = save + eps;
        double lp = pca_loss_forward_backward(&p, fs, ft, B, 0.7f, NULL);
        fs[i] = save - eps;
        double lm = pca_loss_forward_backward(&p, fs, ft, B, 0.7f, NULL);
        fs[i] = save;
        double num = (lp - lm) / (2 * eps);
        worst = fmax(worst, fabs(num - dfs[i]) / (fabs(num) + fabs(dfs[i]) + 1e-3));
    }
    CHECK_MSG(worst < 1e-2, "finite differences: %.3g", worst);
    /* identical features: zero loss */
    CHECK(pca_loss_forward_backward(&p, fs, fs, B, 1.0f, NULL) == 0.0f);
    free(x);
    pca_free(&p);
}

TEST_MAIN()
