/*
 * swin_ops_ref.c: the definitions of the Swin ops, as timm computes them, in plain loops. Slow
 * on purpose (temporary copies, one element at a time): what swin_ops.c must agree with.
 */
#include "engine/swin_ops_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* torch.roll(x, (s, s), dims=(1, 2)) of x (B, R, R, C):
 * out[y][x] = in[(y - s) mod R][(x - s) mod R] */
static void roll(float *out, const float *inp, int B, int R, int C, int s) {
    for (int b = 0; b < B; b++)
        for (int y = 0; y < R; y++)
            for (int x = 0; x < R; x++) {
                int sy = ((y - s) % R + R) % R, sx = ((x - s) % R + R) % R;
                for (int c = 0; c < C; c++)
                    out[(((size_t)b * R + y) * R + x) * C + c] =
                        inp[(((size_t)b * R + sy) * R + sx) * C + c];
            }
}

/* x.view(B, R/w, w, R/w, w, C).permute(0, 1, 3, 2, 4, 5): element (b, gy, py, gx, px, c) of the
 * map goes to window (b, gy, gx), token (py, px). */
static void partition(float *out, const float *inp, int B, int R, int C, int w) {
    int g = R / w;
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < g; gy++)
            for (int py = 0; py < w; py++)
                for (int gx = 0; gx < g; gx++)
                    for (int px = 0; px < w; px++)
                        for (int c = 0; c < C; c++) {
                            size_t src = (((size_t)b * R + gy * w + py) * R + gx * w + px) * C + c;
                            size_t win = ((size_t)b * g + gy) * g + gx;
                            out[(win * w * w + py * w + px) * C + c] = inp[src];
                        }
}

/* window_reverse: the inverse view/permute */
static void reverse(float *out, const float *win, int B, int R, int C, int w) {
    int g = R / w;
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++)
                for (int py = 0; py < w; py++)
                    for (int px = 0; px < w; px++)
                        for (int c = 0; c < C; c++)
                            out[(((size_t)b * R + gy * w + py) * R + gx * w + px) * C + c] = win[
                                ((((size_t)b * g + gy) * g + gx) * w * w + py * w + px) * C + c];
}

void swin_window_partition_forward_ref(float *out, const float *inp, int B, int R, int C, int w,
                                       int shift) {
    size_t n = (size_t)B * R * R * C;
    float *t = malloc(sizeof(float) * n);
    roll(t, inp, B, R, C, -shift);
    partition(out, t, B, R, C, w);
    free(t);
}

void swin_window_partition_backward_ref(float *dinp, const float *dout, int B, int R, int C,
                                        int w, int shift) {
    /* the block's way back: window_reverse, then torch.roll by +shift */
    size_t n = (size_t)B * R * R * C;
    float *t = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
    reverse(t, dout, B, R, C, w);
    roll(u, t, B, R, C, shift);
    for (size_t i = 0; i < n; i++) dinp[i] += u[i];
    free(t);
    free(u);
}

void swin_relpos_index_ref(int *index, int w) {
    /* coords (2, N) = meshgrid(arange(w), arange(w)) flattened; relative = c[:, :, None] -
     * c[:, None, :]; shifted to start at 0, the row offset scaled by 2w - 1, summed */
    int N = w * w;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            int dy = (i / w) - (j / w), dx = (i % w) - (j % w);
            dy += w - 1;
            dx += w - 1;
            dy *= 2 * w - 1;
            index[i * N + j] = dy + dx;
        }
}

void swin_relpos_bias_forward_ref(float *out, const float *table, const int *index, int N, int NH) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            for (int h = 0; h < NH; h++)
                out[((size_t)h * N + i) * N + j] = table[(size_t)index[i * N + j] * NH + h];
}

void swin_relpos_bias_backward_ref(float *dtable, const float *dout, const int *index, int N,
                                   int NH) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            for (int h = 0; h < NH; h++)
                dtable[(size_t)index[i * N + j] * NH + h] += dout[((size_t)h * N + i) * N + j];
}

void swin_shift_mask_ref(float *mask, int R, int w, int shift) {
    int g = R / w, N = w * w;
    float *img = calloc((size_t)R * R, sizeof(float)), *win = malloc(sizeof(float) * R * R);
    if (shift) {
        /* img_mask[:, h0:h1, w0:w1] = cnt over the slices (0, -w), (-w, -s), (-s, None) */
        int lo[3] = {0, R - w, R - shift}, hi[3] = {R - w, R - shift, R};
        int cnt = 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++, cnt++)
                for (int y = lo[a]; y < hi[a]; y++)
                    for (int x = lo[b]; x < hi[b]; x++) img[y * R + x] = (float)cnt;
    }
    partition(win, img, 1, R, 1, w);
    for (int k = 0; k < g * g; k++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                /* mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2): (i, j) is m[j] - m[i] */
                float d = win[k * N + j] - win[k * N + i];
                mask[((size_t)k * N + i) * N + j] = d != 0 ? -100.0f : 0.0f;
            }
    free(img);
    free(win);
}

void swin_attention_softmax_forward_ref(float *att, const float *qkv, const float *bias,
                                        const float *mask, int Bw, int nW, int N, int C, int NH) {
    int hd = C / NH;
    double scale = 1.0 / sqrt((double)hd);
    double *row = malloc(sizeof(double) * N);
    for (int b = 0; b < Bw; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < N; i++) {
                double mx = -INFINITY, s = 0;
                for (int j = 0; j < N; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)qkv[((size_t)b * N + i) * 3 * C + h * hd + e] *
                             qkv[((size_t)b * N + j) * 3 * C + C + h * hd + e];
                    row[j] = d * scale + bias[((size_t)h * N + i) * N + j] +
                             (mask ? mask[((size_t)(b % nW) * N + i) * N + j] : 0.0);
                    if (row[j] > mx) mx = row[j];
                }
                for (int j = 0; j < N; j++) s += exp(row[j] - mx);
                for (int j = 0; j < N; j++)
                    att[(((size_t)b * NH + h) * N + i) * N + j] = (float)(exp(row[j] - mx) / s);
            }
    free(row);
}

void swin_attention_bias_backward_ref(float *dbias, const float *dscores, int Bw, int N, int NH) {
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int b = 0; b < Bw; b++) s += dscores[(((size_t)b * NH + h) * N + i) * N + j];
                dbias[((size_t)h * N + i) * N + j] += (float)s;
            }
}

/* x.reshape(B, R/2, 2, R/2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3): out[b][i][j] holds
 * (dj, di, c) with in[b][2i + di][2j + dj][c] */
void swin_merge_gather_forward_ref(float *out, const float *inp, int B, int R, int C) {
    int g = R / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < g; i++)
            for (int j = 0; j < g; j++)
                for (int dj = 0; dj < 2; dj++)
                    for (int di = 0; di < 2; di++)
                        for (int c = 0; c < C; c++)
                            out[(((size_t)b * g + i) * g + j) * 4 * C + (dj * 2 + di) * C + c] =
                                inp[(((size_t)b * R + 2 * i + di) * R + 2 * j + dj) * C + c];
}

void swin_merge_gather_backward_ref(float *dinp, const float *dout, int B, int R, int C) {
    int g = R / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < g; i++)
            for (int j = 0; j < g; j++)
                for (int dj = 0; dj < 2; dj++)
                    for (int di = 0; di < 2; di++)
                        for (int c = 0; c < C; c++)
                            dinp[(((size_t)b * R + 2 * i + di) * R + 2 * j + dj) * C + c] +=
                                dout[(((size_t)b * g + i) * g + j) * 4 * C + (dj * 2 + di) * C + c];
}

void swin_mean_pool_forward_ref(float *out, const float *inp, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += inp[((size_t)b * T + t) * C + c];
            out[(size_t)b * C + c] = (float)(s / T);
        }
}

void swin_mean_pool_backward_ref(float *dinp, const float *dout, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                dinp[((size_t)b * T + t) * C + c] += (float)((double)dout[(size_t)b * C + c] / T);
}
