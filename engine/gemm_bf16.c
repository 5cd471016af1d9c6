/*
 * gemm_bf16.c: see gemm_bf16.h.
 *
 * The GotoBLAS shape: for each slice of KC along K, both operands are packed once as BF16
 * pairs (A in micro-panels of MR rows, B in micro-panels of NR columns, each (k, k+1) pair of a
 * row or column side by side in 32 bits, as vdpbf16ps takes them), then the threads share the
 * (MC x NC) blocks of C, and within a block each B micro-panel (KC x NR, 16 KB) stays in L1
 * while the block's A micro-panels stream past it from L2. The micro-kernel holds an MR x NR
 * tile of C in 24 of the 32 zmm registers.
 */
#include "engine/gemm_bf16.h"

#include <cblas.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MR 12
#define NR 32
#define KC 256 /* even: whole pairs */
#define MC (8 * MR)
#define NC (8 * NR)

int gemm_bf16_available(void) {
    static int known = -1; /* the CPU does not change: ask once (every product checks) */
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512bf16");
    }
    return known;
}

void gemm_bf16_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float a = transa ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = transb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += (double)bf16_round(a) * bf16_round(b);
            }
            float *c = C + (size_t)i * ldc + j;
            *c = beta == 0.0f ? alpha * (float)s : alpha * (float)s + beta * *c;
        }
}

void gemm_fp32(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans,
                transb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* rows x cols of src (stride ld) rounded to BF16 into a new dense array (stride cols), or NULL. */
static float *rounded_copy(const float *src, int rows, int cols, int ld) {
    float *out = malloc(sizeof(float) * ((size_t)rows * cols + 1));
    if (!out) return NULL;
    #pragma omp parallel for if ((size_t)rows * cols > 65536)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            out[(size_t)r * cols + c] = bf16_round(src[(size_t)r * ld + c]);
    return out;
}

/* Without the BF16 unit: both operands rounded into copies, then sgemm. A product of two BF16
 * is exact in FP32 (8 + 8 significant bits), and sgemm sums in FP32, so this is gemm_bf16's
 * result up to the order of the sums, at sgemm's speed plus a pass over each operand: the same
 * numerics on every CPU. 0, or -1 if the copies cannot be had. */
static int gemm_bf16_emulated(int transa, int transb, int M, int N, int K, float alpha,
                              const float *A, int lda, const float *B, int ldb, float beta,
                              float *C, int ldc) {
    int ar = transa ? K : M, ac = transa ? M : K, br = transb ? N : K, bc = transb ? K : N;
    float *a = rounded_copy(A, ar, ac, lda), *b = a ? rounded_copy(B, br, bc, ldb) : NULL;
    if (!b) {
        free(a);
        return -1;
    }
    gemm_fp32(transa, transb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
    free(a);
    free(b);
    return 0;
}

/* Packing writes a panel of width w (MR rows of op(A), or NR columns of op(B)) over kc of K as
 * kc/2 groups of w pairs: out32[(k/2) * w + x] holds (v(x, k), v(x, k + 1)) in BF16, x the row
 * or column within the panel. Entries past n (<= w) or past kn (<= kc) are zeros. Two ways in,
 * whichever side of the source is contiguous. */

/* v(x, k) = src[x * ld + k]: each x's k run is contiguous. 32 floats of it become 16 pairs at
 * once (vcvtne2ps2bf16 keeps their order), scattered down the panel's column x. */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void pack_runs(uint16_t *out, const float *src, size_t ld, int w, int n, int kn, int kc) {
    if (n < w || kn < kc) memset(out, 0, sizeof(uint16_t) * w * kc);
    __m512i idx = _mm512_mullo_epi32(_mm512_set1_epi32(w),
                                     _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                       13, 14, 15));
    for (int x = 0; x < n; x++) {
        const float *run = src + x * ld;
        int *o = (int *)out + x;
        for (int k = 0; k < kn; k += 32) {
            int left = kn - k;
            __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 m1 = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            __m512 lo = _mm512_maskz_loadu_ps(m0, run + k), hi = _mm512_maskz_loadu_ps(m1, run + k + 16);
            __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            int pairs = (left + 1) / 2;
            __mmask16 mp = pairs >= 16 ? 0xffff : (__mmask16)((1u << pairs) - 1);
            _mm512_mask_i32scatter_epi32(o + (size_t)(k / 2) * w, mp, idx, v, 4);
        }
    }
}

/* v(x, k) = src[k * ld + x]: each k's run of x is contiguous. Rows k and k + 1 are converted
 * 16 at a time and interleaved into pairs. */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void pack_rows(uint16_t *out, const float *src, size_t ld, int w, int n, int kn, int kc) {
    if (n < w || kn < kc) memset(out, 0, sizeof(uint16_t) * w * kc);
    /* [a0..a15, b0..b15] -> [a0, b0, a1, b1, ...] */
    __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                     23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int k = 0; k < kn; k += 2) {
        const float *r0 = src + (size_t)k * ld, *r1 = r0 + ld;
        uint16_t *o = out + (size_t)k * w;
        for (int x = 0; x < n; x += 16) {
            int left = n - x;
            __mmask16 m = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            __m512 a = _mm512_maskz_loadu_ps(m, r0 + x);
            __m512 b = k + 1 < kn ? _mm512_maskz_loadu_ps(m, r1 + x) : _mm512_setzero_ps();
            __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a);
            _mm512_mask_storeu_epi32(o + 2 * x, m, _mm512_permutexvar_epi16(inter, ab));
        }
    }
}

/* op(A)'s rows [i0, i0 + MR) over K's [k0, k0 + kc). out: (kc/2, MR) pairs. */
static void pack_a(uint16_t *out, const float *A, int lda, int transa, int M, int K, int i0,
                   int k0, int kc) {
    int mr = M - i0 < MR ? M - i0 : MR, kn = K - k0 < kc ? K - k0 : kc;
    if (!transa) pack_runs(out, A + (size_t)i0 * lda + k0, lda, MR, mr, kn, kc);
    else pack_rows(out, A + (size_t)k0 * lda + i0, lda, MR, mr, kn, kc);
}

/* op(B)'s columns [j0, j0 + NR) over K's [k0, k0 + kc). out: (kc/2, NR) pairs. */
static void pack_b(uint16_t *out, const float *B, int ldb, int transb, int N, int K, int j0,
                   int k0, int kc) {
    int nr = N - j0 < NR ? N - j0 : NR, kn = K - k0 < kc ? K - k0 : kc;
    if (transb) pack_runs(out, B + (size_t)j0 * ldb + k0, ldb, NR, nr, kn, kc);
    else pack_rows(out, B + (size_t)k0 * ldb + j0, ldb, NR, nr, kn, kc);
}

/* The MR x NR tile of C at c from kc2 pairs of packed a and b: c = alpha * sum + beta * c when
 * first (beta 0: c not read), else c += alpha * sum; only mr x nr of it exists. */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void kernel(int kc2, const uint16_t *a, const uint16_t *b, float *c, int ldc, int mr,
                   int nr, float alpha, float beta, int first) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const uint32_t *a32 = (const uint32_t *)a;
    for (int p = 0; p < kc2; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
        b += 2 * NR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a32[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
        }
        a32 += MR;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(first ? beta : 1.0f);
    int keep = !first || beta != 0.0f;
    for (int i = 0; i < mr; i++)
        for (int h = 0; h < 2; h++) {
            int n = nr - 16 * h;
            if (n <= 0) break;
            __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
            float *cp = c + (size_t)i * ldc + 16 * h;
            __m512 v = _mm512_mul_ps(va, acc[i][h]);
            if (keep) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, cp), v);
            _mm512_mask_storeu_ps(cp, m, v);
        }
}

void gemm_bf16(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int pa = (M + MR - 1) / MR, pb = (N + NR - 1) / NR;
    int kcmax = K < KC ? (K + 1) & ~1 : KC;
    /* whole 64-byte lines, as aligned_alloc wants; both panels' sizes are multiples of 32 bytes */
    size_t abytes = ((size_t)pa * MR * kcmax * sizeof(uint16_t) + 63) & ~(size_t)63;
    size_t bbytes = ((size_t)pb * NR * kcmax * sizeof(uint16_t) + 63) & ~(size_t)63;
    if (!gemm_bf16_available() || K <= 0) {
        if (K <= 0 || gemm_bf16_emulated(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C,
                                         ldc))
            gemm_bf16_ref(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    uint16_t *ap = aligned_alloc(64, abytes), *bp = aligned_alloc(64, bbytes);
    if (!ap || !bp) { /* no memory for the panels: the same result, slowly */
        free(ap);
        free(bp);
        gemm_bf16_ref(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int mb = (M + MC - 1) / MC, nb = (N + NC - 1) / NC;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? (K - k0 + 1) & ~1 : KC, first = k0 == 0;
        #pragma omp parallel
        {
            #pragma omp for schedule(static) nowait
            for (int p = 0; p < pa; p++)
                pack_a(ap + (size_t)p * MR * kc, A, lda, transa, M, K, p * MR, k0, kc);
            #pragma omp for schedule(static)
            for (int p = 0; p < pb; p++)
                pack_b(bp + (size_t)p * NR * kc, B, ldb, transb, N, K, p * NR, k0, kc);
            #pragma omp for collapse(2) schedule(static)
            for (int ib = 0; ib < mb; ib++)
                for (int jb = 0; jb < nb; jb++)
                    for (int j0 = jb * NC; j0 < N && j0 < (jb + 1) * NC; j0 += NR)
                        for (int i0 = ib * MC; i0 < M && i0 < (ib + 1) * MC; i0 += MR)
                            kernel(kc / 2, ap + (size_t)(i0 / MR) * MR * kc,
                                   bp + (size_t)(j0 / NR) * NR * kc, C + (size_t)i0 * ldc + j0,
                                   ldc, M - i0 < MR ? M - i0 : MR, N - j0 < NR ? N - j0 : NR,
                                   alpha, beta, first);
        }
    }
    free(ap);
    free(bp);
}
