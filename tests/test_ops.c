/*
 * test_ops.c: each fast op (ops.c) against its reference (ops_ref.c), forward and backward, on
 * shapes that are not multiples of anything; and each reference backward against central
 * finite differences of its forward, so the reference itself is checked too. The linear layers'
 * BF16 setting (matmul_set_precision) is the BF16 product, on the calling thread only.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gemm_bf16.h"
#include "engine/ops.h"
#include "engine/ops_ref.h"
#include "engine/rng.h"
#include "tests/test.h"

static rng_t rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&rng) * scale;
    return x;
}
static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

/* max |a - b| / (max |b| + tiny) */
static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

#define CHECK_REL(a, b, n, tol)                                                       \
    do {                                                                              \
        double e_ = relerr(a, b, n);                                                  \
        CHECK_MSG(e_ <= (tol), "%s vs %s: relative error %.3g > %.3g", #a, #b, e_, (double)(tol)); \
    } while (0)

TEST(matmul_matches_reference) {
    int N = 37, C = 29, OC = 43;
    float *x = randn(N * C, 1), *w = randn(OC * C, 1), *b = randn(OC, 1), *d = randn(N * OC, 1);
    float *y = zeros(N * OC), *yr = zeros(N * OC);
    matmul_forward(y, x, w, b, N, C, OC);
    matmul_forward_ref(yr, x, w, b, N, C, OC);
    CHECK_REL(y, yr, N * OC, 1e-5);
    float *dx = zeros(N * C), *dw = zeros(OC * C), *db = zeros(OC);
    float *dxr = zeros(N * C), *dwr = zeros(OC * C), *dbr = zeros(OC);
    matmul_backward(dx, dw, db, d, x, w, N, C, OC);
    matmul_backward_ref(dxr, dwr, dbr, d, x, w, N, C, OC);
    CHECK_REL(dx, dxr, N * C, 1e-5);
    CHECK_REL(dw, dwr, OC * C, 1e-5);
    CHECK_REL(db, dbr, OC, 1e-5);
    free(x); free(w); free(b); free(d); free(y); free(yr);
    free(dx); free(dw); free(db); free(dxr); free(dwr); free(dbr);
}

/* matmul_forward of a (N, C) x (OC, C) problem on a thread of its own: what a thread that
 * never set a precision computes. */
struct mm_job { float *y; const float *x, *w, *b; int N, C, OC; };
static void *mm_thread(void *p) {
    struct mm_job *j = p;
    matmul_forward(j->y, j->x, j->w, j->b, j->N, j->C, j->OC);
    return NULL;
}

TEST(matmul_in_bf16_is_gemm_bf16_on_this_thread_only) {
    int N = 37, C = 29, OC = 43;
    float *x = randn(N * C, 1), *w = randn(OC * C, 1), *b = randn(OC, 1), *d = randn(N * OC, 1);
    float *y32 = zeros(N * OC), *y16 = zeros(N * OC), *want = zeros(N * OC), *yt = zeros(N * OC);
    matmul_forward(y32, x, w, b, N, C, OC);
    CHECK(matmul_set_precision(MATMUL_BF16) == MATMUL_FP32); /* the default */
    matmul_forward(y16, x, w, b, N, C, OC);
    for (int n = 0; n < N; n++) memcpy(want + n * OC, b, sizeof(float) * OC);
    gemm_bf16(0, 1, N, OC, C, 1.0f, x, C, w, C, 1.0f, want, OC);
    CHECK(memcmp(y16, want, sizeof(float) * N * OC) == 0);
    CHECK(memcmp(y16, y32, sizeof(float) * N * OC) != 0); /* the rounding happened */
    CHECK_REL(y16, y32, N * OC, 1e-2);
    /* the backward's two products: the same calls, accumulating */
    float *dx = zeros(N * C), *dw = zeros(OC * C), *dxw = zeros(N * C), *dww = zeros(OC * C);
    matmul_backward(dx, dw, NULL, d, x, w, N, C, OC);
    gemm_bf16(0, 0, N, C, OC, 1.0f, d, OC, w, C, 1.0f, dxw, C);
    gemm_bf16(1, 0, OC, C, N, 1.0f, d, OC, x, C, 1.0f, dww, C);
    CHECK(memcmp(dx, dxw, sizeof(float) * N * C) == 0);
    CHECK(memcmp(dw, dww, sizeof(float) * OC * C) == 0);
    /* another thread keeps its own setting, FP32 */
    struct mm_job j = {yt, x, w, b, N, C, OC};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, mm_thread, &j) == 0 && pthread_join(t, NULL) == 0);
    CHECK(memcmp(yt, y32, sizeof(float) * N * OC) == 0);
    /* and setting it back gives FP32 again */
    CHECK(matmul_set_precision(MATMUL_FP32) == MATMUL_BF16);
    matmul_forward(yt, x, w, b, N, C, OC);
    CHECK(memcmp(yt, y32, sizeof(float) * N * OC) == 0);
    free(x); free(w); free(b); free(d); free(y32); free(y16); free(want); free(yt);
    free(dx); free(dw); free(dxw); free(dww);
}

TEST(layernorm_matches_reference) {
    int N = 300, C = 77; /* enough rows to take the parallel path */
    float *x = randn(N * C, 3), *w = randn(C, 1), *b = randn(C, 1), *d = randn(N * C, 1);
    for (int i = 0; i < N * C; i++) x[i] += 5; /* a mean far from 0 */
    float *y = zeros(N * C), *yr = zeros(N * C), *m = zeros(N), *r = zeros(N), *mr = zeros(N), *rr = zeros(N);
    layernorm_forward(y, m, r, x, w, b, N, C, 1e-6f);
    layernorm_forward_ref(yr, mr, rr, x, w, b, N, C, 1e-6f);
    CHECK_REL(y, yr, N * C, 1e-5);
    float *dx = zeros(N * C), *dw = zeros(C), *db = zeros(C), *dxr = zeros(N * C), *dwr = zeros(C), *dbr = zeros(C);
    layernorm_backward(dx, dw, db, d, x, w, m, r, N, C);
    layernorm_backward_ref(dxr, dwr, dbr, d, x, w, mr, rr, N, C);
    CHECK_REL(dx, dxr, N * C, 1e-4);
    CHECK_REL(dw, dwr, C, 1e-4);
    CHECK_REL(db, dbr, C, 1e-5);
    free(x); free(w); free(b); free(d); free(y); free(yr); free(m); free(r); free(mr); free(rr);
    free(dx); free(dw); free(db); free(dxr); free(dwr); free(dbr);
}

TEST(gelu_matches_reference) {
    size_t n = 40000;
    float *x = randn(n, 3), *d = randn(n, 1), *y = zeros(n), *yr = zeros(n), *dx = zeros(n), *dxr = zeros(n);
    x[0] = 0; x[1] = -12; x[2] = 12; x[3] = 1e-30f; x[4] = -100; x[5] = 100;
    gelu_forward(y, x, n);
    gelu_forward_ref(yr, x, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(y[i] - yr[i]) / (1 + fabs(yr[i]));
        if (e > worst) worst = e;
    }
    CHECK_MSG(worst < 2e-7 * 4, "gelu forward error %.3g", worst);
    gelu_backward(dx, x, d, n);
    gelu_backward_ref(dxr, x, d, n);
    CHECK_REL(dx, dxr, n, 1e-6);
    free(x); free(d); free(y); free(yr); free(dx); free(dxr);
}

TEST(attention_matches_reference) {
    int B = 3, T = 11, NH = 3, C = 24;
    size_t nq = (size_t)B * T * 3 * C, na = (size_t)B * NH * T * T, no = (size_t)B * T * C;
    float *qkv = randn(nq, 1), *att = zeros(na), *attr = zeros(na);
    attention_softmax_forward(att, qkv, B, T, C, NH);
    attention_softmax_forward_ref(attr, qkv, B, T, C, NH);
    CHECK_REL(att, attr, na, 1e-5);
    float *o = zeros(no), *or_ = zeros(no);
    attention_value_forward(o, att, qkv, B, T, C, NH);
    attention_value_forward_ref(or_, attr, qkv, B, T, C, NH);
    CHECK_REL(o, or_, no, 1e-5);
    float *dout = randn(no, 1), *datt = zeros(na), *dattr = zeros(na), *dq = zeros(nq), *dqr = zeros(nq);
    attention_value_backward(datt, dq, dout, att, qkv, B, T, C, NH);
    attention_value_backward_ref(dattr, dqr, dout, att, qkv, B, T, C, NH);
    CHECK_REL(datt, dattr, na, 1e-5);
    CHECK_REL(dq, dqr, nq, 1e-5);
    attention_softmax_backward_ref(dqr, datt, att, qkv, B, T, C, NH);
    attention_softmax_backward(dq, datt, att, qkv, B, T, C, NH); /* clobbers datt: last */
    CHECK_REL(dq, dqr, nq, 1e-5);
    free(qkv); free(att); free(attr); free(o); free(or_); free(dout); free(datt); free(dattr);
    free(dq); free(dqr);
}

/* Central finite differences of L = sum(dout * f(x)) against the analytic dx, on a random
 * subset of coordinates; f writes its output given x. */
typedef void (*fwd_fn)(float *out, const float *x, void *ctx);
static double fd_check(fwd_fn f, void *ctx, float *x, size_t nx, const float *dout, size_t nout,
                       const float *dx, float eps) {
    float *y = zeros(nout);
    double worst = 0;
    for (int it = 0; it < 40; it++) {
        size_t i = rng_below(&rng, (uint32_t)nx);
        float save = x[i];
        double lp = 0, lm = 0;
        x[i] = save + eps; f(y, x, ctx);
        for (size_t j = 0; j < nout; j++) lp += (double)dout[j] * y[j];
        x[i] = save - eps; f(y, x, ctx);
        for (size_t j = 0; j < nout; j++) lm += (double)dout[j] * y[j];
        x[i] = save;
        double num = (lp - lm) / (2 * eps);
        double e = fabs(num - dx[i]) / (fabs(num) + fabs(dx[i]) + 1e-2);
        if (e > worst) worst = e;
    }
    free(y);
    return worst;
}

struct dims { int B, T, C, NH, N, OC; const float *w, *b, *other; };

static void ln_fwd(float *out, const float *x, void *p) {
    struct dims *d = p;
    float m[64], r[64];
    layernorm_forward_ref(out, m, r, x, d->w, d->b, d->N, d->C, 1e-6f);
}
static void soft_fwd(float *out, const float *qkv, void *p) {
    struct dims *d = p;
    attention_softmax_forward_ref(out, qkv, d->B, d->T, d->C, d->NH);
}
static void value_fwd(float *out, const float *qkv, void *p) {
    struct dims *d = p;
    attention_value_forward_ref(out, d->other, qkv, d->B, d->T, d->C, d->NH);
}
static void value_att_fwd(float *out, const float *att, void *p) {
    struct dims *d = p;
    attention_value_forward_ref(out, att, d->other, d->B, d->T, d->C, d->NH);
}
static void ce_fwd(float *out, const float *logits, void *p) {
    struct dims *d = p;
    float probs[64];
    out[0] = crossentropy_forward_backward(probs, NULL, logits, (const int *)d->w, d->N, d->OC,
                                           0.1f, 1.0f);
}
static void gelu_fwd(float *out, const float *x, void *p) { gelu_forward_ref(out, x, ((struct dims *)p)->N); }
static void matmul_fwd(float *out, const float *x, void *p) {
    struct dims *d = p;
    matmul_forward_ref(out, x, d->w, d->b, d->N, d->C, d->OC);
}

TEST(reference_backwards_match_finite_differences) {
    struct dims d = {.B = 2, .T = 5, .C = 8, .NH = 2, .N = 6, .OC = 7};
    /* layernorm */
    float *w = randn(8, 1), *b = randn(8, 1), *x = randn(6 * 8, 2), *dout = randn(6 * 8, 1), *dx = zeros(6 * 8);
    float m[6], r[6], y[48];
    d.w = w; d.b = b;
    layernorm_forward_ref(y, m, r, x, w, b, 6, 8, 1e-6f);
    layernorm_backward_ref(dx, NULL, NULL, dout, x, w, m, r, 6, 8);
    double e = fd_check(ln_fwd, &d, x, 48, dout, 48, dx, 1e-2f);
    CHECK_MSG(e < 1e-2, "layernorm fd error %.3g", e);
    /* gelu */
    float *g = zeros(48);
    gelu_backward_ref(g, x, dout, 48);
    d.N = 48;
    e = fd_check(gelu_fwd, &d, x, 48, dout, 48, g, 1e-2f);
    CHECK_MSG(e < 1e-2, "gelu fd error %.3g", e);
    /* matmul */
    float *mw = randn(7 * 8, 1), *mb = randn(7, 1), *dmo = randn(6 * 7, 1), *dmx = zeros(48);
    d.N = 6; d.w = mw; d.b = mb;
    matmul_backward_ref(dmx, NULL, NULL, dmo, x, mw, 6, 8, 7);
    e = fd_check(matmul_fwd, &d, x, 48, dmo, 42, dmx, 1e-2f);
    CHECK_MSG(e < 1e-2, "matmul fd error %.3g", e);
    /* attention softmax (q and k through the scores) */
    size_t nq = 2 * 5 * 3 * 8, na = 2 * 2 * 5 * 5;
    float *qkv = randn(nq, 1), *att = zeros(na), *datt = randn(na, 1), *dq = zeros(nq);
    attention_softmax_forward_ref(att, qkv, 2, 5, 8, 2);
    attention_softmax_backward_ref(dq, datt, att, qkv, 2, 5, 8, 2);
    e = fd_check(soft_fwd, &d, qkv, nq, datt, na, dq, 1e-2f);
    CHECK_MSG(e < 1e-2, "attention softmax fd error %.3g", e);
    /* attention value: through v, and through the attention weights */
    size_t no = 2 * 5 * 8;
    float *vo = randn(no, 1), *dqv = zeros(nq), *datt2 = zeros(na);
    d.other = att;
    attention_value_backward_ref(datt2, dqv, vo, att, qkv, 2, 5, 8, 2);
    e = fd_check(value_fwd, &d, qkv, nq, vo, no, dqv, 1e-2f);
    CHECK_MSG(e < 1e-2, "attention value (v) fd error %.3g", e);
    d.other = qkv;
    e = fd_check(value_att_fwd, &d, att, na, vo, no, datt2, 1e-2f);
    CHECK_MSG(e < 1e-2, "attention value (att) fd error %.3g", e);
    /* cross-entropy with label smoothing */
    int targets[3] = {2, 0, 3};
    float *logits = randn(12, 2), *probs = zeros(12), *dl = zeros(12), one = 1.0f;
    crossentropy_forward_backward(probs, dl, logits, targets, 3, 4, 0.1f, 1.0f);
    d.w = (const float *)targets; d.N = 3; d.OC = 4;
    e = fd_check(ce_fwd, &d, logits, 12, &one, 1, dl, 1e-2f);
    CHECK_MSG(e < 1e-2, "cross-entropy fd error %.3g", e);
    free(vo); free(dqv); free(datt2); free(logits); free(probs); free(dl);
    free(w); free(b); free(x); free(dout); free(dx); free(g); free(mw); free(mb); free(dmo);
    free(dmx); free(qkv); free(att); free(datt); free(dq);
}

TEST(crossentropy_label_smoothing) {
    /* 2 classes, logits 0 and log 3: p = (1/4, 3/4); target 1, s = 0.1:
     * target dist = (0.05, 0.95); loss = -(0.05 log .25 + 0.95 log .75) */
    float logits[2] = {0.0f, logf(3.0f)}, probs[2], dl[2] = {0, 0};
    int t = 1;
    float loss = crossentropy_forward_backward(probs, dl, logits, &t, 1, 2, 0.1f, 1.0f);
    CHECK_NEAR(loss, -(0.05 * log(0.25) + 0.95 * log(0.75)), 1e-6);
    CHECK_NEAR(dl[0], 0.25 - 0.05, 1e-6);
    CHECK_NEAR(dl[1], 0.75 - 0.95, 1e-6);
}

TEST(im2col_roundtrip) {
    int B = 2, Ci = 3, H = 8, P = 4;
    size_t n = (size_t)B * Ci * H * H;
    float *img = randn(n, 1), *cols = zeros(n), *back = zeros(n);
    im2col_forward(cols, img, B, Ci, H, P);
    /* row 1 is patch (gy 0, gx 1) of image 0: its first value is pixel (c 0, y 0, x 4) */
    CHECK(cols[Ci * P * P] == img[4]);
    im2col_backward(back, cols, B, Ci, H, P);
    CHECK(memcmp(back, img, sizeof(float) * n) == 0);
    free(img); free(cols); free(back);
}

int main_seed_ = 0;
__attribute__((constructor(200))) static void seed(void) { rng_seed(&rng, 1234); }

TEST_MAIN()
