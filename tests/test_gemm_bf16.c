/*
 * test_gemm_bf16.c: the BF16 matrix product against its definition and against sgemm.
 * Rounding to BF16 hits known bit patterns (ties to even, NaN, overflow to infinity); the
 * packed kernel equals gemm_bf16_ref to within FP32 sum order for every transpose, edge sizes
 * around its tiles (12 x 32) and K slices (256), alpha and beta, and leading dimensions wider
 * than the matrix; and it stays within BF16's rounding of cblas_sgemm on the same floats. On a
 * CPU without AVX512-BF16 the same checks hold gemm_bf16's fallback (rounded copies through
 * sgemm) to the definition instead.
 */
#include <cblas.h>
#include <float.h>
#include <stdint.h>

#include "engine/gemm_bf16.h"
#include "tests/test.h"

static uint64_t st = 0x2545f4914f6cdd1dULL;
static float unif(void) { /* xorshift, uniform in [-1, 1) */
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return (float)((double)(st >> 11) / (1ULL << 52) - 1);
}

TEST(bf16_rounding_hits_known_bits) {
    struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000, 0x3f80}, /* 1 */
        {0x3f808000, 0x3f80}, /* 1 + 2^-8: a tie, to the even 1 */
        {0x3f818000, 0x3f82}, /* 1 + 3 * 2^-8: a tie, to the even 1 + 2^-6 */
        {0x3f808001, 0x3f81}, /* just above the tie: up */
        {0xbf80ffff, 0xbf81}, /* negative, rounds away in magnitude */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to infinity */
        {0xff800000, 0xff80}, /* -infinity stays */
        {0x00000001, 0x0000}, /* the smallest denormal to zero */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        union { uint32_t u; float f; } v = {cases[i].in};
        uint16_t h = bf16_from_float(v.f);
        CHECK_MSG(h == cases[i].out, "0x%08x -> 0x%04x, want 0x%04x", cases[i].in, h, cases[i].out);
    }
    union { uint32_t u; float f; } nan = {0x7f800001}; /* a NaN whose payload is all low bits */
    CHECK(isnan(bf16_to_float(bf16_from_float(nan.f))));
}

/* One product of op(A) (M x K) and op(B) (K x N) into C (M x N, ldc = N + 3) by both ways, each
 * element held to FP32 sum-order error of the sum of |a b|: |fast - ref| <= 2 K eps sum|ab|. */
static double worst_excess(int ta, int tb, int M, int N, int K, float alpha, float beta) {
    int lda = (ta ? M : K) + 5, ldb = (tb ? K : N) + 2, ldc = N + 3;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb);
    float *absA = malloc(sizeof(float) * na), *absB = malloc(sizeof(float) * nb);
    float *C = malloc(sizeof(float) * nc), *R = malloc(sizeof(float) * nc);
    float *S = malloc(sizeof(float) * nc);
    double worst = 1e30;
    if (!A || !B || !absA || !absB || !C || !R || !S) goto out;
    for (size_t i = 0; i < na; i++) absA[i] = fabsf(A[i] = unif());
    for (size_t i = 0; i < nb; i++) absB[i] = fabsf(B[i] = 4 * unif());
    for (size_t i = 0; i < nc; i++) C[i] = R[i] = unif();
    gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    gemm_bf16_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    gemm_bf16_ref(ta, tb, M, N, K, 1.0f, absA, lda, absB, ldb, 0.0f, S, ldc);
    worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            size_t o = (size_t)i * ldc + j;
            double tol = 2.0 * (K + 2) * FLT_EPSILON * (fabsf(alpha) * S[o] + fabsf(beta * R[o]));
            double e = fabs((double)C[o] - R[o]) - tol;
            if (e > worst) worst = e;
        }
    for (int i = 0; i < M; i++) /* the padding between rows is not C's: untouched */
        for (int j = N; j < ldc; j++) worst = fmax(worst, C[(size_t)i * ldc + j] != R[(size_t)i * ldc + j]);
out:
    free(A); free(B); free(absA); free(absB); free(C); free(R); free(S);
    return worst;
}

TEST(kernel_equals_the_reference_at_every_edge) {
    if (!gemm_bf16_available())
        fprintf(stderr, "  (no AVX512-BF16 on this CPU: this checks gemm_bf16's emulation, rounded "
                        "copies through sgemm; the kernel is not run here)\n");
    int Ms[] = {1, 11, 12, 13, 97, 100}, Ns[] = {1, 31, 32, 33, 70, 257};
    int Ks[] = {1, 2, 3, 255, 256, 257, 600};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int a = 0; a < 6; a++)
                for (int b = 0; b < 6; b++)
                    for (int c = 0; c < 7; c++) {
                        /* alpha and beta as the engine uses them: 1 and 0 or 1, a scale */
                        float alpha = (a + b + c) % 3 == 2 ? 0.125f : 1.0f;
                        float beta = (a + b + c) % 3 == 0 ? 0.0f : (a + c) % 2 ? 1.0f : -0.5f;
                        double w = worst_excess(ta, tb, Ms[a], Ns[b], Ks[c], alpha, beta);
                        CHECK_MSG(w <= 0, "ta %d tb %d M %d N %d K %d alpha %g beta %g: %g over",
                                  ta, tb, Ms[a], Ns[b], Ks[c], alpha, beta, w);
                    }
}

TEST(beta_zero_never_reads_c) {
    /* C full of NaN must not leak into a product that does not ask for it */
    enum { M = 13, N = 33, K = 40 };
    float A[M * K], B[K * N], C[M * N];
    for (int i = 0; i < M * K; i++) A[i] = unif();
    for (int i = 0; i < K * N; i++) B[i] = unif();
    for (int i = 0; i < M * N; i++) C[i] = NAN;
    gemm_bf16(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    int nans = 0;
    for (int i = 0; i < M * N; i++) nans += isnan(C[i]);
    CHECK_MSG(nans == 0, "%d NaN of C leaked through beta 0", nans);
}

TEST(within_bf16_rounding_of_sgemm) {
    /* A linear layer's shapes (the demo's fc1 on 600 token rows): each operand is off by at most
     * 2^-9 relative, so each product by 2^-8, so the sum by 2^-8 sum|ab| (and a little FP32). */
    enum { M = 600, N = 768, K = 192 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
    float *C = malloc(sizeof(float) * M * N), *F = malloc(sizeof(float) * M * N);
    float *absA = malloc(sizeof(float) * M * K), *absB = malloc(sizeof(float) * N * K);
    float *S = malloc(sizeof(float) * M * N);
    if (!A || !B || !C || !F || !absA || !absB || !S) { CHECK(0); goto out; }
    for (int i = 0; i < M * K; i++) absA[i] = fabsf(A[i] = unif());
    for (int i = 0; i < N * K; i++) absB[i] = fabsf(B[i] = unif());
    gemm_bf16(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, F, N);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, absA, K, absB, K, 0.0f, S, N);
    double worst = 0, mean = 0;
    for (int i = 0; i < M * N; i++) {
        double e = fabs((double)C[i] - F[i]);
        worst = fmax(worst, e / (0x1p-8 * 1.01 * S[i]));
        mean += e / S[i];
    }
    CHECK_MSG(worst <= 1, "BF16 off sgemm by %.3g of its bound", worst);
    /* and it is not exact FP32: the rounding did happen (a product that skipped it would pass
     * the bound above too) */
    CHECK_MSG(mean / (M * N) > 1e-5, "mean relative error %.3g: not BF16", mean / (M * N));
out:
    free(A); free(B); free(C); free(F); free(absA); free(absB); free(S);
}

TEST_MAIN()
