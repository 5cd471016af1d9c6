/*
 * test_actq.c: GPLQ's activation quantizers wired into the ViT: observation initializes every
 * step as the spec says (checked by hand at the head input), 8-bit fake quantization barely
 * moves the logits while 3-bit moves them more, and a backward pass reaches every step.
 */
#include <stdlib.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/model.h"
#include "gplq/actq.h"
#include "tests/test.h"

static void tiny(model *m) {
    model_config cfg = {.arch = MODEL_VIT};
    cfg.vit = (vit_config){.img_size = 8, .patch = 2, .in_chans = 1, .dim = 16, .depth = 2, .heads = 2,
                      .mlp_hidden = 32, .num_classes = 4, .ln_eps = 1e-6f};
    char err[256];
    model_init(m, &cfg, err, sizeof err);
    model_init_weights(m, 5);
    rng_t r;
    rng_seed(&r, 9);
    /* larger weights than timm's init so activations have some spread */
    for (size_t i = 0; i < model_num_params(m); i++) model_params(m)[i] += 0.2f * rng_normal(&r);
}

/* B images of 8x8 standard normal noise (malloc'ed). */
static float *noise(int B, uint64_t seed) {
    float *x = malloc(sizeof(float) * B * 64);
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < B * 64; i++) x[i] = rng_normal(&r);
    return x;
}

static double logit_err(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return sqrt(num / den);
}

TEST(observe_then_quantize) {
    model m;
    tiny(&m);
    int B = 16;
    float *x = noise(B, 2);
    char err[256];
    CHECK(model_forward(&m, x, B, err, sizeof err) == 0);
    float fp[64], feat_absmax[16] = {0};
    memcpy(fp, model_logits(&m), sizeof(float) * B * 4);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 16; c++) feat_absmax[c] = fmaxf(feat_absmax[c], fabsf(model_feature(&m, b)[c]));

    double errs[2];
    int bits[2] = {8, 3};
    for (int t = 0; t < 2; t++) {
        actq_set s;
        CHECK(actq_init(&s, &m, bits[t], 8, err, sizeof err) == 0);
        model_set_hooks(&m, &s.hooks);
        CHECK(actq_observe_begin(&s, 1, err, sizeof err) == 0);
        CHECK(model_forward(&m, x, B, err, sizeof err) == 0);
        CHECK(memcmp(fp, model_logits(&m), sizeof(float) * B * 4) == 0); /* observing changes nothing */
        CHECK(actq_observe_end(&s, err, sizeof err) == 0);
        /* head input, per channel: s = max |x| / Qp over the class-token features */
        lsq_quantizer *hq = actq_get(&s, -1, QP_HEAD_IN);
        CHECK(hq && hq->channels == 16);
        for (int c = 0; c < 16; c++)
            CHECK_NEAR(hq->step[c], feat_absmax[c] / quant_qp(bits[t], 1), 1e-6 * feat_absmax[c]);
        CHECK(actq_get(&s, 1, QP_QKV_OUT)->channels == 3);
        CHECK(actq_get(&s, 0, QP_ATTN)->is_signed == 0);
        CHECK(actq_get(&s, 0, QP_FC2_IN)->channels == 32);
        CHECK(actq_get(&s, -1, QP_PATCH_IN)->bits == 8);
        CHECK(actq_get(&s, 2, QP_QKV_IN) == NULL);
        for (size_t i = 0; i < (size_t)s.nq; i++)
            for (int c = 0; c < s.q[i].channels; c++)
                CHECK(s.q[i].step[c] > 0 && isfinite(s.q[i].step[c]));
        CHECK(model_forward(&m, x, B, err, sizeof err) == 0);
        errs[t] = logit_err(model_logits(&m), fp, B * 4);
        /* backward reaches every quantizer's steps */
        CHECK(model_alloc_grads(&m, err, sizeof err) == 0);
        model_zero_grad(&m);
        actq_zero_grad(&s);
        float probs[64], dl[64] = {0};
        int y[16];
        for (int b = 0; b < B; b++) y[b] = b % 4;
        crossentropy_forward_backward(probs, dl, model_logits(&m), y, B, 4, 0.0f, 1.0f);
        float *dx = calloc(B * 64, sizeof(float));
        CHECK(model_backward(&m, dl, NULL, dx, err, sizeof err) == 0);
        free(dx);
        size_t n = actq_num_steps(&s);
        float *g = malloc(sizeof(float) * n), *st = malloc(sizeof(float) * n);
        actq_gather(&s, g, 1);
        size_t off = 0;
        for (int i = 0; i < s.nq; i++) {
            double sum = 0;
            for (int c = 0; c < s.q[i].channels; c++) sum += fabs(g[off + c]);
            CHECK_MSG(sum > 0 && isfinite(sum), "quantizer %d got no step gradient", i);
            off += s.q[i].channels;
        }
        /* gather/scatter round trip */
        actq_gather(&s, st, 0);
        actq_scatter(&s, st);
        CHECK(memcmp(st, s.q[0].step, sizeof(float) * s.q[0].channels) == 0);
        free(g);
        free(st);
        model_set_hooks(&m, NULL);
        actq_free(&s);
    }
    printf("  relative logit error: W32A8 %.3g, W32A3 %.3g\n", errs[0], errs[1]);
    CHECK(errs[0] < 0.05);
    CHECK(errs[1] > errs[0]);
    free(x);
    model_free(&m);
}

/* A training pass that recomputes each block's quantized copies in its backward
 * (model_hooks.reforward), or its norm and GELU outputs (model_set_recompute), gives bit for bit
 * the gradients of one that keeps them all, with less memory. */
static void pass(model *m, actq_set *s, const float *x, int B, float *grads, float *steps) {
    char err[256];
    CHECK(model_forward(m, x, B, err, sizeof err) == 0);
    model_zero_grad(m);
    actq_zero_grad(s);
    float probs[64], dl[64] = {0};
    int y[16];
    for (int b = 0; b < B; b++) y[b] = (b * 7) % 4;
    crossentropy_forward_backward(probs, dl, model_logits(m), y, B, 4, 0.0f, 1.0f);
    float *dx = calloc((size_t)B * 64, sizeof(float));
    CHECK(model_backward(m, dl, NULL, dx, err, sizeof err) == 0);
    memcpy(grads, model_grads(m), sizeof(float) * model_num_params(m));
    memcpy(grads + model_num_params(m), dx, sizeof(float) * B * 64);
    actq_gather(s, steps, 1);
    free(dx);
}

/* actq's table with the recomputations counted per layer: it must really recompute. */
typedef struct {
    model_hooks inner;
    int reforwards[4];
} counted_hooks;

static int counted_forward(void *ctx, int layer, qpoint p, float *out, const float *in,
                           int64_t rows, int cols) {
    counted_hooks *c = ctx;
    return c->inner.forward(c->inner.ctx, layer, p, out, in, rows, cols);
}

static int counted_reforward(void *ctx, int layer, qpoint p, float *out, const float *in,
                             int64_t rows, int cols) {
    counted_hooks *c = ctx;
    c->reforwards[layer]++;
    return c->inner.reforward(c->inner.ctx, layer, p, out, in, rows, cols);
}

static void counted_backward(void *ctx, int layer, qpoint p, float *din, const float *dout,
                             const float *in, int64_t rows, int cols) {
    counted_hooks *c = ctx;
    c->inner.backward(c->inner.ctx, layer, p, din, dout, in, rows, cols);
}

TEST(recomputed_copies_give_the_same_gradients) {
    model m;
    tiny(&m);
    int B = 16;
    float *x = noise(B, 3);
    char err[256];
    actq_set s;
    CHECK(actq_init(&s, &m, 3, 8, err, sizeof err) == 0);
    model_set_hooks(&m, &s.hooks);
    CHECK(actq_observe_begin(&s, 1, err, sizeof err) == 0);
    CHECK(model_forward_infer(&m, x, B, err, sizeof err) == 0);
    CHECK(actq_observe_end(&s, err, sizeof err) == 0);
    CHECK(model_alloc_grads(&m, err, sizeof err) == 0);
    size_t n = model_num_params(&m) + (size_t)B * 64, ns = actq_num_steps(&s);
    float *g1 = malloc(sizeof(float) * n), *g2 = malloc(sizeof(float) * n);
    float *s1 = malloc(sizeof(float) * ns), *s2 = malloc(sizeof(float) * ns);
    counted_hooks counted = {.inner = s.hooks};
    model_hooks recompute = {.ctx = &counted, .forward = counted_forward,
                           .backward = counted_backward, .reforward = counted_reforward};
    model_set_hooks(&m, &recompute);
    pass(&m, &s, x, B, g1, s1); /* recomputing */
    /* each block recomputed its six copies, each before its use (one scratch holds them) */
    CHECK_MSG(counted.reforwards[0] == 6 && counted.reforwards[1] == 6, "reforward calls %d, %d",
              counted.reforwards[0], counted.reforwards[1]);
    model_hooks keep = s.hooks;
    keep.reforward = NULL;
    model_set_hooks(&m, &keep);
    pass(&m, &s, x, B, g2, s2); /* keeping every copy */
    CHECK_MSG(memcmp(g1, g2, sizeof(float) * n) == 0, "weight or input gradients differ");
    CHECK_MSG(memcmp(s1, s2, sizeof(float) * ns) == 0, "step gradients differ");
    /* the norm and GELU outputs recomputed too (model_set_recompute), with the copies kept or
     * recomputed: still the same bits */
    model_set_recompute(&m, 1);
    for (int re = 0; re < 2; re++) {
        model_set_hooks(&m, re ? &recompute : &keep);
        pass(&m, &s, x, B, g2, s2);
        CHECK_MSG(memcmp(g1, g2, sizeof(float) * n) == 0, "gradients differ (reforward %d)", re);
        CHECK_MSG(memcmp(s1, s2, sizeof(float) * ns) == 0, "step gradients differ (reforward %d)",
                  re);
    }
    double sum = 0;
    for (size_t i = 0; i < ns; i++) sum += fabs(s1[i]);
    CHECK(sum > 0);
    /* and without quantization: FP32 training */
    model_set_hooks(&m, NULL);
    pass(&m, &s, x, B, g2, s2);
    model_set_recompute(&m, 0);
    pass(&m, &s, x, B, g1, s1);
    CHECK_MSG(memcmp(g1, g2, sizeof(float) * n) == 0, "FP32 gradients differ when recomputed");
    model_set_hooks(&m, NULL);
    actq_free(&s);
    free(g1);
    free(g2);
    free(s1);
    free(s2);
    free(x);
    model_free(&m);
}

TEST_MAIN()
