/*
 * swin_ops.c: the fast versions of the ops in swin_ops.h. The gathers and scatters copy whole
 * token rows (C floats) and split windows or tokens over OpenMP threads; the attention scores
 * are one sgemm per window and head, as ops.c's attention, with the bias and mask added in the
 * softmax's own pass over each row. Their definition is swin_ops_ref.c (tests/test_swin_ops.c).
 */
#include "engine/swin_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/fastmath.h"

/* Below this many elements a parallel region costs more than it saves (as ops.c). */
#define PAR_MIN 16384


/* Row of inp (B, R, R, C) that token t of window wi lands on: the shifted map's (y, x) read
 * (y + shift, x + shift) mod R of the original (torch.roll by -shift). */
static inline size_t window_src(int wi, int t, int R, int w, int shift) {
    int g = R / w, nW = g * g;
    int b = wi / nW, wr = wi % nW;
    int y = (wr / g) * w + t / w + shift, x = (wr % g) * w + t % w + shift;
    y -= y >= R ? R : 0;
    x -= x >= R ? R : 0;
    return ((size_t)b * R + y) * R + x;
}

void swin_window_partition_forward(float *out, const float *inp, int B, int R, int C, int w,
                                   int shift) {
    int g = R / w, Bw = B * g * g, N = w * w;
    #pragma omp parallel for if ((size_t)B * R * R * C > PAR_MIN)
    for (int wi = 0; wi < Bw; wi++)
        for (int t = 0; t < N; t++)
            memcpy(out + ((size_t)wi * N + t) * C, inp + window_src(wi, t, R, w, shift) * C,
                   sizeof(float) * C);
}

void swin_window_partition_backward(float *dinp, const float *dout, int B, int R, int C, int w,
                                    int shift) {
    int g = R / w, Bw = B * g * g, N = w * w;
    /* a permutation: every row of dinp receives exactly one row, so windows split freely */
    #pragma omp parallel for if ((size_t)B * R * R * C > PAR_MIN)
    for (int wi = 0; wi < Bw; wi++)
        for (int t = 0; t < N; t++) {
            float *d = dinp + window_src(wi, t, R, w, shift) * C;
            const float *s = dout + ((size_t)wi * N + t) * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
}

void swin_relpos_index(int *index, int w) {
    int N = w * w;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            index[i * N + j] = (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);
}

void swin_relpos_bias_forward(float *out, const float *table, const int *index, int N, int NH) {
    for (int h = 0; h < NH; h++)
        for (int k = 0; k < N * N; k++)
            out[(size_t)h * N * N + k] = table[(size_t)index[k] * NH + h];
}

void swin_relpos_bias_backward(float *dtable, const float *dout, const int *index, int N, int NH) {
    /* serial: entries of different (i, j) share table rows; NH N^2 adds are nothing */
    for (int h = 0; h < NH; h++)
        for (int k = 0; k < N * N; k++)
            dtable[(size_t)index[k] * NH + h] += dout[(size_t)h * N * N + k];
}

/* Which of the three bands of timm's slices (0, -w), (-w, -shift), (-shift, None) the shifted
 * map's coordinate y falls in. */
static inline int band(int y, int R, int w, int shift) {
    return y < R - w ? 0 : y < R - shift ? 1 : 2;
}

/* The region (0 .. 8) of token t of window wr (within an image) on the shifted map. */
static inline int region(int wr, int t, int R, int w, int shift) {
    int g = R / w;
    return 3 * band((wr / g) * w + t / w, R, w, shift) + band((wr % g) * w + t % w, R, w, shift);
}

void swin_shift_mask(float *mask, int R, int w, int shift) {
    int g = R / w, N = w * w;
    for (int wr = 0; wr < g * g; wr++) {
        float *m = mask + (size_t)wr * N * N;
        for (int i = 0; i < N; i++) {
            int ri = shift ? region(wr, i, R, w, shift) : 0;
            for (int j = 0; j < N; j++)
                m[i * N + j] = !shift || region(wr, j, R, w, shift) == ri ? 0.0f : -100.0f;
        }
    }
}

void swin_attention_softmax_forward(float *att, const float *qkv, const float *bias,
                                    const float *mask, int Bw, int nW, int N, int C, int NH) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2) if ((size_t)Bw * N * N * C > PAR_MIN)
    for (int b = 0; b < Bw; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * N * 3 * C + h * hd, *k = q + C;
            float *a = att + ((size_t)b * NH + h) * N * N;
            const float *bh = bias + (size_t)h * N * N;
            const float *mw = mask ? mask + (size_t)(b % nW) * N * N : NULL;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, scale, q, 3 * C, k,
                        3 * C, 0.0f, a, N);
            for (int t = 0; t < N; t++) {
                float *row = a + (size_t)t * N;
                const float *br = bh + (size_t)t * N;
                if (mw) {
                    const float *mr = mw + (size_t)t * N;
                    for (int j = 0; j < N; j++) row[j] += br[j] + mr[j];
                } else {
                    for (int j = 0; j < N; j++) row[j] += br[j];
                }
                float mx = row[0];
                for (int j = 1; j < N; j++) mx = row[j] > mx ? row[j] : mx;
                float s = 0.0f;
                #pragma omp simd reduction(+ : s)
                for (int j = 0; j < N; j++) {
                    row[j] = fast_expf(row[j] - mx);
                    s += row[j];
                }
                float inv = 1.0f / s;
                for (int j = 0; j < N; j++) row[j] *= inv;
            }
        }
}

void swin_attention_bias_backward(float *dbias, const float *dscores, int Bw, int N, int NH) {
    size_t NN = (size_t)N * N;
    /* rows of dbias split over threads, windows summed in order (deterministic) */
    #pragma omp parallel for if ((size_t)Bw * NH * NN > PAR_MIN)
    for (int r = 0; r < NH * N; r++) {
        float *d = dbias + (size_t)r * N;
        for (int b = 0; b < Bw; b++) {
            const float *s = dscores + (size_t)b * NH * NN + (size_t)r * N;
            for (int j = 0; j < N; j++) d[j] += s[j];
        }
    }
}

void swin_merge_gather_forward(float *out, const float *inp, int B, int R, int C) {
    int g = R / 2;
    #pragma omp parallel for if ((size_t)B * R * R * C > PAR_MIN)
    for (int o = 0; o < B * g * g; o++) {
        int b = o / (g * g), y = 2 * (o % (g * g) / g), x = 2 * (o % g);
        for (int q = 0; q < 4; q++) /* q = 2 dx + dy: x(0,0), x(1,0), x(0,1), x(1,1) */
            memcpy(out + ((size_t)o * 4 + q) * C,
                   inp + (((size_t)b * R + y + (q & 1)) * R + x + (q >> 1)) * C,
                   sizeof(float) * C);
    }
}

void swin_merge_gather_backward(float *dinp, const float *dout, int B, int R, int C) {
    int g = R / 2;
    #pragma omp parallel for if ((size_t)B * R * R * C > PAR_MIN)
    for (int o = 0; o < B * g * g; o++) {
        int b = o / (g * g), y = 2 * (o % (g * g) / g), x = 2 * (o % g);
        for (int q = 0; q < 4; q++) {
            float *d = dinp + (((size_t)b * R + y + (q & 1)) * R + x + (q >> 1)) * C;
            const float *s = dout + ((size_t)o * 4 + q) * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
    }
}

void swin_mean_pool_forward(float *out, const float *inp, int B, int T, int C) {
    #pragma omp parallel for if ((size_t)B * T * C > PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        memset(o, 0, sizeof(float) * C);
        for (int t = 0; t < T; t++) {
            const float *x = inp + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) o[c] += x[c];
        }
        for (int c = 0; c < C; c++) o[c] /= T;
    }
}

void swin_mean_pool_backward(float *dinp, const float *dout, int B, int T, int C) {
    #pragma omp parallel for if ((size_t)B * T * C > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *d = dinp + ((size_t)b * T + t) * C;
            const float *s = dout + (size_t)b * C;
            for (int c = 0; c < C; c++) d[c] += s[c] / T;
        }
}
