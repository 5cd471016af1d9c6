/*
 * resize.c: timm's eval transform, fast and reference (see resize.h).
 */
#include "io/resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void resize_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top) {
    int64_t s = (int64_t)size * 8 / 7; /* floor(size / 0.875), in integers */
    if (w <= h) {
        *rw = (int)s;
        *rh = (int)(s * h / w);
    } else {
        *rh = (int)s;
        *rw = (int)(s * w / h);
    }
    /* rint: ties to even, as Python's round() in torchvision's center_crop */
    *left = (int)rint((*rw - size) / 2.0);
    *top = (int)rint((*rh - size) / 2.0);
}

int64_t resize_long_side(int w, int h, int size) {
    int64_t s = (int64_t)size * 8 / 7;
    return w <= h ? s * h / w : s * w / h;
}

static double triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

#define RESIZE_PREC 22 /* fixed-point bits of the coefficients, as Pillow's 8-bit path */

/* One axis of the resize, for the outputs first..first+n-1 of an in -> out resize: output o
 * reads inputs lo[o] .. lo[o]+cnt[o]-1 with weights k[o * ksize + t] (RESIZE_PREC fixed
 * point). The filter is the triangle stretched by the shrink factor, centred on the output
 * pixel's centre mapped into the input, windowed and normalized as Pillow's precompute_coeffs
 * does. */
typedef struct {
    int ksize;
    int *lo, *cnt;      /* (n) */
    int32_t *k;         /* (n, ksize) */
} resize_axis;

static void axis_free(resize_axis *ax) {
    free(ax->lo);
    free(ax->cnt);
    free(ax->k);
}

static int axis_init(resize_axis *ax, int in, int out, int first, int n) {
    double scale = (double)in / out, fscale = scale < 1.0 ? 1.0 : scale;
    double support = fscale; /* the triangle's support is 1 */
    ax->ksize = (int)ceil(support) * 2 + 1;
    ax->lo = malloc((size_t)n * sizeof *ax->lo);
    ax->cnt = malloc((size_t)n * sizeof *ax->cnt);
    ax->k = calloc((size_t)n * (size_t)ax->ksize, sizeof *ax->k);
    double *wt = malloc((size_t)ax->ksize * sizeof *wt);
    if (!ax->lo || !ax->cnt || !ax->k || !wt) {
        axis_free(ax);
        free(wt);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        double center = (first + i + 0.5) * scale, sum = 0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        for (int x = lo; x < hi; x++) sum += wt[x - lo] = triangle((x - center + 0.5) / fscale);
        int32_t *k = ax->k + (size_t)i * ax->ksize;
        for (int x = lo; x < hi; x++)
            k[x - lo] = (int32_t)(0.5 + (sum != 0.0 ? wt[x - lo] / sum : 0.0) * (1 << RESIZE_PREC));
        ax->lo[i] = lo;
        ax->cnt[i] = hi - lo;
    }
    free(wt);
    return 0;
}

/* Gives every window exactly ksize taps, so that the horizontal loop has a constant trip count
 * and unrolls: a window that would run past the end moves left, its weights move right, and
 * the added taps weigh exactly 0, so results are bit for bit the same. Needs in >= ksize. */
static void axis_fix_taps(resize_axis *ax, int in, int n) {
    for (int i = 0; i < n; i++) {
        int32_t *k = ax->k + (size_t)i * ax->ksize;
        int shift = ax->lo[i] + ax->ksize - in;
        if (shift > 0) {
            memmove(k + shift, k, (size_t)ax->cnt[i] * sizeof *k);
            memset(k, 0, (size_t)shift * sizeof *k);
            ax->lo[i] -= shift;
        }
        ax->cnt[i] = ax->ksize;
    }
}

static inline uint8_t clip8(int32_t v) {
    v >>= RESIZE_PREC;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One row of the horizontal pass, o (size, c) from row (w, c). taps > 0: every window has that
 * many taps (a constant where this is inlined, so the loop unrolls); 0: ax->cnt says. */
static inline __attribute__((always_inline)) void hpass_row(const uint8_t *row, uint8_t *o,
                                                             const resize_axis *ax, int size,
                                                             int c, int taps) {
    for (int j = 0; j < size; j++) {
        const int32_t *k = ax->k + (size_t)j * ax->ksize;
        const uint8_t *p = row + (size_t)ax->lo[j] * c;
        int n = taps ? taps : ax->cnt[j];
        if (c == 3) {
            int32_t s0 = 1 << (RESIZE_PREC - 1), s1 = s0, s2 = s0;
            for (int t = 0; t < n; t++) {
                s0 += p[3 * t] * k[t];
                s1 += p[3 * t + 1] * k[t];
                s2 += p[3 * t + 2] * k[t];
            }
            o[3 * j] = clip8(s0);
            o[3 * j + 1] = clip8(s1);
            o[3 * j + 2] = clip8(s2);
        } else {
            int32_t s0 = 1 << (RESIZE_PREC - 1);
            for (int t = 0; t < n; t++) s0 += p[t] * k[t];
            o[j] = clip8(s0);
        }
    }
}

int resize_eval(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    if (resize_long_side(w, h, size) > RESIZE_MAX_LONG_SIDE) return -1;
    int rw, rh, left, top;
    resize_eval_geometry(w, h, size, &rw, &rh, &left, &top);
    resize_axis ax, ay;
    if (axis_init(&ax, w, rw, left, size)) return -1;
    if (axis_init(&ay, h, rh, top, size)) {
        axis_free(&ax);
        return -1;
    }
    /* Only the input rows the cropped output rows read go through the horizontal pass. */
    int y0 = ay.lo[0], y1 = ay.lo[size - 1] + ay.cnt[size - 1];
    size_t rowlen = (size_t)size * (size_t)c;
    uint8_t *tmp = malloc((size_t)(y1 - y0) * rowlen);  /* (y1 - y0, size, c) */
    int32_t *acc = malloc(rowlen * sizeof *acc);        /* (size, c) */
    int rc = -1;
    if (!tmp || !acc) goto out;
    int taps = 0;
    if (w >= ax.ksize) {
        axis_fix_taps(&ax, w, size);
        taps = ax.ksize;
    }
    for (int y = y0; y < y1; y++) {
        const uint8_t *row = src + (size_t)y * w * c;
        uint8_t *o = tmp + (size_t)(y - y0) * rowlen;
        /* the usual tap counts as constants: 3 enlarging, 5 and 7 shrinking up to 3x */
        if (c == 3 && taps == 3) hpass_row(row, o, &ax, size, 3, 3);
        else if (c == 3 && taps == 5) hpass_row(row, o, &ax, size, 3, 5);
        else if (c == 3 && taps == 7) hpass_row(row, o, &ax, size, 3, 7);
        else if (c == 1 && taps == 3) hpass_row(row, o, &ax, size, 1, 3);
        else if (c == 1 && taps == 5) hpass_row(row, o, &ax, size, 1, 5);
        else if (c == 1 && taps == 7) hpass_row(row, o, &ax, size, 1, 7);
        else hpass_row(row, o, &ax, size, c, 0);
    }
    /* Vertical pass a whole row at a time (the inner loop vectorizes), then to planar. */
    size_t plane = (size_t)size * size;
    for (int i = 0; i < size; i++) {
        const int32_t *k = ay.k + (size_t)i * ay.ksize;
        for (size_t q = 0; q < rowlen; q++) acc[q] = 1 << (RESIZE_PREC - 1);
        for (int t = 0; t < ay.cnt[i]; t++) {
            const uint8_t *r = tmp + (size_t)(ay.lo[i] + t - y0) * rowlen;
            int32_t kt = k[t];
            for (size_t q = 0; q < rowlen; q++) acc[q] += r[q] * kt;
        }
        for (int ch = 0; ch < c; ch++) {
            uint8_t *o = dst + ch * plane + (size_t)i * size;
            for (int j = 0; j < size; j++) o[j] = clip8(acc[(size_t)j * c + ch]);
        }
    }
    rc = 0;
out:
    free(tmp);
    free(acc);
    axis_free(&ax);
    axis_free(&ay);
    return rc;
}

/* The (out, in) weight matrix of one axis: row o is the triangle filter stretched by the shrink
 * factor (never narrower than 1 input pixel), centred on output pixel o's centre mapped into the
 * input, sampled at every input pixel's centre and normalized to sum 1. */
static void ref_weights(int in, int out, double *W) {
    double scale = (double)in / out, fscale = scale < 1.0 ? 1.0 : scale;
    for (int o = 0; o < out; o++) {
        double center = (o + 0.5) * scale, sum = 0;
        for (int x = 0; x < in; x++) sum += W[(size_t)o * in + x] = triangle((x + 0.5 - center) / fscale);
        for (int x = 0; x < in; x++) W[(size_t)o * in + x] /= sum;
    }
}

int resize_eval_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    if (resize_long_side(w, h, size) > RESIZE_MAX_LONG_SIDE) return -1;
    int rw, rh, left, top;
    resize_eval_geometry(w, h, size, &rw, &rh, &left, &top);
    double *Wx = malloc((size_t)rw * w * sizeof *Wx);           /* (rw, w) */
    double *Wy = malloc((size_t)rh * h * sizeof *Wy);           /* (rh, h) */
    double *T = calloc((size_t)h * rw, sizeof *T);              /* (h, rw) */
    double *R = calloc((size_t)rh * rw, sizeof *R);             /* (rh, rw) */
    int rc = -1;
    if (!Wx || !Wy || !T || !R) goto out;
    ref_weights(w, rw, Wx);
    ref_weights(h, rh, Wy);
    for (int ch = 0; ch < c; ch++) {
        /* T = I Wx^T: every row resized horizontally; zero weights skipped only for speed */
        memset(T, 0, (size_t)h * rw * sizeof *T);
        for (int o = 0; o < rw; o++)
            for (int x = 0; x < w; x++) {
                double wt = Wx[(size_t)o * w + x];
                if (wt == 0) continue;
                for (int y = 0; y < h; y++) T[(size_t)y * rw + o] += wt * src[((size_t)y * w + x) * c + ch];
            }
        /* R = Wy T: then every column vertically */
        memset(R, 0, (size_t)rh * rw * sizeof *R);
        for (int o = 0; o < rh; o++)
            for (int y = 0; y < h; y++) {
                double wt = Wy[(size_t)o * h + y];
                if (wt == 0) continue;
                for (int x = 0; x < rw; x++) R[(size_t)o * rw + x] += wt * T[(size_t)y * rw + x];
            }
        for (int i = 0; i < size; i++)
            for (int j = 0; j < size; j++) {
                double v = floor(R[(size_t)(top + i) * rw + left + j] + 0.5);
                dst[((size_t)ch * size + i) * size + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
    rc = 0;
out:
    free(Wx);
    free(Wy);
    free(T);
    free(R);
    return rc;
}
