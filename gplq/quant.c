/*
 * quant.c: the fast quantizers of quant.h (LSQ forward/backward, the weight quantizer), the
 * calibration observer and torch-exact quantiles. Elementwise work is split over OpenMP
 * threads and written as plain counted loops that gcc vectorizes; every reduction is split the
 * same way whatever the number of threads, so results do not depend on it. The definitions are
 * in quant_ref.c; tests/test_quant.c compares the two and both against PyTorch.
 */
#include "gplq/quant.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384
/* lsq_backward's step sums: with fewer than LSQ_BLOCK steps, rows are cut into LSQ_PARTS fixed
 * parts summed separately and then in order; with more, threads take blocks of LSQ_BLOCK steps
 * and walk all rows in order. Either way the partition depends only on the shape. */
#define LSQ_PARTS 32
#define LSQ_BLOCK 16

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int quant_qn(int bits, int is_signed) { return is_signed ? -(1 << (bits - 1)) : 0; }
int quant_qp(int bits, int is_signed) { return is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }

/* Round half to even for |v| <= 2^22 under the default rounding mode, bit for bit nearbyintf
 * (and torch.round), the sign of zero included: adding 1.5 * 2^23 to |v| leaves no fraction
 * bits, so the FPU rounds (ties to even), subtracting it back is exact, and the sign goes back
 * on. Unlike nearbyintf, which is a libm call on baseline x86-64 (no SSE4.1 roundps), it
 * vectorizes. Callers clamp to [Qn, Qp] first, well inside the range. gcc keeps the two
 * operations because the flags have no -ffast-math. */
static inline float round_even(float v) { return copysignf((fabsf(v) + 12582912.0f) - 12582912.0f, v); }

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---------------------------------------------------------------------------------------- */
/* LSQ */

int lsq_init(lsq_quantizer *q, int bits, int is_signed, int channels, char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    if (bits < QUANT_BITS_MIN || bits > QUANT_BITS_MAX)
        return fail(err, errlen, "lsq_init: bits %d not in [2, 8]", bits);
    if (channels < 1) return fail(err, errlen, "lsq_init: %d channels", channels);
    float *step = malloc(sizeof(float) * channels), *dstep = calloc(channels, sizeof(float));
    if (!step || !dstep) {
        free(step);
        free(dstep);
        return fail(err, errlen, "lsq_init: out of memory for %d steps", channels);
    }
    for (int c = 0; c < channels; c++) step[c] = 1.0f;
    *q = (lsq_quantizer){.bits = bits, .is_signed = is_signed ? 1 : 0, .channels = channels,
                         .step = step, .dstep = dstep};
    return 0;
}

void lsq_free(lsq_quantizer *q) {
    free(q->step);
    free(q->dstep);
    memset(q, 0, sizeof *q);
}

int lsq_check_shape(const lsq_quantizer *q, int cols, char *err, size_t errlen) {
    if (cols < 1 || cols % q->channels)
        return fail(err, errlen, "lsq: %d columns are not a multiple of %d steps", cols,
                    q->channels);
    return 0;
}

void lsq_zero_grad(lsq_quantizer *q) { memset(q->dstep, 0, sizeof(float) * q->channels); }

void lsq_clamp_steps(lsq_quantizer *q) {
    for (int c = 0; c < q->channels; c++)
        if (!(q->step[c] >= QUANT_STEP_MIN)) q->step[c] = QUANT_STEP_MIN;
}

static double grad_scale(const lsq_quantizer *q, int rows, int cols) {
    return 1.0 / sqrt((double)rows * (cols / q->channels) * quant_qp(q->bits, q->is_signed));
}

float lsq_grad_scale(const lsq_quantizer *q, int rows, int cols) {
    return (float)grad_scale(q, rows, cols);
}

/* One step s over n consecutive values. Division, not multiplication by 1/s: x * (1/s) differs
 * from x / s in the last bit now and then, which moves values across rounding ties. */
static void fwd_span(float *out, const float *in, float s, int n, float qn, float qp) {
    for (int i = 0; i < n; i++) out[i] = round_even(clampf(in[i] / s, qn, qp)) * s;
}

/* One step per value (per channel). */
static void fwd_cols(float *out, const float *in, const float *step, int n, float qn, float qp) {
    for (int i = 0; i < n; i++) out[i] = round_even(clampf(in[i] / step[i], qn, qp)) * step[i];
}

void lsq_forward(const lsq_quantizer *q, float *out, const float *in, int rows, int cols) {
    float qn = (float)quant_qn(q->bits, q->is_signed), qp = (float)quant_qp(q->bits, q->is_signed);
    int C = q->channels, width = cols / C;
    #pragma omp parallel for if ((size_t)rows * cols > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * cols;
        float *o = out + (size_t)r * cols;
        if (width == 1) {
            fwd_cols(o, x, q->step, cols, qn, qp);
        } else {
            for (int c = 0; c < C; c++)
                fwd_span(o + (size_t)c * width, x + (size_t)c * width, q->step[c], width, qn, qp);
        }
    }
}

/* The backward of one value: returns dout * t (the step gradient's term before the scale g)
 * and gives the straight-through input gradient. Branch-free selects, so loops vectorize. */
static inline float bwd_elem(float *din, float d, float x, float s, float qn, float qp) {
    float v = x / s;
    float vc = clampf(v, qn, qp);
    int inside = v >= qn && v <= qp;
    float t = inside ? round_even(vc) - v : vc; /* outside, vc is the bound that was hit */
    *din = inside ? d : 0.0f;
    return d * t;
}

/* Sum of dout * t over n values sharing step s; writes din (which may alias dout). */
static float bwd_span(float *din, const float *dout, const float *in, float s, int n, float qn,
                      float qp) {
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += bwd_elem(&din[i], dout[i], in[i], s, qn, qp);
    return sum;
}

void lsq_backward(lsq_quantizer *q, float *din, const float *dout, const float *in, int rows,
                  int cols) {
    if (rows < 1) return; /* nothing to add (and g would be 1/0) */
    float qn = (float)quant_qn(q->bits, q->is_signed), qp = (float)quant_qp(q->bits, q->is_signed);
    int C = q->channels, width = cols / C;
    double g = grad_scale(q, rows, cols);
    const float *step = q->step;
    int par = (size_t)rows * cols > PAR_MIN;

    if (C < LSQ_BLOCK) {
        /* Few steps (per tensor, q|k|v): fixed row parts, one partial sum per part and step. */
        int nparts = rows < LSQ_PARTS ? rows : LSQ_PARTS;
        double part[LSQ_PARTS][LSQ_BLOCK];
        #pragma omp parallel for if (par)
        for (int p = 0; p < nparts; p++) {
            int r0 = (int)((long long)rows * p / nparts), r1 = (int)((long long)rows * (p + 1) / nparts);
            double acc[LSQ_BLOCK] = {0};
            for (int r = r0; r < r1; r++) {
                size_t o = (size_t)r * cols;
                for (int c = 0; c < C; c++) {
                    size_t oc = o + (size_t)c * width;
                    acc[c] += bwd_span(din + oc, dout + oc, in + oc, step[c], width, qn, qp);
                }
            }
            memcpy(part[p], acc, sizeof acc);
        }
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int p = 0; p < nparts; p++) sum += part[p][c];
            q->dstep[c] += (float)(g * sum);
        }
        return;
    }

    /* Many steps (per channel): each thread owns blocks of steps and walks every row in order. */
    int nblocks = (C + LSQ_BLOCK - 1) / LSQ_BLOCK;
    #pragma omp parallel for if (par)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * LSQ_BLOCK, c1 = c0 + LSQ_BLOCK < C ? c0 + LSQ_BLOCK : C;
        double acc[LSQ_BLOCK] = {0};
        for (int r = 0; r < rows; r++) {
            size_t o = (size_t)r * cols;
            if (width == 1) {
                float *dx = din + o;
                const float *d = dout + o, *x = in + o;
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += (double)bwd_elem(&dx[c], d[c], x[c], step[c], qn, qp);
            } else {
                for (int c = c0; c < c1; c++) {
                    size_t oc = o + (size_t)c * width;
                    acc[c - c0] += bwd_span(din + oc, dout + oc, in + oc, step[c], width, qn, qp);
                }
            }
        }
        for (int c = c0; c < c1; c++) q->dstep[c] += (float)(g * acc[c - c0]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Quantiles */

float quant_quantile(const float *sorted, size_t n, float q) {
    if (!(q >= 0.0f)) q = 0.0f; /* also NaN: a float-to-integer conversion of NaN is undefined */
    if (q > 1.0f) q = 1.0f;
    float rank = q * (float)(n - 1);
    size_t lo = (size_t)rank, hi = (size_t)ceilf(rank);
    if (hi > n - 1) hi = n - 1;
    float w = rank - (float)lo;
    float b = sorted[lo], d = sorted[hi] - b;
    /* torch's lerp: from the nearer end, for accuracy; torch 1.13's CPU kernel fuses the
     * multiply and the add (one rounding), and so must we to match it bit for bit. */
    return fabsf(w) < 0.5f ? fmaf(w, d, b) : fmaf(-d, 1.0f - w, sorted[hi]);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------------------------------- */
/* Calibration observer */

int lsq_observer_init(lsq_observer *o, lsq_init_kind kind, int channels, size_t cap,
                      uint64_t seed, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    if (kind != LSQ_INIT_ABSMAX && kind != LSQ_INIT_PERCENTILE)
        return fail(err, errlen, "lsq_observer_init: unknown kind %d", (int)kind);
    if (channels < 1) return fail(err, errlen, "lsq_observer_init: %d channels", channels);
    o->kind = kind;
    o->channels = channels;
    o->cap = cap ? cap : LSQ_OBSERVER_CAP_DEFAULT;
    rng_seed(&o->rng, seed);
    o->seen = calloc(channels, sizeof *o->seen);
    if (kind == LSQ_INIT_ABSMAX) {
        o->absmax = calloc(channels, sizeof *o->absmax);
    } else {
        o->sample = calloc(channels, sizeof *o->sample);
        o->held = calloc(channels, sizeof *o->held);
        o->alloc = calloc(channels, sizeof *o->alloc);
    }
    if (!o->seen || (kind == LSQ_INIT_ABSMAX ? !o->absmax : !o->sample || !o->held || !o->alloc)) {
        lsq_observer_free(o);
        return fail(err, errlen, "lsq_observer_init: out of memory for %d channels", channels);
    }
    return 0;
}

void lsq_observer_free(lsq_observer *o) {
    if (o->sample)
        for (int c = 0; c < o->channels; c++) free(o->sample[c]);
    free(o->sample);
    free(o->held);
    free(o->alloc);
    free(o->absmax);
    free(o->seen);
    memset(o, 0, sizeof *o);
}

int lsq_observer_update(lsq_observer *o, const float *in, int rows, int cols, char *err,
                        size_t errlen) {
    int C = o->channels;
    if (rows < 0 || cols < 1 || cols % C)
        return fail(err, errlen, "lsq_observer_update: shape (%d, %d) does not fit %d steps", rows,
                    cols, C);
    int width = cols / C;
    if (o->kind == LSQ_INIT_PERCENTILE) {
        /* Grow every sample to what this batch can fill before touching anything, so running out
         * of memory leaves the observer as it was. */
        for (int c = 0; c < C; c++) {
            size_t want = o->held[c] + (size_t)rows * width;
            if (want > o->cap) want = o->cap;
            if (want <= o->alloc[c]) continue;
            size_t n = o->alloc[c] ? o->alloc[c] : 4096;
            while (n < want) n *= 2;
            if (n > o->cap) n = o->cap;
            float *p = realloc(o->sample[c], sizeof(float) * n);
            if (!p) return fail(err, errlen, "lsq_observer_update: out of memory (%zu values)", n);
            o->sample[c] = p;
            o->alloc[c] = n;
        }
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float v = in[(size_t)r * cols + j];
            int c = j / width;
            if (!isfinite(v)) {
                o->nonfinite++;
                continue;
            }
            if (o->kind == LSQ_INIT_ABSMAX) {
                if (fabsf(v) > o->absmax[c]) o->absmax[c] = fabsf(v);
            } else if (o->held[c] < o->cap) {
                o->sample[c][o->held[c]++] = v;
            } else {
                /* Algorithm R: the (seen+1)-th value replaces a random slot with probability
                 * cap / (seen + 1). The modulo's bias is below 2^-40 for any real count. */
                uint64_t k = rng_next(&o->rng) % (o->seen[c] + 1);
                if (k < o->cap) o->sample[c][k] = v;
            }
            o->seen[c]++;
        }
    return 0;
}

int lsq_observer_percentiles(const lsq_observer *o, int c, float *p1, float *p99, char *err,
                             size_t errlen) {
    if (o->kind != LSQ_INIT_PERCENTILE)
        return fail(err, errlen, "lsq_observer_percentiles: not a percentile observer");
    if (c < 0 || c >= o->channels)
        return fail(err, errlen, "lsq_observer_percentiles: step %d of %d", c, o->channels);
    size_t n = o->held[c];
    if (n == 0) return fail(err, errlen, "lsq observer: step %d saw no calibration values", c);
    /* Sort a copy: the sample's slot order is part of the reservoir's state. */
    float *s = malloc(sizeof(float) * n);
    if (!s) return fail(err, errlen, "lsq_observer_percentiles: out of memory");
    memcpy(s, o->sample[c], sizeof(float) * n);
    qsort(s, n, sizeof(float), cmp_float);
    *p1 = quant_quantile(s, n, 0.01f);
    *p99 = quant_quantile(s, n, 0.99f);
    free(s);
    return 0;
}

int lsq_observer_steps(const lsq_observer *o, lsq_quantizer *q, char *err, size_t errlen) {
    if (q->channels != o->channels)
        return fail(err, errlen, "lsq_observer_steps: quantizer has %d steps, observer %d",
                    q->channels, o->channels);
    float qp = (float)quant_qp(q->bits, q->is_signed);
    float *s = malloc(sizeof(float) * o->channels);
    if (!s) return fail(err, errlen, "lsq_observer_steps: out of memory");
    for (int c = 0; c < o->channels; c++) {
        if (o->seen[c] == 0) {
            free(s);
            return fail(err, errlen, "lsq observer: step %d saw no calibration values", c);
        }
        if (o->kind == LSQ_INIT_ABSMAX) {
            s[c] = o->absmax[c] / qp;
        } else {
            float p1, p99;
            if (lsq_observer_percentiles(o, c, &p1, &p99, err, errlen)) {
                free(s);
                return -1;
            }
            s[c] = (q->is_signed ? fmaxf(fabsf(p1), fabsf(p99)) : p99) / qp;
        }
        if (!(s[c] >= QUANT_STEP_MIN)) s[c] = QUANT_STEP_MIN; /* see QUANT_STEP_MIN */
    }
    memcpy(q->step, s, sizeof(float) * o->channels);
    free(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Stage 2 weight quantizer */

const float quant_weight_default_pcts[QUANT_WEIGHT_NPCT] = {0.999f, 0.9999f, 0.99999f, 1.0f};

/* One row: absw is cols floats of scratch. */
static void weight_row(float *step, int8_t *codes, float *deq, int *choice, const float *w,
                       int cols, float qn, float qp, const float *pcts, int npct, float *absw) {
    for (int i = 0; i < cols; i++) absw[i] = fabsf(w[i]);
    qsort(absw, cols, sizeof(float), cmp_float);
    int best = 0;
    double best_err = 0.0;
    float best_s = 0.0f;
    for (int j = 0; j < npct; j++) {
        float s = quant_quantile(absw, cols, pcts[j]) / qp;
        if (!(s >= QUANT_STEP_MIN)) s = QUANT_STEP_MIN;
        /* The error in double: the choice must not hinge on the order of a float sum. */
        double e = 0.0;
        for (int i = 0; i < cols; i++) {
            double d = (double)w[i] - (double)(round_even(clampf(w[i] / s, qn, qp)) * s);
            e += d * d;
        }
        if (j == 0 || e < best_err) {
            best = j;
            best_err = e;
            best_s = s;
        }
    }
    *step = best_s;
    if (choice) *choice = best;
    for (int i = 0; i < cols; i++) {
        codes[i] = (int8_t)round_even(clampf(w[i] / best_s, qn, qp));
        /* from the integer code, as quant_dequantize_ref computes it: +0, never -0 */
        if (deq) deq[i] = (float)codes[i] * best_s;
    }
}

int quant_weight(float *steps, int8_t *codes, float *deq, int *choice, const float *w, int rows,
                 int cols, int bits, const float *pcts, int npct, char *err, size_t errlen) {
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
    int nthreads = omp_get_max_threads();
    float *scratch = malloc(sizeof(float) * (size_t)cols * nthreads);
    if (!scratch) return fail(err, errlen, "quant_weight: out of memory");
    float qn = (float)quant_qn(bits, 1), qp = (float)quant_qp(bits, 1);
    #pragma omp parallel for num_threads(nthreads) if ((size_t)rows * cols > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        weight_row(&steps[r], codes + o, deq ? deq + o : NULL, choice ? &choice[r] : NULL, w + o,
                   cols, qn, qp, pcts, npct, scratch + (size_t)cols * omp_get_thread_num());
    }
    free(scratch);
    return 0;
}
