/*
 * test_quant.c: the quantizers of gplq/quant.h.
 *
 * - LSQ forward/backward on hand-computed cases (the rounding tie rule, the clamp bounds, the
 *   step-gradient terms and the gradient scale), since finite differences say nothing useful
 *   about a function made of rounding steps;
 * - the fast LSQ (quant.c) against the reference (quant_ref.c) on odd shapes, every
 *   granularity and both strategies of the backward's reductions, in place and not, and with 1
 *   and 2 threads (the results must not depend on the thread count);
 * - both against PyTorch (tests/fixtures/quant_ref.safetensors, from tests/ref/gen_quant_ref.py):
 *   LSQ outputs and autograd gradients, torch.quantile, step initialization from calibration
 *   batches, and the stage-2 weight quantizer's choices, steps, codes and dequantized weights;
 * - the calibration observer's reservoir sample and its errors;
 * - the packed format: every code value round trips, known byte patterns, rejected codes.
 * The max errors against PyTorch are printed.
 */
#include <omp.h>
#include <stdint.h>

#include "engine/rng.h"
#include "gplq/quant.h"
#include "gplq/quant_ref.h"
#include "io/safetensors.h"
#include "tests/test.h"

#ifndef GPLQ_SRC_DIR
#define GPLQ_SRC_DIR "."
#endif
#define FIXTURE GPLQ_SRC_DIR "/tests/fixtures/quant_ref.safetensors"

static rng_t rng;
static char err[256];

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* max |a - b| / (max |b| + tiny) */
static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

/* Distance in units in the last place (0 for equal values, +0 and -0 included). */
static int64_t ulps(float a, float b) {
    if (a == b) return 0;
    if (isnan(a) || isnan(b)) return INT64_MAX;
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia, ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return oa > ob ? oa - ob : ob - oa;
}

static int64_t max_ulps(const float *a, const float *b, size_t n) {
    int64_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t u = ulps(a[i], b[i]);
        if (u > m) m = u;
    }
    return m;
}

#define CHECK_REL(a, b, n, tol)                                                                 \
    do {                                                                                        \
        double e_ = relerr(a, b, n);                                                            \
        CHECK_MSG(e_ <= (tol), "%s vs %s: relative error %.3g > %.3g", #a, #b, e_, (double)(tol)); \
    } while (0)

#define CHECK_SAME(a, b, n)                                                                     \
    CHECK_MSG(memcmp(a, b, sizeof(*(a)) * (n)) == 0, "%s and %s differ", #a, #b)

/* ---------------------------------------------------------------------------------------- */
/* hand-computed cases */

/* One value through a quantizer with one step: out, din for dout = 1, and the step gradient
 * term t (dstep / g with g = 1/sqrt(Qp) for a single element). Both versions must agree. */
static void one(int bits, int is_signed, float s, float x, float *out, float *din, float *t) {
    lsq_quantizer q;
    CHECK(lsq_init(&q, bits, is_signed, 1, err, sizeof err) == 0);
    q.step[0] = s;
    float d = 1.0f, o2, d2;
    lsq_forward(&q, out, &x, 1, 1);
    lsq_forward_ref(&q, &o2, &x, 1, 1);
    CHECK(*out == o2);
    lsq_backward(&q, din, &d, &x, 1, 1);
    float g = lsq_grad_scale(&q, 1, 1);
    *t = q.dstep[0] / g;
    lsq_zero_grad(&q);
    lsq_backward_ref(&q, &d2, &d, &x, 1, 1);
    CHECK(*din == d2);
    CHECK_NEAR(q.dstep[0] / g, *t, 1e-6);
    lsq_free(&q);
}

TEST(lsq_hand_computed) {
    float o, d, t;
    /* 4-bit signed, s = 0.5: [Qn, Qp] = [-8, 7] */
    one(4, 1, 0.5f, 1.3f, &o, &d, &t); /* 2.6 -> 3 */
    CHECK(o == 1.5f);
    CHECK(d == 1.0f);
    CHECK_NEAR(t, 3.0 - 2.6, 1e-6);
    one(4, 1, 0.5f, 5.0f, &o, &d, &t); /* 10 -> clamped at 7 */
    CHECK(o == 3.5f);
    CHECK(d == 0.0f);
    CHECK_NEAR(t, 7, 1e-6);
    one(4, 1, 0.5f, -5.0f, &o, &d, &t); /* -10 -> clamped at -8 */
    CHECK(o == -4.0f);
    CHECK(d == 0.0f);
    CHECK_NEAR(t, -8, 1e-6);
    one(4, 1, 0.5f, 3.5f, &o, &d, &t); /* exactly Qp: inside, t = 0 */
    CHECK(o == 3.5f);
    CHECK(d == 1.0f);
    CHECK_NEAR(t, 0, 1e-7);
    one(4, 1, 0.5f, -4.0f, &o, &d, &t); /* exactly Qn: inside */
    CHECK(o == -4.0f);
    CHECK(d == 1.0f);
    one(4, 1, 0.5f, 3.75f, &o, &d, &t); /* 7.5: a tie, but past Qp: clamped */
    CHECK(o == 3.5f);
    CHECK(d == 0.0f);
    CHECK_NEAR(t, 7, 1e-6);
    /* ties round to even, as torch.round */
    one(4, 1, 0.5f, 0.25f, &o, &d, &t); /* 0.5 -> 0 */
    CHECK(o == 0.0f);
    CHECK_NEAR(t, -0.5, 1e-7);
    one(4, 1, 0.5f, 0.75f, &o, &d, &t); /* 1.5 -> 2 */
    CHECK(o == 1.0f);
    CHECK_NEAR(t, 0.5, 1e-7);
    one(4, 1, 0.5f, 1.25f, &o, &d, &t); /* 2.5 -> 2 */
    CHECK(o == 1.0f);
    CHECK_NEAR(t, -0.5, 1e-7);
    one(4, 1, 0.5f, -1.25f, &o, &d, &t); /* -2.5 -> -2 */
    CHECK(o == -1.0f);
    CHECK_NEAR(t, 0.5, 1e-7);
    /* 4-bit unsigned, s = 0.5: [0, 15] */
    one(4, 0, 0.5f, -1.0f, &o, &d, &t); /* below 0: clamped, t = Qn = 0 */
    CHECK(o == 0.0f);
    CHECK(d == 0.0f);
    CHECK(t == 0.0f);
    one(4, 0, 0.5f, 8.0f, &o, &d, &t); /* 16 -> 15 */
    CHECK(o == 7.5f);
    CHECK(d == 0.0f);
    CHECK_NEAR(t, 15, 1e-6);
    one(4, 0, 0.5f, 7.5f, &o, &d, &t); /* exactly 15: inside */
    CHECK(o == 7.5f);
    CHECK(d == 1.0f);
    /* 2-bit signed: [-2, 1]; 8-bit unsigned: [0, 255] */
    one(2, 1, 1.0f, -2.6f, &o, &d, &t);
    CHECK(o == -2.0f && d == 0.0f);
    CHECK_NEAR(t, -2, 1e-6);
    one(8, 0, 0.01f, 2.6f, &o, &d, &t); /* 260 -> 255 */
    CHECK(o == 255 * 0.01f && d == 0.0f);
    CHECK_NEAR(t, 255, 1e-4);
    CHECK(quant_qn(4, 1) == -8 && quant_qp(4, 1) == 7 && quant_qn(4, 0) == 0 && quant_qp(4, 0) == 15);
    CHECK(quant_qn(2, 1) == -2 && quant_qp(2, 1) == 1 && quant_qp(8, 0) == 255 && quant_qn(8, 1) == -128);
}

TEST(lsq_gradient_scale_and_sums) {
    /* 4-bit signed, rows 2, cols 6. Per channel: 2 elements per step; 3 groups of 2 columns: 4;
     * per tensor: 12. g = 1 / sqrt(n * 7). */
    lsq_quantizer q;
    CHECK(lsq_init(&q, 4, 1, 6, err, sizeof err) == 0);
    CHECK_NEAR(lsq_grad_scale(&q, 2, 6), 1 / sqrt(2 * 7.0), 1e-7);
    lsq_free(&q);
    CHECK(lsq_init(&q, 4, 1, 3, err, sizeof err) == 0);
    CHECK_NEAR(lsq_grad_scale(&q, 2, 6), 1 / sqrt(4 * 7.0), 1e-7);
    /* steps 0.5, 1, 0.25 over column pairs; x/s: row 0 = 2.6, 10 | 1.3, -0.5 | 2, 0.6
     *                                        row 1 = -3.4, 0 | 0.2, 7 | -40, 1 */
    q.step[0] = 0.5f; q.step[1] = 1.0f; q.step[2] = 0.25f;
    float x[12] = {1.3f, 5.0f, 1.3f, -0.5f, 0.5f, 0.15f, -1.7f, 0.0f, 0.2f, 7.0f, -10.0f, 0.25f};
    float dout[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, din[12], out[12];
    lsq_forward(&q, out, x, 2, 6);
    float want[12] = {1.5f, 3.5f, 1.0f, -0.0f, 0.5f, 0.25f, -1.5f, 0.0f, 0.0f, 7.0f, -2.0f, 0.25f};
    for (int i = 0; i < 12; i++) CHECK_MSG(out[i] == want[i], "out[%d] = %g, want %g", i, out[i], want[i]);
    lsq_backward(&q, din, dout, x, 2, 6);
    /* terms t: 0.4, 7 (clamped), -0.3, -0.5 (tie -0.5 -> -0, t = 0.5), 0, 0.4, 0.4, 0, -0.2, 0,
     * -8 (clamped), 0 */
    double g = 1 / sqrt(28.0);
    double s0 = 1 * 0.4 + 2 * 7 + 7 * (3.4 - 3) + 8 * 0;         /* -3.4 -> -3, t = 0.4 */
    double s1 = 3 * (1 - 1.3) + 4 * (0 + 0.5) + 9 * (0 - 0.2) + 10 * 0;
    double s2 = 5 * 0 + 6 * (1 - 0.6) + 11 * (-8) + 12 * 0;
    CHECK_NEAR(q.dstep[0], g * s0, 1e-5);
    CHECK_NEAR(q.dstep[1], g * s1, 1e-5);
    CHECK_NEAR(q.dstep[2], g * s2, 1e-5);
    float want_din[12] = {1, 0, 3, 4, 5, 6, 7, 8, 9, 10, 0, 12};
    for (int i = 0; i < 12; i++) CHECK_MSG(din[i] == want_din[i], "din[%d] = %g", i, din[i]);
    /* backward accumulates into dstep */
    lsq_backward(&q, din, dout, x, 2, 6);
    CHECK_NEAR(q.dstep[2], 2 * g * s2, 2e-5);
    lsq_free(&q);
}

TEST(lsq_errors_and_steps) {
    lsq_quantizer q;
    CHECK(lsq_init(&q, 1, 1, 4, err, sizeof err) == -1 && q.step == NULL);
    CHECK(strstr(err, "bits 1") != NULL);
    CHECK(lsq_init(&q, 9, 0, 4, err, sizeof err) == -1);
    CHECK(lsq_init(&q, 4, 1, 0, err, sizeof err) == -1);
    CHECK(lsq_init(&q, 4, 1, 3, NULL, 0) == 0);
    CHECK(q.step[0] == 1.0f && q.dstep[2] == 0.0f);
    CHECK(lsq_check_shape(&q, 12, err, sizeof err) == 0);
    CHECK(lsq_check_shape(&q, 13, err, sizeof err) == -1);
    CHECK(strstr(err, "13") != NULL);
    /* an empty batch adds nothing (not 0 * 1/sqrt(0) = NaN) */
    float none[3];
    lsq_backward(&q, none, none, none, 0, 3);
    lsq_backward_ref(&q, none, none, none, 0, 3);
    CHECK(q.dstep[0] == 0.0f && q.dstep[1] == 0.0f && q.dstep[2] == 0.0f);
    q.step[0] = 0.0f; q.step[1] = -1.0f; q.step[2] = NAN;
    lsq_clamp_steps(&q);
    for (int c = 0; c < 3; c++) CHECK(q.step[c] == QUANT_STEP_MIN);
    lsq_free(&q);
    lsq_free(&q); /* safe on a zeroed struct */
}

/* ---------------------------------------------------------------------------------------- */
/* fast against reference */

/* Random input for steps: codes spread over the range and beyond, with exact ties and zeros. */
static float *lsq_input(const lsq_quantizer *q, int rows, int cols) {
    int width = cols / q->channels, qn = quant_qn(q->bits, q->is_signed), qp = quant_qp(q->bits, q->is_signed);
    float *x = malloc(sizeof(float) * rows * cols);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float s = q->step[j / width];
            float v = rng_normal(&rng) * (qp - qn) / 3.0f + (qp + qn) / 2.0f;
            uint32_t k = rng_below(&rng, 10);
            if (k == 0) v = (float)(qn + (int)rng_below(&rng, qp - qn)) + 0.5f; /* a tie */
            if (k == 1) v = 0.0f;
            if (k == 2) v = (float)(rng_below(&rng, 2) ? qp : qn);
            x[(size_t)r * cols + j] = v * s;
        }
    return x;
}

/* Runs fast and reference on one configuration; returns the dstep relative error. */
static double fast_vs_ref(int rows, int cols, int channels, int bits, int is_signed) {
    lsq_quantizer q;
    CHECK(lsq_init(&q, bits, is_signed, channels, err, sizeof err) == 0);
    CHECK(lsq_check_shape(&q, cols, err, sizeof err) == 0);
    for (int c = 0; c < channels; c++) q.step[c] = 0.01f + rng_uniform(&rng);
    size_t n = (size_t)rows * cols;
    float *x = lsq_input(&q, rows, cols), *dout = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) dout[i] = rng_normal(&rng);
    float *y = zeros(n), *yr = zeros(n), *dx = zeros(n), *dxr = zeros(n), *ds = zeros(channels),
          *dsr = zeros(channels);
    lsq_forward(&q, y, x, rows, cols);
    lsq_forward_ref(&q, yr, x, rows, cols);
    /* bit for bit, the sign of zero included */
    CHECK_MSG(memcmp(y, yr, sizeof(float) * n) == 0,
              "forward (%d, %d) / %d steps, %d bits: %lld ulps", rows, cols, channels, bits,
              (long long)max_ulps(y, yr, n));
    /* in place: out aliasing in */
    float *xi = malloc(sizeof(float) * n);
    memcpy(xi, x, sizeof(float) * n);
    lsq_forward(&q, xi, xi, rows, cols);
    CHECK(memcmp(xi, yr, sizeof(float) * n) == 0);
    free(xi);

    lsq_backward(&q, dx, dout, x, rows, cols);
    memcpy(ds, q.dstep, sizeof(float) * channels);
    lsq_zero_grad(&q);
    lsq_backward_ref(&q, dxr, dout, x, rows, cols);
    memcpy(dsr, q.dstep, sizeof(float) * channels);
    CHECK_MSG(memcmp(dx, dxr, sizeof(float) * n) == 0, "din (%d, %d) / %d differs", rows, cols, channels);
    double e = relerr(ds, dsr, channels);
    CHECK_MSG(e < 1e-5, "dstep (%d, %d) / %d steps, %d bits: relative error %.3g", rows, cols,
              channels, bits, e);
    /* in place: din aliasing dout, both versions */
    float *d2 = malloc(sizeof(float) * n);
    memcpy(d2, dout, sizeof(float) * n);
    lsq_zero_grad(&q);
    lsq_backward(&q, d2, d2, x, rows, cols);
    CHECK(memcmp(d2, dx, sizeof(float) * n) == 0);
    CHECK(memcmp(q.dstep, ds, sizeof(float) * channels) == 0);
    memcpy(d2, dout, sizeof(float) * n);
    lsq_zero_grad(&q);
    lsq_backward_ref(&q, d2, d2, x, rows, cols);
    CHECK(memcmp(d2, dxr, sizeof(float) * n) == 0);
    CHECK(memcmp(q.dstep, dsr, sizeof(float) * channels) == 0);
    /* the same bits with two threads (the reductions are split by shape, not by threads) */
    int nt = omp_get_max_threads();
    omp_set_num_threads(2);
    lsq_zero_grad(&q);
    lsq_backward(&q, d2, dout, x, rows, cols);
    CHECK(memcmp(d2, dx, sizeof(float) * n) == 0);
    CHECK_MSG(memcmp(q.dstep, ds, sizeof(float) * channels) == 0, "dstep depends on threads");
    lsq_forward(&q, d2, x, rows, cols);
    CHECK(memcmp(d2, y, sizeof(float) * n) == 0);
    omp_set_num_threads(nt);
    free(d2);
    free(x); free(dout); free(y); free(yr); free(dx); free(dxr); free(ds); free(dsr);
    lsq_free(&q);
    return e;
}

TEST(lsq_fast_matches_reference) {
    /* (rows, cols, steps): per tensor, per channel, groups; few steps (row parts, fewer rows
     * than parts too) and many (column blocks, widths 1 and 3, not multiples of the block);
     * big enough ones take the parallel path. */
    static const int shapes[][3] = {{37, 24, 1}, {37, 24, 24}, {37, 24, 3}, {301, 77, 77},
                                    {301, 77, 7}, {500, 60, 20}, {5, 33, 11}, {1, 7, 1},
                                    {3, 5, 5}, {211, 96, 1}, {70, 48, 16}};
    static const int bits[] = {2, 3, 4, 8};
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int b = 0; b < 4; b++)
            for (int sg = 0; sg < 2; sg++) {
                double e = fast_vs_ref(shapes[s][0], shapes[s][1], shapes[s][2], bits[b], sg);
                if (e > worst) worst = e;
            }
    printf("  lsq fast vs reference: forward and din bit-exact, dstep max relative error %.2g\n", worst);
}

/* ---------------------------------------------------------------------------------------- */
/* against PyTorch */

static st_file fx;
static int fx_open(void) {
    if (fx.map) return 0;
    int rc = st_open(&fx, FIXTURE, err, sizeof err);
    CHECK_MSG(rc == 0, "%s: %s (regenerate with tests/ref/gen_quant_ref.py)", FIXTURE, err);
    return rc;
}

/* A copy of fixture tensor name as floats (caller frees), its size in *n; NULL if missing. */
static float *fx_get(const char *name, size_t *n) {
    const st_tensor *t = st_find(&fx, name);
    CHECK_MSG(t != NULL, "fixture has no tensor %s", name);
    if (!t) return NULL;
    float *v = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    st_to_f32(t, v);
    if (n) *n = (size_t)t->numel;
    return v;
}

TEST(lsq_matches_pytorch) {
    if (fx_open()) return;
    int rows = atoi(st_meta(&fx, "rows")), cols = atoi(st_meta(&fx, "cols"));
    int groups = atoi(st_meta(&fx, "groups"));
    static const char *kinds[] = {"tensor", "channel", "group"};
    int64_t worst_fwd = 0;
    double worst_dx = 0, worst_ds = 0;
    int cases = 0, fwd_bits_differ = 0, signed_zeros = 0;
    for (int sg = 1; sg >= 0; sg--)
        for (int k = 0; k < 3; k++)
            for (int bits = 2; bits <= 8; bits += bits == 2 ? 2 : 4) {
                int channels = k == 0 ? 1 : k == 1 ? cols : groups;
                char name[128], pre[96];
                snprintf(pre, sizeof pre, "lsq.%s.%s.b%d", sg ? "signed" : "unsigned", kinds[k], bits);
#define GET(v, key)                                                                            \
    snprintf(name, sizeof name, "%s.%s", pre, key);                                           \
    float *v = fx_get(name, NULL);
                GET(x, "x") GET(dout, "dout") GET(step, "step") GET(out, "out") GET(dx, "dx")
                GET(dstep, "dstep")
#undef GET
                if (!x || !dout || !step || !out || !dx || !dstep) return;
                size_t n = (size_t)rows * cols;
                lsq_quantizer q;
                CHECK(lsq_init(&q, bits, sg, channels, err, sizeof err) == 0);
                memcpy(q.step, step, sizeof(float) * channels);
                float *y = zeros(n), *d = zeros(n);
                for (int ref = 0; ref < 2; ref++) {
                    (ref ? lsq_forward_ref : lsq_forward)(&q, y, x, rows, cols);
                    int64_t u = max_ulps(y, out, n);
                    CHECK_MSG(u <= 1, "%s forward%s: %lld ulps", pre, ref ? " (ref)" : "", (long long)u);
                    if (u > worst_fwd) worst_fwd = u;
                    /* bit for bit, but for the sign of zero: the paper's round_pass,
                     * (round(v) - v) + v, turns torch.round's -0 into +0 */
                    for (size_t i = 0; i < n; i++)
                        if (memcmp(&y[i], &out[i], 4) && !(y[i] == 0 && out[i] == 0)) fwd_bits_differ++;
                    for (size_t i = 0; i < n; i++) signed_zeros += y[i] == 0 && signbit(y[i]) != signbit(out[i]);
                    lsq_zero_grad(&q);
                    (ref ? lsq_backward_ref : lsq_backward)(&q, d, dout, x, rows, cols);
                    double e1 = relerr(d, dx, n), e2 = relerr(q.dstep, dstep, channels);
                    CHECK_MSG(e1 <= 1e-5, "%s dx%s: relative error %.3g", pre, ref ? " (ref)" : "", e1);
                    CHECK_MSG(e2 <= 1e-5, "%s dstep%s: relative error %.3g", pre, ref ? " (ref)" : "", e2);
                    if (e1 > worst_dx) worst_dx = e1;
                    if (e2 > worst_ds) worst_ds = e2;
                }
                free(x); free(dout); free(step); free(out); free(dx); free(dstep); free(y); free(d);
                lsq_free(&q);
                cases++;
            }
    CHECK(cases == 18);
    CHECK(fwd_bits_differ == 0);
    printf("  lsq vs torch (%d cases): forward max %lld ulp, bit for bit but %d zeros' signs; "
           "dx max rel %.2g, dstep max rel %.2g\n",
           cases, (long long)worst_fwd, signed_zeros, worst_dx, worst_ds);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

TEST(quantile_matches_pytorch) {
    if (fx_open()) return;
    size_t n = 0, nq = 0;
    float *x = fx_get("quantile.x", &n), *q = fx_get("quantile.q", &nq), *want = fx_get("quantile.out", NULL);
    if (!x || !q || !want) return;
    qsort(x, n, sizeof(float), cmp_float);
    for (size_t i = 0; i < nq; i++) {
        float got = quant_quantile(x, n, q[i]);
        CHECK_MSG(ulps(got, want[i]) == 0, "quantile(%g) = %.9g, torch %.9g", q[i], got, want[i]);
    }
    /* edges: one value; q = 0 and 1 are the ends; out-of-range q is clamped */
    float one = 3.0f;
    CHECK(quant_quantile(&one, 1, 0.5f) == 3.0f);
    CHECK(quant_quantile(x, n, 0.0f) == x[0] && quant_quantile(x, n, 1.0f) == x[n - 1]);
    CHECK(quant_quantile(x, n, 2.0f) == x[n - 1] && quant_quantile(x, n, NAN) == x[0]);
    free(x); free(q); free(want);
}

/* Feeds the three calibration batches of the fixture to an observer and sets steps. */
static int observe(lsq_quantizer *q, lsq_observer *o, const char *data) {
    for (int b = 0; b < 3; b++) {
        char name[64];
        snprintf(name, sizeof name, "calib.%s.%d", data, b);
        const st_tensor *t = st_find(&fx, name);
        CHECK_MSG(t != NULL, "fixture has no %s", name);
        if (!t) return -1;
        float *x = fx_get(name, NULL);
        int rc = lsq_observer_update(o, x, (int)t->shape[0], (int)t->shape[1], err, sizeof err);
        CHECK_MSG(rc == 0, "%s", err);
        free(x);
    }
    int rc = lsq_observer_steps(o, q, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    return rc;
}

TEST(step_init_matches_pytorch) {
    if (fx_open()) return;
    int cols = atoi(st_meta(&fx, "cols")), groups = atoi(st_meta(&fx, "groups"));
    static const struct { const char *name, *data; int bits, is_signed, kind, steps; } cases[] = {
        {"channel.signed.b4", "x", 4, 1, LSQ_INIT_ABSMAX, 0},
        {"channel.signed.b8", "x", 8, 1, LSQ_INIT_ABSMAX, 0},
        {"channel.unsigned.b4", "u", 4, 0, LSQ_INIT_ABSMAX, 0},
        {"tensor.signed.b4", "x", 4, 1, LSQ_INIT_PERCENTILE, 1},
        {"tensor.signed.b8", "x", 8, 1, LSQ_INIT_PERCENTILE, 1},
        {"group.signed.b4", "x", 4, 1, LSQ_INIT_PERCENTILE, -1},
        {"tensor.unsigned.b4", "u", 4, 0, LSQ_INIT_PERCENTILE, 1},
        {"tensor.unsigned.b8", "u", 8, 0, LSQ_INIT_PERCENTILE, 1},
    };
    int64_t worst = 0;
    int floored = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int channels = cases[i].steps == 0 ? cols : cases[i].steps < 0 ? groups : 1;
        lsq_quantizer q;
        lsq_observer o;
        CHECK(lsq_init(&q, cases[i].bits, cases[i].is_signed, channels, err, sizeof err) == 0);
        CHECK(lsq_observer_init(&o, cases[i].kind, channels, 0, 7, err, sizeof err) == 0);
        char name[96];
        snprintf(name, sizeof name, "init.%s.step", cases[i].name);
        float *want = fx_get(name, NULL);
        if (want && observe(&q, &o, cases[i].data) == 0) {
            int64_t u = max_ulps(q.step, want, channels);
            CHECK_MSG(u == 0, "%s: steps %lld ulps from torch", cases[i].name, (long long)u);
            if (u > worst) worst = u;
            for (int c = 0; c < channels; c++) floored += q.step[c] == QUANT_STEP_MIN;
            if (cases[i].kind == LSQ_INIT_PERCENTILE) {
                float *p1 = NULL, *p99 = NULL;
                snprintf(name, sizeof name, "init.%s.p1", cases[i].name);
                p1 = fx_get(name, NULL);
                snprintf(name, sizeof name, "init.%s.p99", cases[i].name);
                p99 = fx_get(name, NULL);
                for (int c = 0; c < channels && p1 && p99; c++) {
                    float a, b;
                    CHECK(lsq_observer_percentiles(&o, c, &a, &b, err, sizeof err) == 0);
                    CHECK_MSG(a == p1[c] && b == p99[c], "%s step %d: p1 %.9g p99 %.9g, torch %.9g %.9g",
                              cases[i].name, c, a, b, p1[c], p99[c]);
                }
                free(p1);
                free(p99);
            }
        }
        free(want);
        lsq_observer_free(&o);
        lsq_free(&q);
    }
    /* the fixture's unsigned data has a column that is always 0: its step is the floor */
    CHECK(floored == 1);
    printf("  step init vs torch: max %lld ulp (%d step floored at QUANT_STEP_MIN)\n",
           (long long)worst, floored);
}

TEST(observer_reservoir_and_errors) {
    /* 3 steps of 2 columns; 3 batches of 2000 rows: 12000 values per step, a sample of 1000.
     * Values are their own index, so the sample shows where it came from. */
    lsq_observer o, o2;
    CHECK(lsq_observer_init(&o, LSQ_INIT_PERCENTILE, 3, 1000, 42, err, sizeof err) == 0);
    CHECK(lsq_observer_init(&o2, LSQ_INIT_PERCENTILE, 3, 1000, 42, err, sizeof err) == 0);
    float *x = malloc(sizeof(float) * 2000 * 6);
    for (int b = 0; b < 3; b++) {
        for (int r = 0; r < 2000; r++)
            for (int j = 0; j < 6; j++) x[r * 6 + j] = (float)((b * 2000 + r) * 2 + (j & 1));
        CHECK(lsq_observer_update(&o, x, 2000, 6, err, sizeof err) == 0);
        CHECK(lsq_observer_update(&o2, x, 2000, 6, err, sizeof err) == 0);
    }
    for (int c = 0; c < 3; c++) {
        CHECK(o.seen[c] == 12000 && o.held[c] == 1000);
        double mean = 0;
        int first = 0;
        for (int i = 0; i < 1000; i++) {
            mean += o.sample[c][i] / 1000.0;
            first += o.sample[c][i] < 4000;
        }
        /* uniform over 0..11999: mean 6000 (sd ~110), a third from the first batch (sd ~15) */
        CHECK_MSG(fabs(mean - 6000) < 500, "reservoir mean %g", mean);
        CHECK_MSG(abs(first - 333) < 80, "%d of 1000 from the first batch", first);
        CHECK(memcmp(o.sample[c], o2.sample[c], sizeof(float) * 1000) == 0); /* same seed */
        float p1, p99;
        CHECK(lsq_observer_percentiles(&o, c, &p1, &p99, err, sizeof err) == 0);
        /* 12000 values 0..11999: p1 ~ 120, p99 ~ 11880; the sample's rank error is ~0.3% (sd) */
        CHECK_MSG(fabsf(p1 - 120) < 200 && fabsf(p99 - 11880) < 200, "p1 %g p99 %g", p1, p99);
    }
    /* non-finite values are skipped and counted */
    float bad[6] = {NAN, INFINITY, -INFINITY, 1, 2, 3};
    CHECK(lsq_observer_update(&o, bad, 1, 6, err, sizeof err) == 0);
    CHECK(o.nonfinite == 3 && o.seen[0] == 12000 && o.seen[1] == 12001 && o.seen[2] == 12002);
    /* shape errors leave it unchanged */
    CHECK(lsq_observer_update(&o, bad, 1, 5, err, sizeof err) == -1);
    CHECK(strstr(err, "(1, 5)") != NULL);
    lsq_quantizer q;
    CHECK(lsq_init(&q, 4, 1, 2, err, sizeof err) == 0);
    CHECK(lsq_observer_steps(&o, &q, err, sizeof err) == -1); /* 2 steps vs 3 */
    lsq_free(&q);
    float lo, hi;
    CHECK(lsq_observer_percentiles(&o, 3, &lo, &hi, err, sizeof err) == -1); /* no step 3 */
    lsq_observer_free(&o);
    lsq_observer_free(&o2);
    /* a step that saw nothing is an error, and the quantizer keeps its steps */
    CHECK(lsq_observer_init(&o, LSQ_INIT_ABSMAX, 2, 0, 1, err, sizeof err) == 0);
    CHECK(lsq_init(&q, 4, 1, 2, err, sizeof err) == 0);
    float nan2[2] = {NAN, 5.0f};
    CHECK(lsq_observer_update(&o, nan2, 1, 2, err, sizeof err) == 0);
    CHECK(lsq_observer_steps(&o, &q, err, sizeof err) == -1);
    CHECK(strstr(err, "step 0 saw no calibration values") != NULL);
    CHECK(q.step[0] == 1.0f && q.step[1] == 1.0f);
    float p1, p99;
    CHECK(lsq_observer_percentiles(&o, 0, &p1, &p99, err, sizeof err) == -1); /* wrong kind */
    lsq_free(&q);
    lsq_observer_free(&o);
    CHECK(lsq_observer_init(&o, LSQ_INIT_ABSMAX, 0, 0, 1, err, sizeof err) == -1);
    free(x);
}

/* ---------------------------------------------------------------------------------------- */
/* weight quantizer */

TEST(weight_quantizer_matches_pytorch) {
    if (fx_open()) return;
    int count = atoi(st_meta(&fx, "wq.count"));
    CHECK(count >= 1);
    int rows_total = 0, mism = 0, per_pct[QUANT_WEIGHT_NPCT] = {0};
    int64_t worst_step = 0, worst_deq = 0, worst_clip = 0;
    for (int i = 0; i < count; i++) {
        char name[64];
        snprintf(name, sizeof name, "wq.%d.bits", i);
        int bits = atoi(st_meta(&fx, name));
        snprintf(name, sizeof name, "wq.%d.w", i);
        const st_tensor *tw = st_find(&fx, name);
        CHECK(tw != NULL && tw->ndim == 2);
        if (!tw) return;
        int rows = (int)tw->shape[0], cols = (int)tw->shape[1];
        size_t n = (size_t)rows * cols;
        float *w = fx_get(name, NULL);
#define GET(v, key)                                                                            \
    snprintf(name, sizeof name, "wq.%d.%s", i, key);                                          \
    float *v = fx_get(name, NULL);
        GET(clip, "clip") GET(step, "step") GET(codes, "codes") GET(deq, "deq") GET(choice, "choice")
#undef GET
        if (!w || !clip || !step || !codes || !deq || !choice) return;
        float *s = zeros(rows), *dq = zeros(n), *absw = zeros(cols);
        int8_t *c8 = malloc(n);
        int *ch = malloc(sizeof(int) * rows);
        for (int ref = 0; ref < 2; ref++) {
            int rc = (ref ? quant_weight_ref : quant_weight)(s, c8, dq, ch, w, rows, cols, bits, NULL, 0,
                                                             err, sizeof err);
            CHECK_MSG(rc == 0, "%s", err);
            for (int r = 0; r < rows; r++) {
                if (ch[r] != (int)choice[r]) mism++;
                CHECK_MSG(ch[r] == (int)choice[r], "wq.%d row %d%s: chose %d, torch %d", i, r,
                          ref ? " (ref)" : "", ch[r], (int)choice[r]);
                if (!ref) per_pct[ch[r]]++;
            }
            int64_t u = max_ulps(s, step, rows), v = max_ulps(dq, deq, n);
            if (u > worst_step) worst_step = u;
            if (v > worst_deq) worst_deq = v;
            CHECK_MSG(u == 0 && v == 0, "wq.%d%s: steps %lld ulps, deq %lld ulps", i, ref ? " (ref)" : "",
                      (long long)u, (long long)v);
            int bad = 0;
            for (size_t k = 0; k < n; k++) bad += c8[k] != (int8_t)codes[k];
            CHECK_MSG(bad == 0, "wq.%d: %d codes differ", i, bad);
        }
        /* the clipping values themselves */
        for (int r = 0; r < rows; r++) {
            for (int k = 0; k < cols; k++) absw[k] = fabsf(w[(size_t)r * cols + k]);
            qsort(absw, cols, sizeof(float), cmp_float);
            for (int j = 0; j < QUANT_WEIGHT_NPCT; j++) {
                int64_t u = ulps(quant_quantile(absw, cols, quant_weight_default_pcts[j]),
                                 clip[r * QUANT_WEIGHT_NPCT + j]);
                if (u > worst_clip) worst_clip = u;
            }
        }
        CHECK_MSG(worst_clip == 0, "clip values %lld ulps from torch", (long long)worst_clip);
        /* end to end through the packed format */
        quant_type t = quant_type_for_bits(bits);
        uint8_t *packed = malloc(quant_row_bytes(t, cols));
        float *back = zeros(cols);
        for (int r = 0; r < rows; r++) {
            CHECK(quant_pack_ref(t, packed, c8 + (size_t)r * cols, cols, err, sizeof err) == 0);
            quant_dequantize_ref(t, back, packed, s[r], cols);
            CHECK(memcmp(back, dq + (size_t)r * cols, sizeof(float) * cols) == 0);
        }
        free(packed); free(back);
        rows_total += rows;
        free(w); free(clip); free(step); free(codes); free(deq); free(choice);
        free(s); free(dq); free(absw); free(c8); free(ch);
    }
    CHECK(mism == 0);
    printf("  weight quantizer vs torch: %d rows, choices per percentile %d/%d/%d/%d, %d differ; "
           "steps max %lld ulp, deq max %lld ulp, clips max %lld ulp\n",
           rows_total, per_pct[0], per_pct[1], per_pct[2], per_pct[3], mism, (long long)worst_step,
           (long long)worst_deq, (long long)worst_clip);
}

TEST(weight_quantizer_fast_matches_reference) {
    static const int shapes[][3] = {{37, 53, 4}, {300, 129, 3}, {5, 2, 8}, {1, 1, 2}, {64, 257, 5}};
    static const float pcts[3] = {0.9f, 0.99f, 1.0f};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int rows = shapes[k][0], cols = shapes[k][1], bits = shapes[k][2];
        size_t n = (size_t)rows * cols;
        float *w = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) {
            float u = rng_uniform(&rng) + 1e-3f;
            w[i] = rng_normal(&rng) / sqrtf(-2.0f * logf(u) / 2.0f); /* Student-t, 2 dof */
        }
        for (int variant = 0; variant < 2; variant++) {
            const float *p = variant ? pcts : NULL;
            float *s = zeros(rows), *sr = zeros(rows), *d = zeros(n), *dr = zeros(n);
            int8_t *c = malloc(n), *cr = malloc(n);
            int *ch = malloc(sizeof(int) * rows), *chr = malloc(sizeof(int) * rows);
            CHECK(quant_weight(s, c, d, ch, w, rows, cols, bits, p, 3, err, sizeof err) == 0);
            CHECK(quant_weight_ref(sr, cr, dr, chr, w, rows, cols, bits, p, 3, err, sizeof err) == 0);
            CHECK_SAME(s, sr, rows);
            CHECK_SAME(c, cr, n);
            CHECK_SAME(d, dr, n);
            CHECK_SAME(ch, chr, rows);
            /* deq is code * step, codes in range; optional outputs may be NULL */
            int qn = quant_qn(bits, 1), qp = quant_qp(bits, 1), ok = 1;
            for (size_t i = 0; i < n; i++)
                ok &= c[i] >= qn && c[i] <= qp && d[i] == c[i] * s[i / cols];
            CHECK(ok);
            CHECK(quant_weight(s, c, NULL, NULL, w, rows, cols, bits, p, 3, err, sizeof err) == 0);
            CHECK_SAME(c, cr, n);
            free(s); free(sr); free(d); free(dr); free(c); free(cr); free(ch); free(chr);
        }
        free(w);
    }
    /* errors */
    float w[4] = {1, 2, 3, 4}, s[2], bad_pct[2] = {0.5f, 1.5f};
    int8_t c[4];
    CHECK(quant_weight(s, c, NULL, NULL, w, 2, 2, 9, NULL, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "bits 9") != NULL);
    CHECK(quant_weight(s, c, NULL, NULL, w, 2, 2, 4, bad_pct, 2, err, sizeof err) == -1);
    CHECK(strstr(err, "1.5") != NULL);
    CHECK(quant_weight_ref(s, c, NULL, NULL, w, 2, 2, 4, bad_pct, 2, err, sizeof err) == -1);
    CHECK(quant_weight(s, c, NULL, NULL, w, 0, 2, 4, NULL, 0, err, sizeof err) == -1);
    CHECK(quant_weight(s, c, NULL, NULL, w, 2, 2, 4, bad_pct, 0, err, sizeof err) == -1);
    /* a zero row gets the floor step and zero codes, not 0 / 0 */
    float z[3] = {0, 0, 0}, zd[3];
    int zc;
    CHECK(quant_weight(s, c, zd, &zc, z, 1, 3, 4, NULL, 0, err, sizeof err) == 0);
    CHECK(s[0] == QUANT_STEP_MIN && c[0] == 0 && zd[2] == 0.0f && zc == 0);
}

/* ---------------------------------------------------------------------------------------- */
/* packed format */

TEST(pack_round_trips_every_code) {
    CHECK(quant_type_for_bits(2) == QUANT_I4 && quant_type_for_bits(4) == QUANT_I4);
    CHECK(quant_type_for_bits(5) == QUANT_I8 && quant_type_for_bits(8) == QUANT_I8);
    CHECK(strcmp(quant_traits[QUANT_I4].name, "I4") == 0 && strcmp(quant_traits[QUANT_I8].name, "I8") == 0);
    CHECK(quant_row_bytes(QUANT_I4, 5) == 3 && quant_row_bytes(QUANT_I4, 6) == 3);
    CHECK(quant_row_bytes(QUANT_I8, 5) == 5 && quant_row_bytes(QUANT_I4, 0) == 0);
    for (int bits = 2; bits <= 8; bits++) {
        quant_type t = quant_type_for_bits(bits);
        int qn = quant_qn(bits, 1), qp = quant_qp(bits, 1);
        /* every code, at both nibble positions, and an odd length */
        int8_t codes[600], back[600];
        int n = 0;
        for (int rep = 0; rep < 2; rep++)
            for (int v = qn; v <= qp; v++) codes[n++] = (int8_t)v;
        codes[n++] = (int8_t)qn; /* odd */
        uint8_t packed[600];
        memset(packed, 0xAA, sizeof packed);
        CHECK(quant_pack_ref(t, packed, codes, n, err, sizeof err) == 0);
        quant_unpack_ref(t, back, packed, n);
        CHECK_MSG(memcmp(codes, back, n) == 0, "bits %d: round trip", bits);
        float deq[600];
        quant_dequantize_ref(t, deq, packed, 0.25f, n);
        int ok = 1;
        for (int i = 0; i < n; i++) ok &= deq[i] == codes[i] * 0.25f;
        CHECK(ok);
        if (t == QUANT_I4) CHECK((packed[(n - 1) / 2] & 0xF0) == 0); /* odd: zero high nibble */
        CHECK(packed[quant_row_bytes(t, n)] == 0xAA);                 /* nothing past the row */
    }
    /* the byte patterns that define the format */
    uint8_t b[4] = {0};
    CHECK(quant_pack_ref(QUANT_I4, b, (const int8_t[]){1, -2}, 2, err, sizeof err) == 0);
    CHECK(b[0] == 0xE1);
    CHECK(quant_pack_ref(QUANT_I4, b, (const int8_t[]){-8, 7, -1}, 3, err, sizeof err) == 0);
    CHECK(b[0] == 0x78 && b[1] == 0x0F);
    CHECK(quant_pack_ref(QUANT_I8, b, (const int8_t[]){-128, 127, -1, 0}, 4, err, sizeof err) == 0);
    CHECK(b[0] == 0x80 && b[1] == 0x7F && b[2] == 0xFF && b[3] == 0x00);
    int8_t c[4];
    quant_unpack_ref(QUANT_I4, c, (const uint8_t[]){0x9F, 0x08}, 4);
    CHECK(c[0] == -1 && c[1] == -7 && c[2] == -8 && c[3] == 0);
    /* a code that does not fit is refused and nothing is written */
    memset(b, 0x55, sizeof b);
    CHECK(quant_pack_ref(QUANT_I4, b, (const int8_t[]){3, 8}, 2, err, sizeof err) == -1);
    CHECK(strstr(err, "index 1") != NULL && b[0] == 0x55);
    CHECK(quant_pack_ref(QUANT_I4, b, (const int8_t[]){-9}, 1, err, sizeof err) == -1);
}

__attribute__((constructor(200))) static void seed(void) { rng_seed(&rng, 4321); }
__attribute__((destructor)) static void close_fixture(void) { st_close(&fx); }

TEST_MAIN()
