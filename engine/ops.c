/*
 * ops.c: the fast versions of the ops in ops.h. Matrix products go to OpenBLAS sgemm (which
 * brings its own threads), or the linear layers' to gemm_bf16 on a thread that asked for BF16
 * (matmul_set_precision); elementwise and row-wise work is split over OpenMP threads and
 * written so that gcc vectorizes it (fast_expf below instead of libm's scalar expf/erff).
 * Their definition is ops_ref.c; tests/test_ops.c compares the two.
 */
#include "engine/ops.h"

#include "engine/fastmath.h"
#include "engine/gemm_bf16.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384


/* The GELU kernels below run on chunks so that each thread gets contiguous work and the inner
 * loop is a plain counted loop the compiler vectorizes; target_clones builds AVX-512 and AVX2
 * versions beside the baseline one and picks at load time, so the default build still runs on
 * any x86-64. erf is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), sharing its
 * e^(-z^2) with the Gaussian density that the backward needs. */
#define GELU_CHUNK 4096
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define MULTIVERSION
#endif

#define GELU_ERF(x, erf, gauss)                                                            \
    float z_ = (x) * 0.70710678118654752f, a_ = fabsf(z_);                                 \
    float t_ = 1.0f / (1.0f + 0.3275911f * a_);                                            \
    float p_ = t_ * (0.254829592f + t_ * (-0.284496736f + t_ * (1.421413741f +             \
               t_ * (-1.453152027f + t_ * 1.061405429f))));                                \
    float gauss = fast_expf(-a_ * a_);                                                     \
    float erf = copysignf(1.0f - p_ * gauss, z_)

MULTIVERSION static void gelu_fwd_chunk(float *restrict out, const float *restrict inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        GELU_ERF(x, e, g);
        (void)g;
        out[i] = 0.5f * x * (1.0f + e);
    }
}

MULTIVERSION static void gelu_bwd_chunk(float *restrict dinp, const float *restrict inp,
                                        const float *restrict dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        GELU_ERF(x, e, g);
        /* d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi) */
        dinp[i] += dout[i] * (0.5f * (1.0f + e) + x * 0.39894228040143268f * g);
    }
}

static _Thread_local enum matmul_precision precision = MATMUL_FP32;

enum matmul_precision matmul_set_precision(enum matmul_precision p) {
    enum matmul_precision prev = precision;
    precision = p;
    return prev;
}

/* C = alpha op(A) op(B) + beta C in the thread's precision; gemm_bf16.h's arguments. */
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    (precision == MATMUL_BF16 ? gemm_bf16 : gemm_fp32)(ta, tb, M, N, K, alpha, A, lda, B, ldb,
                                                       beta, C, ldc);
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
    /* Start from the broadcast bias so the sgemm can accumulate (beta = 1) onto it. */
    float beta = 0.0f;
    if (bias) {
        #pragma omp parallel for if ((size_t)N * OC > PAR_MIN)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, sizeof(float) * OC);
        beta = 1.0f;
    }
    gemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC) {
    if (dinp)
        gemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    if (dweight)
        gemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        /* Column sums: split columns over threads, rows stay in order (deterministic). */
        #pragma omp parallel for if ((size_t)N * OC > PAR_MIN)
        for (int o0 = 0; o0 < OC; o0 += 64) {
            int o1 = o0 + 64 < OC ? o0 + 64 : OC;
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC;
                for (int o = o0; o < o1; o++) dbias[o] += d[o];
            }
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, float eps) {
    #pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float s = 0.0f;
        for (int i = 0; i < C; i++) s += x[i];
        float m = s / C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        float r = 1.0f / sqrtf(v / C + eps);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * r * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = r;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C) {
    #pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        /* dx = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = d * w */
        float sd = 0.0f, sdx = 0.0f;
        for (int i = 0; i < C; i++) {
            float dxhat = d[i] * weight[i];
            sd += dxhat;
            sdx += dxhat * (x[i] - m) * r;
        }
        sd /= C;
        sdx /= C;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - m) * r;
            dx[i] += r * (d[i] * weight[i] - sd - xhat * sdx);
        }
    }
    if (!dweight && !dbias) return;
    /* Parameter gradients sum over rows: columns split over threads, rows in order. */
    #pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += 32) {
        int c1 = c0 + 32 < C ? c0 + 32 : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float m = mean[n], r = rstd[n];
            for (int i = c0; i < c1; i++) {
                if (dweight) dweight[i] += d[i] * (x[i] - m) * r;
                if (dbias) dbias[i] += d[i];
            }
        }
    }
}

void gelu_forward(float *out, const float *inp, size_t n) {
    #pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i += GELU_CHUNK)
        gelu_fwd_chunk(out + i, inp + i, n - i < GELU_CHUNK ? n - i : GELU_CHUNK);
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    #pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i += GELU_CHUNK)
        gelu_bwd_chunk(dinp + i, inp + i, dout + i, n - i < GELU_CHUNK ? n - i : GELU_CHUNK);
}

void attention_softmax_forward(float *att, const float *qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * 3 * C + h * hd;
            const float *k = q + C;
            float *a = att + ((size_t)b * NH + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, 3 * C, k,
                        3 * C, 0.0f, a, T);
            for (int t = 0; t < T; t++) {
                float *row = a + (size_t)t * T;
                float mx = row[0];
                for (int j = 1; j < T; j++) mx = row[j] > mx ? row[j] : mx;
                float s = 0.0f;
                #pragma omp simd reduction(+ : s)
                for (int j = 0; j < T; j++) {
                    row[j] = fast_expf(row[j] - mx);
                    s += row[j];
                }
                float inv = 1.0f / s;
                for (int j = 0; j < T; j++) row[j] *= inv;
            }
        }
}

void attention_softmax_backward(float *dqkv, float *datt, const float *att, const float *qkv,
                                int B, int T, int C, int NH) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t off = ((size_t)b * NH + h) * T * T;
            const float *a = att + off;
            float *ds = datt + off;
            /* dscore = a * (da - sum_j a_j da_j), the softmax Jacobian applied row by row,
             * written over da (each row is read whole before it is overwritten) */
            for (int t = 0; t < T; t++) {
                const float *ar = a + (size_t)t * T;
                float *dr = ds + (size_t)t * T;
                float dot = 0.0f;
                for (int j = 0; j < T; j++) dot += ar[j] * dr[j];
                for (int j = 0; j < T; j++) dr[j] = ar[j] * (dr[j] - dot);
            }
            const float *q = qkv + (size_t)b * T * 3 * C + h * hd, *k = q + C;
            float *dq = dqkv + (size_t)b * T * 3 * C + h * hd, *dk = dq + C;
            /* scores = scale q k^T: dq += scale ds k, dk += scale ds^T q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, ds, T, k,
                        3 * C, 1.0f, dq, 3 * C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, ds, T, q,
                        3 * C, 1.0f, dk, 3 * C);
        }
}

void attention_value_forward(float *out, const float *att, const float *qkv, int B, int T, int C,
                             int NH) {
    int hd = C / NH;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *a = att + ((size_t)b * NH + h) * T * T;
            const float *v = qkv + (size_t)b * T * 3 * C + 2 * C + h * hd;
            float *o = out + (size_t)b * T * C + h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, v,
                        3 * C, 0.0f, o, C);
        }
}

void attention_value_backward(float *datt, float *dqkv, const float *dout, const float *att,
                              const float *qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t off = ((size_t)b * NH + h) * T * T;
            const float *v = qkv + (size_t)b * T * 3 * C + 2 * C + h * hd;
            float *dv = dqkv + (size_t)b * T * 3 * C + 2 * C + h * hd;
            const float *d = dout + (size_t)b * T * C + h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, d, C, v, 3 * C,
                        1.0f, datt + off, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, att + off, T, d,
                        C, 1.0f, dv, 3 * C);
        }
}

void im2col_forward(float *cols, const float *img, int B, int Cin, int H, int P) {
    int G = H / P, K = Cin * P * P;
    #pragma omp parallel for collapse(2) if ((size_t)B * Cin * H * H > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = cols + ((size_t)b * G * G + gy * G + gx) * K;
                for (int c = 0; c < Cin; c++)
                    for (int py = 0; py < P; py++)
                        memcpy(row + (c * P + py) * P,
                               img + (((size_t)b * Cin + c) * H + gy * P + py) * H + gx * P,
                               sizeof(float) * P);
            }
}

void im2col_backward(float *dimg, const float *dcols, int B, int Cin, int H, int P) {
    int G = H / P, K = Cin * P * P;
    /* Patches do not overlap (stride = kernel), so every pixel receives exactly one value. */
    #pragma omp parallel for collapse(2) if ((size_t)B * Cin * H * H > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                const float *row = dcols + ((size_t)b * G * G + gy * G + gx) * K;
                for (int c = 0; c < Cin; c++)
                    for (int py = 0; py < P; py++) {
                        float *px = dimg + (((size_t)b * Cin + c) * H + gy * P + py) * H + gx * P;
                        for (int px_ = 0; px_ < P; px_++) px[px_] += row[(c * P + py) * P + px_];
                    }
            }
}

float crossentropy_forward_backward(float *probs, float *dlogits, const float *logits,
                                    const int *targets, int B, int K, float smoothing,
                                    float dloss) {
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *l = logits + (size_t)b * K;
        float *p = probs + (size_t)b * K;
        float mx = l[0];
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        double s = 0.0;
        for (int k = 0; k < K; k++) s += exp((double)l[k] - mx);
        double logz = mx + log(s);
        /* loss = -sum_k target_k log p_k = logz - sum_k target_k l_k */
        double tl = 0.0;
        for (int k = 0; k < K; k++) {
            double target = smoothing / K + (k == targets[b] ? 1.0 - smoothing : 0.0);
            tl += target * l[k];
            p[k] = (float)exp((double)l[k] - logz);
        }
        total += logz - tl;
        if (dlogits)
            for (int k = 0; k < K; k++) {
                float target = smoothing / K + (k == targets[b] ? 1.0f - smoothing : 0.0f);
                dlogits[(size_t)b * K + k] += (p[k] - target) * dloss / B;
            }
    }
    return (float)(total / B);
}

void axpy(float *y, float a, const float *x, size_t n) {
    #pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}
