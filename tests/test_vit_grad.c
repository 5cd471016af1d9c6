/*
 * test_vit_grad.c: the whole model's backward pass against central finite differences of its
 * forward pass (loss = label-smoothed cross-entropy + a feature term), for plain and distilled
 * ViTs, with and without hooks installed at every quantization point. The hooks here are a
 * smooth stand-in for fake quantization (a per-point scale, y = s x), so finite differences
 * apply and every point's forward and backward plumbing is exercised.
 */
#include <stdlib.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/vit.h"
#include "tests/test.h"

typedef struct { int calls_fwd[QP_COUNT], calls_bwd[QP_COUNT]; } scale_ctx;

static float point_scale(qpoint p) { return 0.8f + 0.05f * (float)p; }

static int scale_fwd(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                     int cols) {
    (void)layer;
    ((scale_ctx *)ctx)->calls_fwd[p]++;
    for (int64_t i = 0; i < rows * cols; i++) out[i] = point_scale(p) * in[i];
    return 0;
}

static void scale_bwd(void *ctx, int layer, qpoint p, float *din, const float *dout,
                      const float *in, int64_t rows, int cols) {
    (void)layer; (void)in;
    ((scale_ctx *)ctx)->calls_bwd[p]++;
    for (int64_t i = 0; i < rows * cols; i++) din[i] = point_scale(p) * dout[i];
}

/* loss = CE(logits) + 0.5 * sum(feature^2) * w, in double for the finite differences */
static double loss_of(vit_model *m, const float *x, const int *y, int B, float *dlogits,
                      float *dfeat) {
    char err[256];
    int K = m->cfg.num_classes, C = m->cfg.dim;
    if (vit_forward(m, x, B, err, sizeof err)) return NAN;
    float *probs = malloc(sizeof(float) * B * K);
    if (dlogits) memset(dlogits, 0, sizeof(float) * B * K);
    double loss = crossentropy_forward_backward(probs, dlogits, m->logits, y, B, K, 0.1f, 1.0f);
    for (int b = 0; b < B; b++) {
        const float *f = vit_feature(m, b);
        for (int i = 0; i < C; i++) {
            loss += 0.05 * f[i] * f[i];
            if (dfeat) dfeat[(size_t)b * C + i] = 0.1f * f[i];
        }
    }
    free(probs);
    return loss;
}

static void grad_check(int distilled, int hooks) {
    vit_config cfg = {.img_size = 8, .patch = 4, .in_chans = 2, .dim = 16, .depth = 2,
                      .heads = 2, .mlp_hidden = 24, .num_classes = 5, .distilled = distilled,
                      .ln_eps = 1e-6f};
    vit_model m;
    char err[256];
    CHECK(vit_init(&m, &cfg, err, sizeof err) == 0);
    CHECK(vit_alloc_grads(&m, err, sizeof err) == 0);
    rng_t r;
    rng_seed(&r, 7 + distilled);
    /* every parameter random and O(1/sqrt(fan-in)), so no gradient is trivially zero */
    for (size_t i = 0; i < m.num_params; i++) m.param_mem[i] = 0.3f * rng_normal(&r);
    for (int l = 0; l < cfg.depth * cfg.dim; l++) m.params.ln1_w[l] += 1, m.params.ln2_w[l] += 1;
    scale_ctx sc = {0};
    model_hooks h = {.ctx = &sc, .forward = scale_fwd, .backward = scale_bwd};
    if (hooks) vit_set_hooks(&m, &h);
    int B = 3, K = cfg.num_classes;
    size_t nx = (size_t)B * cfg.in_chans * cfg.img_size * cfg.img_size;
    float *x = malloc(sizeof(float) * nx), *dx = calloc(nx, sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
    int y[3] = {1, 4, 0};
    float *dlogits = malloc(sizeof(float) * B * K), *dfeat = malloc(sizeof(float) * B * cfg.dim);
    loss_of(&m, x, y, B, dlogits, dfeat);
    vit_zero_grad(&m);
    CHECK(vit_backward(&m, dlogits, dfeat, dx, err, sizeof err) == 0);

    /* every tensor: 6 random coordinates; the input: 6 too */
    double worst = 0;
    const char *worst_name = "";
    float eps = 1e-2f;
    for (int t = 0; t <= VIT_NUM_PARAM_TENSORS; t++) {
        float *base = t < VIT_NUM_PARAM_TENSORS ? m.param_mem + m.info[t].offset : x;
        float *grad = t < VIT_NUM_PARAM_TENSORS ? m.grad_mem + m.info[t].offset : dx;
        size_t n = t < VIT_NUM_PARAM_TENSORS ? m.info[t].numel : nx;
        for (int k = 0; k < 6 && n; k++) {
            size_t i = rng_below(&r, (uint32_t)n);
            float save = base[i];
            base[i] = save + eps;
            double lp = loss_of(&m, x, y, B, NULL, NULL);
            base[i] = save - eps;
            double lm = loss_of(&m, x, y, B, NULL, NULL);
            base[i] = save;
            double num = (lp - lm) / (2 * eps), ana = grad[i];
            double e = fabs(num - ana) / (fabs(num) + fabs(ana) + 1e-3);
            if (e > worst) {
                worst = e;
                worst_name = t < VIT_NUM_PARAM_TENSORS ? m.info[t].name : "input";
            }
        }
    }
    printf("  distilled %d, hooks %d: worst finite-difference error %.2g (%s)\n", distilled, hooks,
           worst, worst_name);
    CHECK_MSG(worst < 2e-2, "finite differences disagree: %.3g at %s", worst, worst_name);
    if (hooks) {
        /* every point of a ViT was visited forward and backward (backward of PATCH_IN needs
         * dx); QP_MERGE_IN is Swin's */
        for (int p = 0; p < QP_COUNT; p++)
            if (p != QP_MERGE_IN)
                CHECK_MSG(sc.calls_fwd[p] > 0 && sc.calls_bwd[p] > 0,
                          "point %d: %d fwd, %d bwd calls", p, sc.calls_fwd[p], sc.calls_bwd[p]);
    }
    free(x); free(dx); free(dlogits); free(dfeat);
    vit_free(&m);
}

TEST(whole_model_gradients) { grad_check(0, 0); }
TEST(whole_model_gradients_distilled) { grad_check(1, 0); }
TEST(whole_model_gradients_through_hooks) { grad_check(0, 1); }
TEST(whole_model_gradients_through_hooks_distilled) { grad_check(1, 1); }

static int copy_fwd(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                    int cols) {
    (void)ctx; (void)layer; (void)p;
    memcpy(out, in, sizeof(float) * rows * cols);
    return 0;
}

static void copy_bwd(void *ctx, int layer, qpoint p, float *din, const float *dout,
                     const float *in, int64_t rows, int cols) {
    (void)ctx; (void)layer; (void)p; (void)in;
    memmove(din, dout, sizeof(float) * rows * cols);
}

TEST(identity_hooks_change_nothing) {
    vit_config cfg = {.img_size = 8, .patch = 2, .in_chans = 1, .dim = 12, .depth = 2, .heads = 3,
                      .mlp_hidden = 20, .num_classes = 4, .ln_eps = 1e-6f};
    vit_model m;
    char err[256];
    CHECK(vit_init(&m, &cfg, err, sizeof err) == 0);
    vit_init_weights(&m, 3);
    float x[2 * 64];
    rng_t r;
    rng_seed(&r, 1);
    for (int i = 0; i < 128; i++) x[i] = rng_normal(&r);
    CHECK(vit_forward(&m, x, 2, err, sizeof err) == 0);
    float plain[8];
    memcpy(plain, m.logits, sizeof plain);
    model_hooks id = {.forward = copy_fwd, .backward = copy_bwd};
    vit_set_hooks(&m, &id);
    CHECK(vit_forward(&m, x, 2, err, sizeof err) == 0);
    CHECK(memcmp(plain, m.logits, sizeof plain) == 0);
    vit_free(&m);
}

/* The forward-only pass equals the training forward bit for bit, with quantization hooks and
 * QwT terms on (its two alternating output buffers must keep each block's input alive). */
TEST(forward_only_pass_is_bit_identical) {
    vit_config cfg = {.img_size = 8, .patch = 2, .in_chans = 1, .dim = 12, .depth = 3, .heads = 3,
                      .mlp_hidden = 20, .num_classes = 4, .ln_eps = 1e-6f, .distilled = 1};
    vit_model m;
    char err[256];
    CHECK(vit_init(&m, &cfg, err, sizeof err) == 0);
    vit_init_weights(&m, 5);
    float x[3 * 64], w[3][144], b[3][12];
    const float *wp[3] = {w[0], w[1], w[2]}, *bp[3] = {b[0], b[1], b[2]};
    rng_t r;
    rng_seed(&r, 2);
    for (int i = 0; i < 192; i++) x[i] = rng_normal(&r);
    for (int l = 0; l < 3; l++) {
        for (int i = 0; i < 144; i++) w[l][i] = 0.1f * rng_normal(&r);
        for (int i = 0; i < 12; i++) b[l][i] = 0.1f * rng_normal(&r);
    }
    model_hooks id = {.forward = copy_fwd, .backward = copy_bwd};
    vit_set_hooks(&m, &id);
    m.qwt_w = wp;
    m.qwt_b = bp;
    CHECK(vit_forward(&m, x, 3, err, sizeof err) == 0);
    float ref[12], feat[36];
    memcpy(ref, m.logits, sizeof ref);
    for (int i = 0; i < 3; i++) memcpy(feat + 12 * i, vit_feature(&m, i), 12 * sizeof(float));
    vit_release_acts(&m);
    CHECK(vit_forward_infer(&m, x, 3, err, sizeof err) == 0);
    CHECK(memcmp(ref, m.logits, sizeof ref) == 0);
    for (int i = 0; i < 3; i++) CHECK(memcmp(feat + 12 * i, vit_feature(&m, i), 12 * sizeof(float)) == 0);
    CHECK(vit_alloc_grads(&m, err, sizeof err) == 0);
    m.qwt_w = NULL;
    CHECK(vit_backward(&m, ref, NULL, NULL, err, sizeof err) == -1 && strstr(err, "forward-only"));
    vit_free(&m);
}

TEST_MAIN()
