/*
 * quant_ref.c: the definitions of the quantizers, as plain loops with double accumulators,
 * libm's nearbyintf (round half to even under the default rounding mode, like torch.round) and
 * no threads. Slow on purpose: what the fast quant.c must agree with (tests/test_quant.c).
 *
 * Also the reference, and so far only, pack/unpack of the packed weight format (quant.h): in
 * the ggml manner these functions are the format's definition.
 */
#include "gplq/quant_ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The code of v = x / s: clamp to [qn, qp], then round half to even. Clamping first is the
 * same as rounding first, because the bounds are integers. */
static float code_of(float v, float qn, float qp) {
    float c = v < qn ? qn : v > qp ? qp : v;
    return nearbyintf(c);
}

void lsq_forward_ref(const lsq_quantizer *q, float *out, const float *in, int rows, int cols) {
    float qn = (float)quant_qn(q->bits, q->is_signed), qp = (float)quant_qp(q->bits, q->is_signed);
    int width = cols / q->channels;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            size_t i = (size_t)r * cols + j;
            float s = q->step[j / width];
            out[i] = code_of(in[i] / s, qn, qp) * s;
        }
}

void lsq_backward_ref(lsq_quantizer *q, float *din, const float *dout, const float *in, int rows,
                      int cols) {
    if (rows < 1) return; /* nothing to add (and g would be 1/0) */
    float qn = (float)quant_qn(q->bits, q->is_signed), qp = (float)quant_qp(q->bits, q->is_signed);
    int width = cols / q->channels;
    double g = 1.0 / sqrt((double)rows * width * qp);
    for (int c = 0; c < q->channels; c++) {
        double sum = 0.0;
        for (int r = 0; r < rows; r++)
            for (int j = c * width; j < (c + 1) * width; j++) {
                size_t i = (size_t)r * cols + j;
                float s = q->step[c], v = in[i] / s, d = dout[i];
                int inside = v >= qn && v <= qp;
                double t = inside ? (double)nearbyintf(v) - (double)v : (v < qn ? qn : qp);
                sum += (double)d * t;
                din[i] = inside ? d : 0.0f; /* after reading dout[i]: din may alias dout */
            }
        q->dstep[c] += (float)(g * sum);
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int quant_weight_ref(float *steps, int8_t *codes, float *deq, int *choice, const float *w,
                     int rows, int cols, int bits, const float *pcts, int npct, char *err,
                     size_t errlen) {
    if (!pcts) {
        pcts = quant_weight_default_pcts;
        npct = QUANT_WEIGHT_NPCT;
    }
    if (rows < 1 || cols < 1) return fail(err, errlen, "quant_weight: bad shape (%d, %d)", rows, cols);
    if (bits < QUANT_BITS_MIN || bits > QUANT_BITS_MAX)
        return fail(err, errlen, "quant_weight: bits %d not in [2, 8]", bits);
    if (npct < 1) return fail(err, errlen, "quant_weight: no clipping percentiles");
    for (int j = 0; j < npct; j++)
        if (!(pcts[j] >= 0.0f && pcts[j] <= 1.0f))
            return fail(err, errlen, "quant_weight: percentile %g not in [0, 1]", pcts[j]);
    float *absw = malloc(sizeof(float) * cols);
    if (!absw) return fail(err, errlen, "quant_weight: out of memory");
    float qn = (float)quant_qn(bits, 1), qp = (float)quant_qp(bits, 1);
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        for (int i = 0; i < cols; i++) absw[i] = fabsf(wr[i]);
        qsort(absw, cols, sizeof(float), cmp_float);
        int best = 0;
        double best_err = 0.0;
        float best_s = 0.0f;
        for (int j = 0; j < npct; j++) {
            float s = quant_quantile(absw, cols, pcts[j]) / qp;
            if (!(s >= QUANT_STEP_MIN)) s = QUANT_STEP_MIN;
            double e = 0.0;
            for (int i = 0; i < cols; i++) {
                double d = (double)wr[i] - (double)(code_of(wr[i] / s, qn, qp) * s);
                e += d * d;
            }
            if (j == 0 || e < best_err) {
                best = j;
                best_err = e;
                best_s = s;
            }
        }
        steps[r] = best_s;
        if (choice) choice[r] = best;
        for (int i = 0; i < cols; i++) {
            int8_t c = (int8_t)code_of(wr[i] / best_s, qn, qp);
            codes[(size_t)r * cols + i] = c;
            if (deq) deq[(size_t)r * cols + i] = (float)c * best_s;
        }
    }
    free(absw);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The packed weight format */

const quant_type_traits quant_traits[QUANT_NTYPES] = {
    [QUANT_I4] = {.name = "I4", .bits_max = 4, .codes_per_byte = 2},
    [QUANT_I8] = {.name = "I8", .bits_max = 8, .codes_per_byte = 1},
};

quant_type quant_type_for_bits(int bits) { return bits <= 4 ? QUANT_I4 : QUANT_I8; }

size_t quant_row_bytes(quant_type t, int n) {
    return ((size_t)n + quant_traits[t].codes_per_byte - 1) / quant_traits[t].codes_per_byte;
}

int quant_pack_ref(quant_type t, uint8_t *dst, const int8_t *codes, int n, char *err,
                   size_t errlen) {
    int lo = -(1 << (quant_traits[t].bits_max - 1)), hi = (1 << (quant_traits[t].bits_max - 1)) - 1;
    /* Check everything before writing, so a failed call leaves dst as it was. */
    for (int i = 0; i < n; i++)
        if (codes[i] < lo || codes[i] > hi)
            return fail(err, errlen, "quant_pack: code %d at index %d does not fit %s [%d, %d]",
                        codes[i], i, quant_traits[t].name, lo, hi);
    if (t == QUANT_I8) {
        for (int i = 0; i < n; i++) dst[i] = (uint8_t)(codes[i] & 0xFF);
        return 0;
    }
    for (int i = 0; i < n; i += 2) {
        unsigned low = (unsigned)codes[i] & 0xFu;
        unsigned high = i + 1 < n ? (unsigned)codes[i + 1] & 0xFu : 0u;
        dst[i / 2] = (uint8_t)(low | high << 4);
    }
    return 0;
}

/* Code i of a packed row. */
static int code_at(quant_type t, const uint8_t *src, int i) {
    if (t == QUANT_I8) return (int)src[i] - ((src[i] & 0x80) << 1); /* 0x80..0xFF: -128..-1 */
    int nib = (src[i / 2] >> (4 * (i & 1))) & 0xF;
    return (nib ^ 8) - 8; /* sign-extend the nibble: 8..15 are -8..-1 */
}

void quant_unpack_ref(quant_type t, int8_t *codes, const uint8_t *src, int n) {
    for (int i = 0; i < n; i++) codes[i] = (int8_t)code_at(t, src, i);
}

void quant_dequantize_ref(quant_type t, float *out, const uint8_t *src, float step, int n) {
    for (int i = 0; i < n; i++) out[i] = (float)code_at(t, src, i) * step;
}
