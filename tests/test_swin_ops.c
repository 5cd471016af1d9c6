/*
 * test_swin_ops.c: each Swin op (swin_ops.c) against its reference (swin_ops_ref.c), forward and
 * backward, on shapes with several windows, shifts and odd sizes; each backward against central
 * finite differences of its forward (a loss <g, op(x)> with a random g), so the references'
 * adjoints are checked too; and the timm facts that are easy to state by hand (the mask of the
 * top-left window is 0, the merge order, the index range).
 */
#include <stdlib.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/swin_ops.h"
#include "engine/swin_ops_ref.h"
#include "tests/test.h"

static rng_t rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&rng) * scale;
    return x;
}
static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

#define CHECK_REL(a, b, n, tol)                                                                   \
    do {                                                                                          \
        double e_ = relerr(a, b, n);                                                              \
        CHECK_MSG(e_ <= (tol), "%s vs %s: relative error %.3g > %.3g", #a, #b, e_, (double)(tol)); \
    } while (0)

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A linear (or any) op y = f(x) of nx -> ny values, for the finite differences. */
typedef void (*op_fn)(float *y, const float *x, const void *arg);

/* Worst relative difference between grad (the backward's d<g, f(x)>/dx) and central finite
 * differences of <g, f(x)> at 8 random coordinates of x. */
static double fd_check(op_fn f, const void *arg, float *x, size_t nx, size_t ny, const float *g,
                       const float *grad, float eps) {
    float *y = zeros(ny);
    double worst = 0;
    for (int k = 0; k < 8; k++) {
        size_t i = rng_below(&rng, (uint32_t)nx);
        float save = x[i];
        x[i] = save + eps;
        f(y, x, arg);
        double lp = dot(g, y, ny);
        x[i] = save - eps;
        f(y, x, arg);
        double lm = dot(g, y, ny);
        x[i] = save;
        double num = (lp - lm) / (2 * eps);
        double e = fabs(num - grad[i]) / (fabs(num) + fabs(grad[i]) + 1e-3);
        if (e > worst) worst = e;
    }
    free(y);
    return worst;
}

typedef struct { int B, R, C, w, shift; } part_arg;
static void part_op(float *y, const float *x, const void *arg) {
    const part_arg *p = arg;
    swin_window_partition_forward_ref(y, x, p->B, p->R, p->C, p->w, p->shift);
}

TEST(window_partition_matches_reference) {
    /* (R, w, shift): several windows with the usual and an unusual shift, one window per image,
     * a window of one token */
    int cases[][3] = {{8, 4, 2}, {12, 4, 2}, {12, 4, 3}, {14, 7, 3}, {8, 4, 0}, {6, 6, 0},
                      {5, 1, 0}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        part_arg a = {2, cases[t][0], 5, cases[t][1], cases[t][2]};
        size_t n = (size_t)a.B * a.R * a.R * a.C;
        float *x = randn(n, 1), *y = zeros(n), *yr = zeros(n), *g = randn(n, 1);
        swin_window_partition_forward(y, x, a.B, a.R, a.C, a.w, a.shift);
        swin_window_partition_forward_ref(yr, x, a.B, a.R, a.C, a.w, a.shift);
        CHECK_MSG(memcmp(y, yr, sizeof(float) * n) == 0, "R %d w %d shift %d: forward", a.R, a.w,
                  a.shift);
        /* backward accumulates onto what is there */
        float *dx = randn(n, 1), *dxr = malloc(sizeof(float) * n);
        memcpy(dxr, dx, sizeof(float) * n);
        swin_window_partition_backward(dx, g, a.B, a.R, a.C, a.w, a.shift);
        swin_window_partition_backward_ref(dxr, g, a.B, a.R, a.C, a.w, a.shift);
        CHECK_REL(dx, dxr, n, 1e-6);
        /* the backward undoes the forward (a permutation) */
        float *back = zeros(n);
        swin_window_partition_backward(back, y, a.B, a.R, a.C, a.w, a.shift);
        CHECK(memcmp(back, x, sizeof(float) * n) == 0);
        float *grad = zeros(n);
        swin_window_partition_backward_ref(grad, g, a.B, a.R, a.C, a.w, a.shift);
        double e = fd_check(part_op, &a, x, n, n, g, grad, 1e-2f);
        CHECK_MSG(e < 1e-3, "R %d w %d shift %d: finite differences %.3g", a.R, a.w, a.shift, e);
        free(x); free(y); free(yr); free(g); free(dx); free(dxr); free(back); free(grad);
    }
}

TEST(window_partition_follows_roll) {
    /* by hand: token (0, 0) of the first window of a map shifted by 2 is the map's (2, 2) */
    int B = 1, R = 8, C = 1, w = 4;
    float x[64], y[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    swin_window_partition_forward(y, x, B, R, C, w, 2);
    CHECK(y[0] == 2 * 8 + 2);
    CHECK(y[1] == 2 * 8 + 3);
    CHECK(y[4] == 3 * 8 + 2);             /* second row of the window */
    CHECK(y[16 * 3 + 15] == 1 * 8 + 1);   /* last window's last token wraps to (1, 1) */
}

typedef struct { const int *idx; int N, NH; } bias_arg;
static void bias_op(float *y, const float *x, const void *arg) {
    const bias_arg *p = arg;
    swin_relpos_bias_forward_ref(y, x, p->idx, p->N, p->NH);
}

TEST(relative_position_bias_matches_reference) {
    for (int w = 1; w <= 7; w++) {
        int N = w * w, NH = 3, nb = (2 * w - 1) * (2 * w - 1);
        int *idx = malloc(sizeof(int) * N * N), *idxr = malloc(sizeof(int) * N * N);
        swin_relpos_index(idx, w);
        swin_relpos_index_ref(idxr, w);
        CHECK(memcmp(idx, idxr, sizeof(int) * N * N) == 0);
        /* every entry in range, the diagonal the table's centre, every row of the table used */
        int *used = calloc(nb, sizeof(int));
        for (int k = 0; k < N * N; k++) {
            CHECK(idx[k] >= 0 && idx[k] < nb);
            if (idx[k] >= 0 && idx[k] < nb) used[idx[k]] = 1;
        }
        for (int i = 0; i < N; i++) CHECK(idx[i * N + i] == (w - 1) * (2 * w - 1) + w - 1);
        for (int r = 0; r < nb; r++) CHECK(used[r]);
        float *table = randn((size_t)nb * NH, 1), *out = zeros((size_t)NH * N * N);
        float *outr = zeros((size_t)NH * N * N), *g = randn((size_t)NH * N * N, 1);
        swin_relpos_bias_forward(out, table, idx, N, NH);
        swin_relpos_bias_forward_ref(outr, table, idx, N, NH);
        CHECK(memcmp(out, outr, sizeof(float) * NH * N * N) == 0);
        float *dt = randn((size_t)nb * NH, 1), *dtr = malloc(sizeof(float) * nb * NH);
        memcpy(dtr, dt, sizeof(float) * nb * NH);
        swin_relpos_bias_backward(dt, g, idx, N, NH);
        swin_relpos_bias_backward_ref(dtr, g, idx, N, NH);
        CHECK_REL(dt, dtr, (size_t)nb * NH, 1e-5);
        float *grad = zeros((size_t)nb * NH);
        swin_relpos_bias_backward_ref(grad, g, idx, N, NH);
        bias_arg a = {idx, N, NH};
        double e = fd_check(bias_op, &a, table, (size_t)nb * NH, (size_t)NH * N * N, g, grad,
                            1e-2f);
        CHECK_MSG(e < 1e-3, "w %d: finite differences %.3g", w, e);
        free(idx); free(idxr); free(used); free(table); free(out); free(outr); free(g);
        free(dt); free(dtr); free(grad);
    }
}

TEST(shift_mask_matches_reference) {
    int cases[][3] = {{8, 4, 2}, {12, 4, 2}, {14, 7, 3}, {12, 4, 1}, {8, 4, 0}, {56, 7, 3}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int R = cases[t][0], w = cases[t][1], s = cases[t][2], N = w * w, nW = (R / w) * (R / w);
        size_t n = (size_t)nW * N * N;
        float *m = zeros(n), *mr = zeros(n);
        swin_shift_mask(m, R, w, s);
        swin_shift_mask_ref(mr, R, w, s);
        CHECK_MSG(memcmp(m, mr, sizeof(float) * n) == 0, "R %d w %d shift %d", R, w, s);
        /* windows away from the last row and column see one region: no mask */
        for (size_t k = 0; k < (size_t)N * N; k++) CHECK(m[k] == 0);
        /* the last window of a shifted map holds 4 regions: a token meets (w-s)^2, s(w-s) or
         * s^2 others of its own region, the rest at -100 */
        if (s) {
            const float *last = m + (size_t)(nW - 1) * N * N;
            int zeros0 = 0;
            for (int j = 0; j < N; j++) zeros0 += last[j] == 0;
            CHECK(zeros0 == (w - s) * (w - s));
        }
        free(m); free(mr);
    }
}

TEST(window_attention_softmax_matches_reference) {
    int Bw = 6, nW = 3, N = 9, C = 12, NH = 3;
    float *qkv = randn((size_t)Bw * N * 3 * C, 1), *bias = randn((size_t)NH * N * N, 1);
    float *mask = zeros((size_t)nW * N * N);
    for (int k = 0; k < nW * N * N; k++) mask[k] = rng_below(&rng, 4) ? 0.0f : -100.0f;
    size_t na = (size_t)Bw * NH * N * N;
    for (int with_mask = 0; with_mask < 2; with_mask++) {
        const float *mk = with_mask ? mask : NULL;
        float *att = zeros(na), *attr = zeros(na);
        swin_attention_softmax_forward(att, qkv, bias, mk, Bw, nW, N, C, NH);
        swin_attention_softmax_forward_ref(attr, qkv, bias, mk, Bw, nW, N, C, NH);
        CHECK_REL(att, attr, na, 1e-5);
        free(att); free(attr);
    }
    free(qkv); free(bias); free(mask);
}

/* loss = <g, softmax(scale q k^T + bias + mask)>: its gradient in bias and qkv through ops.h's
 * attention_softmax_backward and swin_attention_bias_backward, against finite differences of
 * the reference forward. */
typedef struct { const float *qkv, *bias, *mask; int Bw, nW, N, C, NH, wrt_bias; } att_arg;
static void att_op(float *y, const float *x, const void *arg) {
    const att_arg *p = arg;
    swin_attention_softmax_forward_ref(y, p->wrt_bias ? p->qkv : x, p->wrt_bias ? x : p->bias,
                                       p->mask, p->Bw, p->nW, p->N, p->C, p->NH);
}

TEST(window_attention_backward_matches_finite_differences) {
    int Bw = 4, nW = 2, N = 9, C = 12, NH = 3;
    size_t nq = (size_t)Bw * N * 3 * C, nb = (size_t)NH * N * N, na = (size_t)Bw * NH * N * N;
    float *qkv = randn(nq, 0.7f), *bias = randn(nb, 1), *mask = zeros((size_t)nW * N * N);
    for (int k = 0; k < nW * N * N; k++) mask[k] = rng_below(&rng, 3) ? 0.0f : -100.0f;
    float *g = randn(na, 1), *att = zeros(na), *datt = malloc(sizeof(float) * na);
    swin_attention_softmax_forward(att, qkv, bias, mask, Bw, nW, N, C, NH);
    memcpy(datt, g, sizeof(float) * na);
    float *dqkv = zeros(nq), *dbias = zeros(nb), *dbias_r = zeros(nb);
    attention_softmax_backward(dqkv, datt, att, qkv, Bw, N, C, NH);
    swin_attention_bias_backward(dbias, datt, Bw, N, NH);
    swin_attention_bias_backward_ref(dbias_r, datt, Bw, N, NH);
    CHECK_REL(dbias, dbias_r, nb, 1e-5);
    att_arg a = {qkv, bias, mask, Bw, nW, N, C, NH, 1};
    double e = fd_check(att_op, &a, bias, nb, na, g, dbias, 1e-2f);
    CHECK_MSG(e < 2e-3, "bias: finite differences %.3g", e);
    a.wrt_bias = 0;
    /* q and k coordinates only: v has no gradient through the softmax */
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        float *y = zeros(na);
        size_t row = rng_below(&rng, (uint32_t)(Bw * N)), col = rng_below(&rng, (uint32_t)(2 * C));
        size_t i = row * 3 * C + col;
        float save = qkv[i], eps = 1e-2f;
        qkv[i] = save + eps;
        att_op(y, qkv, &a);
        double lp = dot(g, y, na);
        qkv[i] = save - eps;
        att_op(y, qkv, &a);
        double lm = dot(g, y, na);
        qkv[i] = save;
        double num = (lp - lm) / (2 * eps);
        double err = fabs(num - dqkv[i]) / (fabs(num) + fabs(dqkv[i]) + 1e-3);
        if (err > worst) worst = err;
        free(y);
    }
    CHECK_MSG(worst < 2e-3, "qkv: finite differences %.3g", worst);
    free(qkv); free(bias); free(mask); free(g); free(att); free(datt); free(dqkv); free(dbias);
    free(dbias_r);
}

TEST(masked_pairs_get_no_attention) {
    /* -100 before the softmax leaves e^-100 of the weight: nothing a float can hold beside 1 */
    int Bw = 2, nW = 1, N = 4, C = 4, NH = 1;
    float *qkv = randn((size_t)Bw * N * 3 * C, 0.5f), bias[16] = {0}, mask[16], att[32];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) mask[i * 4 + j] = (i < 2) == (j < 2) ? 0.0f : -100.0f;
    swin_attention_softmax_forward(att, qkv, bias, mask, Bw, nW, N, C, NH);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                if ((i < 2) != (j < 2)) CHECK(att[b * 16 + i * 4 + j] < 1e-30f);
    free(qkv);
}

typedef struct { int B, R, C; } merge_arg;
static void merge_op(float *y, const float *x, const void *arg) {
    const merge_arg *p = arg;
    swin_merge_gather_forward_ref(y, x, p->B, p->R, p->C);
}

TEST(merge_gather_matches_reference) {
    merge_arg a = {3, 6, 5};
    size_t n = (size_t)a.B * a.R * a.R * a.C;
    float *x = randn(n, 1), *y = zeros(n), *yr = zeros(n), *g = randn(n, 1);
    swin_merge_gather_forward(y, x, a.B, a.R, a.C);
    swin_merge_gather_forward_ref(yr, x, a.B, a.R, a.C);
    CHECK(memcmp(y, yr, sizeof(float) * n) == 0);
    float *dx = randn(n, 1), *dxr = malloc(sizeof(float) * n);
    memcpy(dxr, dx, sizeof(float) * n);
    swin_merge_gather_backward(dx, g, a.B, a.R, a.C);
    swin_merge_gather_backward_ref(dxr, g, a.B, a.R, a.C);
    CHECK_REL(dx, dxr, n, 1e-6);
    float *grad = zeros(n);
    swin_merge_gather_backward_ref(grad, g, a.B, a.R, a.C);
    double e = fd_check(merge_op, &a, x, n, n, g, grad, 1e-2f);
    CHECK_MSG(e < 1e-3, "finite differences %.3g", e);
    /* timm's order by hand: output token 0 is x(0,0), x(1,0), x(0,1), x(1,1) of a 4x4 map */
    float m[16], o[16];
    for (int i = 0; i < 16; i++) m[i] = (float)i;
    swin_merge_gather_forward(o, m, 1, 4, 1);
    CHECK(o[0] == 0 && o[1] == 4 && o[2] == 1 && o[3] == 5);
    CHECK(o[4] == 2 && o[5] == 6 && o[6] == 3 && o[7] == 7); /* next token: columns 2, 3 */
    free(x); free(y); free(yr); free(g); free(dx); free(dxr); free(grad);
}

typedef struct { int B, T, C; } pool_arg;
static void pool_op(float *y, const float *x, const void *arg) {
    const pool_arg *p = arg;
    swin_mean_pool_forward_ref(y, x, p->B, p->T, p->C);
}

TEST(mean_pool_matches_reference) {
    pool_arg a = {3, 49, 37};
    size_t n = (size_t)a.B * a.T * a.C, no = (size_t)a.B * a.C;
    float *x = randn(n, 1), *y = zeros(no), *yr = zeros(no), *g = randn(no, 1);
    swin_mean_pool_forward(y, x, a.B, a.T, a.C);
    swin_mean_pool_forward_ref(yr, x, a.B, a.T, a.C);
    CHECK_REL(y, yr, no, 1e-6);
    float *dx = randn(n, 1), *dxr = malloc(sizeof(float) * n);
    memcpy(dxr, dx, sizeof(float) * n);
    swin_mean_pool_backward(dx, g, a.B, a.T, a.C);
    swin_mean_pool_backward_ref(dxr, g, a.B, a.T, a.C);
    CHECK_REL(dx, dxr, n, 1e-6);
    float *grad = zeros(n);
    swin_mean_pool_backward_ref(grad, g, a.B, a.T, a.C);
    double e = fd_check(pool_op, &a, x, n, no, g, grad, 1e-2f);
    CHECK_MSG(e < 1e-3, "finite differences %.3g", e);
    free(x); free(y); free(yr); free(g); free(dx); free(dxr); free(grad);
}

__attribute__((constructor)) static void seed(void) { rng_seed(&rng, 11); }

TEST_MAIN()
