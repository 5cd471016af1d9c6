/*
 * test_swin_grad.c: the whole Swin's backward pass against central finite differences of its
 * forward pass (loss = label-smoothed cross-entropy + a feature term), over every parameter
 * tensor and the input, with and without hooks at every quantization point (a per-point scale,
 * smooth, so finite differences apply), with the quantized copies kept or recomputed
 * (reforward); on a 2-stage config (a shifted block at stage 0, the window covering stage 1's
 * map) and a 3-stage one whose window shrinks at the last stage. Also: the forward-only pass and
 * the block-level pieces give the training forward's bits, clone and release, the parameter
 * table (names, Swin-T's parameter count), and the config checks.
 */
#include <stdlib.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/swin.h"
#include "tests/test.h"

typedef struct { int calls_fwd[QP_COUNT], calls_bwd[QP_COUNT], calls_re[QP_COUNT]; } scale_ctx;

static float point_scale(qpoint p) { return 0.8f + 0.05f * (float)p; }

static int scale_fwd(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                     int cols) {
    (void)layer;
    ((scale_ctx *)ctx)->calls_fwd[p]++;
    for (int64_t i = 0; i < rows * cols; i++) out[i] = point_scale(p) * in[i];
    return 0;
}

static int scale_re(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                    int cols) {
    (void)layer;
    ((scale_ctx *)ctx)->calls_re[p]++;
    for (int64_t i = 0; i < rows * cols; i++) out[i] = point_scale(p) * in[i];
    return 0;
}

static void scale_bwd(void *ctx, int layer, qpoint p, float *din, const float *dout,
                      const float *in, int64_t rows, int cols) {
    (void)layer; (void)in;
    ((scale_ctx *)ctx)->calls_bwd[p]++;
    for (int64_t i = 0; i < rows * cols; i++) din[i] = point_scale(p) * dout[i];
}

/* img 16, patch 2, embed 16, depths 2-2, heads 2-4, window 4: stage 0 is 8x8 with 4 windows
 * and a shifted block; stage 1 is 4x4, one window, no shift. */
static const swin_config tiny = {.img_size = 16, .patch = 2, .in_chans = 2, .embed_dim = 16,
                                 .stages = 2, .depths = {2, 2}, .heads = {2, 4}, .window = 4,
                                 .mlp_ratio = 2, .num_classes = 5, .ln_eps = 1e-5f};
/* img 24, patch 2, embed 8, depths 2-2-2, heads 2-2-4, window 6: stage 0 is 12x12 with 4
 * windows shifted by 3, stage 1 6x6 in one window, stage 2 3x3, where the window shrinks to
 * 3 (a 5x5 bias table) */
static const swin_config three = {.img_size = 24, .patch = 2, .in_chans = 3, .embed_dim = 8,
                                  .stages = 3, .depths = {2, 2, 2}, .heads = {2, 2, 4},
                                  .window = 6, .mlp_ratio = 4, .num_classes = 4, .ln_eps = 1e-5f};

/* loss = CE(logits) + 0.05 * sum(feature^2), in double for the finite differences */
static double loss_of(swin_model *m, const float *x, const int *y, int B, float *dlogits,
                      float *dfeat) {
    char err[256];
    int K = m->cfg.num_classes, C = swin_stage_dim(&m->cfg, m->cfg.stages - 1);
    if (swin_forward(m, x, B, err, sizeof err)) return NAN;
    float *probs = malloc(sizeof(float) * B * K);
    if (dlogits) memset(dlogits, 0, sizeof(float) * B * K);
    double loss = crossentropy_forward_backward(probs, dlogits, m->logits, y, B, K, 0.1f, 1.0f);
    for (int b = 0; b < B; b++) {
        const float *f = swin_feature(m, b);
        for (int i = 0; i < C; i++) {
            loss += 0.05 * f[i] * f[i];
            if (dfeat) dfeat[(size_t)b * C + i] = 0.1f * f[i];
        }
    }
    free(probs);
    return loss;
}

/* every parameter random and O(1), norms around 1, so no gradient is trivially zero */
static void randomize(swin_model *m, rng_t *r) {
    for (size_t i = 0; i < m->num_params; i++) m->param_mem[i] = 0.3f * rng_normal(r);
    for (int i = 0; i < m->ninfo; i++) {
        const char *n = m->info[i].name;
        size_t len = strlen(n);
        if (len > 11 && !strcmp(n + len - 11, "norm.weight")) goto unit;
        if (len > 12 &&
            (!strcmp(n + len - 12, "norm1.weight") || !strcmp(n + len - 12, "norm2.weight")))
            goto unit;
        continue;
    unit:
        for (size_t j = 0; j < m->info[i].numel; j++) m->param_mem[m->info[i].offset + j] += 1;
    }
}

static void grad_check(const swin_config *cfg, int hooks, int reforward) {
    swin_model m;
    char err[256];
    CHECK_MSG(swin_init(&m, cfg, err, sizeof err) == 0, "%s", err);
    CHECK(swin_alloc_grads(&m, err, sizeof err) == 0);
    rng_t r;
    rng_seed(&r, 7 + hooks + cfg->stages);
    randomize(&m, &r);
    scale_ctx sc = {0};
    model_hooks h = {.ctx = &sc, .forward = scale_fwd, .backward = scale_bwd,
                     .reforward = reforward ? scale_re : NULL};
    if (hooks) swin_set_hooks(&m, &h);
    int B = 2, K = cfg->num_classes, CL = swin_stage_dim(cfg, cfg->stages - 1);
    size_t nx = (size_t)B * cfg->in_chans * cfg->img_size * cfg->img_size;
    float *x = malloc(sizeof(float) * nx), *dx = calloc(nx, sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
    int y[2] = {1, 3};
    float *dlogits = malloc(sizeof(float) * B * K), *dfeat = malloc(sizeof(float) * B * CL);
    loss_of(&m, x, y, B, dlogits, dfeat);
    swin_zero_grad(&m);
    CHECK(swin_backward(&m, dlogits, dfeat, dx, err, sizeof err) == 0);

    /* every tensor: 6 random coordinates; the input: 6 too */
    double worst = 0;
    const char *worst_name = "";
    float eps = 1e-2f;
    for (int t = 0; t <= m.ninfo; t++) {
        float *base = t < m.ninfo ? m.param_mem + m.info[t].offset : x;
        float *grad = t < m.ninfo ? m.grad_mem + m.info[t].offset : dx;
        size_t n = t < m.ninfo ? m.info[t].numel : nx;
        double tworst = 0, gmax = 0;
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
            if (e > tworst) tworst = e;
            if (fabs(ana) > gmax) gmax = fabs(ana);
        }
        const char *name = t < m.ninfo ? m.info[t].name : "input";
        /* a tensor whose sampled gradients are all zero would prove nothing */
        CHECK_MSG(gmax > 1e-6, "%s: zero gradient at every sampled coordinate", name);
        if (tworst > worst) {
            worst = tworst;
            worst_name = name;
        }
    }
    printf("  %d stages, hooks %d, reforward %d: worst finite-difference error %.2g (%s)\n",
           cfg->stages, hooks, reforward, worst, worst_name);
    CHECK_MSG(worst < 2e-2, "finite differences disagree: %.3g at %s", worst, worst_name);
    if (hooks) {
        for (int p = 0; p < QP_COUNT; p++)
            CHECK_MSG(sc.calls_fwd[p] > 0 && sc.calls_bwd[p] > 0,
                      "point %d: %d fwd, %d bwd calls", p, sc.calls_fwd[p], sc.calls_bwd[p]);
        if (reforward) CHECK(sc.calls_re[QP_ATTN] > 0);
    }
    free(x); free(dx); free(dlogits); free(dfeat);
    swin_free(&m);
}

TEST(whole_model_gradients) { grad_check(&tiny, 0, 0); }
TEST(whole_model_gradients_through_hooks) { grad_check(&tiny, 1, 0); }
TEST(whole_model_gradients_through_hooks_reforward) { grad_check(&tiny, 1, 1); }
TEST(whole_model_gradients_three_stages) { grad_check(&three, 0, 0); }
TEST(whole_model_gradients_three_stages_through_hooks) { grad_check(&three, 1, 1); }

/* The gradients of one pass with every quantized copy kept and with them recomputed in the
 * backward (reforward), or with the norm and GELU outputs recomputed (swin_set_recompute), are
 * the same bits; without hooks too. */
TEST(recomputing_in_the_backward_gives_the_same_gradients) {
    swin_model m;
    char err[256];
    CHECK(swin_init(&m, &three, err, sizeof err) == 0);
    CHECK(swin_alloc_grads(&m, err, sizeof err) == 0);
    rng_t r;
    rng_seed(&r, 3);
    randomize(&m, &r);
    int B = 3, K = three.num_classes;
    size_t nx = (size_t)B * 3 * 24 * 24;
    float *x = malloc(sizeof(float) * nx), *g0 = malloc(sizeof(float) * m.num_params);
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
    float dl[12];
    for (int i = 0; i < B * K; i++) dl[i] = rng_normal(&r);
    scale_ctx sc = {0};
    model_hooks keep = {.ctx = &sc, .forward = scale_fwd, .backward = scale_bwd};
    model_hooks re = {.ctx = &sc, .forward = scale_fwd, .backward = scale_bwd,
                      .reforward = scale_re};
    /* passes: hooks keeping their copies, then recomputing them, each with the norm and GELU
     * outputs kept and recomputed; then no hooks, kept and recomputed */
    for (int pass = 0; pass < 6; pass++) {
        swin_set_hooks(&m, pass >= 4 ? NULL : pass % 2 ? &re : &keep);
        swin_set_recompute(&m, pass >= 2 && pass != 4);
        swin_zero_grad(&m);
        CHECK(swin_forward(&m, x, B, err, sizeof err) == 0);
        CHECK(swin_backward(&m, dl, NULL, NULL, err, sizeof err) == 0);
        if (pass == 0 || pass == 4) memcpy(g0, m.grad_mem, sizeof(float) * m.num_params);
        else CHECK_MSG(memcmp(g0, m.grad_mem, sizeof(float) * m.num_params) == 0,
                       "pass %d's gradients differ", pass);
        if (pass == 1) CHECK(sc.calls_re[QP_QKV_IN] == swin_num_blocks(&three));
    }
    free(x); free(g0);
    swin_free(&m);
}

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

/* QwT maps for every block: (C, C) and (C) of the block's stage, filled at random. */
typedef struct { float *w[8], *b[8]; const float *wp[8], *bp[8]; } qwt_set;
static void qwt_make(qwt_set *q, const swin_config *c, rng_t *r) {
    for (int l = 0; l < swin_num_blocks(c); l++) {
        int C = swin_stage_dim(c, swin_block_stage(c, l));
        q->wp[l] = q->w[l] = malloc(sizeof(float) * C * C);
        q->bp[l] = q->b[l] = malloc(sizeof(float) * C);
        for (int i = 0; i < C * C; i++) q->w[l][i] = 0.1f * rng_normal(r);
        for (int i = 0; i < C; i++) q->b[l][i] = 0.1f * rng_normal(r);
    }
}
static void qwt_free(qwt_set *q, const swin_config *c) {
    for (int l = 0; l < swin_num_blocks(c); l++) free(q->w[l]), free(q->b[l]);
}

/* The forward-only pass equals the training forward bit for bit, with quantization hooks and
 * QwT terms on; so does the model run piece by piece (embed, merges and blocks, head). */
TEST(forward_only_and_block_level_passes_are_bit_identical) {
    const swin_config *cfgs[2] = {&tiny, &three};
    for (int ci = 0; ci < 2; ci++) {
        const swin_config *c = cfgs[ci];
        swin_model m;
        char err[256];
        CHECK(swin_init(&m, c, err, sizeof err) == 0);
        swin_init_weights(&m, 5);
        rng_t r;
        rng_seed(&r, 2);
        int B = 3, K = c->num_classes, CL = swin_stage_dim(c, c->stages - 1);
        size_t nx = (size_t)B * c->in_chans * c->img_size * c->img_size;
        float *x = malloc(sizeof(float) * nx);
        for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
        qwt_set q;
        qwt_make(&q, c, &r);
        model_hooks id = {.forward = copy_fwd, .backward = copy_bwd};
        swin_set_hooks(&m, &id);
        m.qwt_w = q.wp;
        m.qwt_b = q.bp;
        CHECK(swin_forward(&m, x, B, err, sizeof err) == 0);
        float *ref = malloc(sizeof(float) * B * K), *feat = malloc(sizeof(float) * B * CL);
        memcpy(ref, m.logits, sizeof(float) * B * K);
        for (int b = 0; b < B; b++) memcpy(feat + b * CL, swin_feature(&m, b), sizeof(float) * CL);
        swin_release_acts(&m);
        CHECK(m.logits == NULL);
        CHECK(swin_forward_infer(&m, x, B, err, sizeof err) == 0);
        CHECK(memcmp(ref, m.logits, sizeof(float) * B * K) == 0);
        for (int b = 0; b < B; b++)
            CHECK(memcmp(feat + b * CL, swin_feature(&m, b), sizeof(float) * CL) == 0);
        CHECK(swin_alloc_grads(&m, err, sizeof err) == 0);
        m.qwt_w = NULL;
        CHECK(swin_backward(&m, ref, NULL, NULL, err, sizeof err) == -1 &&
              strstr(err, "forward-only"));
        m.qwt_w = q.wp;

        /* piece by piece, through buffers of the caller's */
        size_t big = (size_t)B * swin_stage_res(c, 0) * swin_stage_res(c, 0) * c->embed_dim;
        float *u = malloc(sizeof(float) * big), *v = malloc(sizeof(float) * big);
        float *lg = malloc(sizeof(float) * B * K);
        CHECK(swin_embed_forward(&m, u, x, B, err, sizeof err) == 0);
        for (int s = 0, l = 0; s < c->stages; s++) {
            if (s > 0) {
                CHECK(swin_merge_forward(&m, s, v, u, B, err, sizeof err) == 0);
                float *t = u; u = v; v = t;
            }
            for (int j = 0; j < c->depths[s]; j++, l++) {
                CHECK(swin_block_forward(&m, l, v, u, B, err, sizeof err) == 0);
                float *t = u; u = v; v = t;
            }
        }
        CHECK(swin_head_forward(&m, lg, u, B, err, sizeof err) == 0);
        CHECK(memcmp(ref, lg, sizeof(float) * B * K) == 0);
        CHECK(swin_merge_forward(&m, 0, v, u, B, err, sizeof err) == -1 && strstr(err, "no merge"));
        CHECK(swin_block_forward(&m, 99, v, u, B, err, sizeof err) == -1);
        free(u); free(v); free(lg); free(x); free(ref); free(feat);
        qwt_free(&q, c);
        swin_free(&m);
    }
}

/* With one block, a forward-only layout and a training one have the same number of block slots:
 * the backward must still refuse to follow a forward-only pass, and still work after a training
 * forward. */
TEST(one_block_model_knows_its_forward_only_pass) {
    swin_config c = {.img_size = 8, .patch = 2, .in_chans = 1, .embed_dim = 8, .stages = 1,
                     .depths = {1}, .heads = {2}, .window = 2, .mlp_ratio = 2, .num_classes = 3,
                     .ln_eps = 1e-5f};
    swin_model m;
    char err[256];
    CHECK(swin_init(&m, &c, err, sizeof err) == 0);
    CHECK(swin_alloc_grads(&m, err, sizeof err) == 0);
    swin_init_weights(&m, 4);
    float x[2 * 64], dl[6] = {1, 0, -1, 0.5f, 0.5f, -1};
    rng_t r;
    rng_seed(&r, 4);
    for (int i = 0; i < 128; i++) x[i] = rng_normal(&r);
    CHECK(swin_forward_infer(&m, x, 2, err, sizeof err) == 0);
    CHECK(swin_backward(&m, dl, NULL, NULL, err, sizeof err) == -1 && strstr(err, "forward-only"));
    CHECK(swin_forward(&m, x, 2, err, sizeof err) == 0);
    CHECK(swin_backward(&m, dl, NULL, NULL, err, sizeof err) == 0);
    swin_free(&m);
}

static int fail_merge(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                      int cols) {
    (void)ctx;
    if (p == QP_MERGE_IN && layer == 1) return -1;
    return copy_fwd(ctx, layer, p, out, in, rows, cols);
}

TEST(a_failing_quantizer_stops_the_pass) {
    swin_model m;
    char err[256] = "";
    CHECK(swin_init(&m, &tiny, err, sizeof err) == 0);
    swin_init_weights(&m, 6);
    model_hooks h = {.forward = fail_merge, .backward = copy_bwd};
    swin_set_hooks(&m, &h);
    float x[2 * 16 * 16] = {0};
    CHECK(swin_forward(&m, x, 1, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "point 8 of layer 1"), "message: %s", err);
    CHECK(swin_forward_infer(&m, x, 1, err, sizeof err) == -1);
    swin_free(&m);
}

TEST(identity_hooks_clone_and_batches_change_nothing) {
    swin_model m, m2;
    char err[256];
    CHECK(swin_init(&m, &three, err, sizeof err) == 0);
    swin_init_weights(&m, 3);
    rng_t r;
    rng_seed(&r, 1);
    int K = three.num_classes;
    size_t n1 = 3 * 24 * 24;
    float *x = malloc(sizeof(float) * 4 * n1);
    for (size_t i = 0; i < 4 * n1; i++) x[i] = rng_normal(&r);
    CHECK(swin_forward(&m, x, 4, err, sizeof err) == 0);
    float plain[16], one[4];
    memcpy(plain, m.logits, sizeof plain);
    model_hooks id = {.forward = copy_fwd, .backward = copy_bwd};
    swin_set_hooks(&m, &id);
    CHECK(swin_forward(&m, x, 4, err, sizeof err) == 0);
    CHECK(memcmp(plain, m.logits, sizeof plain) == 0);
    /* a smaller batch in the same buffers: image 2 alone */
    CHECK(swin_forward(&m, x + 2 * n1, 1, err, sizeof err) == 0);
    memcpy(one, m.logits, sizeof one);
    for (int k = 0; k < K; k++)
        CHECK_NEAR(one[k], plain[2 * K + k], 1e-5 * (1 + fabs(plain[2 * K + k])));
    CHECK(swin_clone(&m2, &m, err, sizeof err) == 0);
    CHECK(m2.hooks == NULL && m2.acts == NULL && m2.grad_mem == NULL);
    CHECK(swin_forward(&m2, x, 4, err, sizeof err) == 0);
    CHECK(memcmp(plain, m2.logits, sizeof plain) == 0);
    free(x);
    swin_free(&m);
    swin_free(&m2);
}

TEST(parameter_table_has_timm_names_and_counts) {
    /* Swin-T: timm's swin_tiny_patch4_window7_224 has 28,288,354 parameters */
    swin_config t = {.img_size = 224, .patch = 4, .in_chans = 3, .embed_dim = 96, .stages = 4,
                     .depths = {2, 2, 6, 2}, .heads = {3, 6, 12, 24}, .window = 7,
                     .mlp_ratio = 4, .num_classes = 1000, .ln_eps = 1e-5f};
    swin_model m;
    char err[256];
    CHECK(swin_init(&m, &t, err, sizeof err) == 0);
    CHECK_MSG(m.num_params == 28288354, "%zu parameters", m.num_params);
    /* 4 embedding, 3 per merge, 13 per stage, 4 final */
    CHECK(m.ninfo == 4 + 3 * 3 + 13 * 4 + 4);
    size_t sum = 0;
    for (int i = 0; i < m.ninfo; i++) {
        CHECK(m.info[i].offset == sum);
        sum += m.info[i].numel;
    }
    CHECK(sum == m.num_params);
    int layer = 0;
    int i = swin_param_lookup(&m, "layers.2.blocks.5.attn.qkv.weight", &layer);
    CHECK(i >= 0 && layer == 5 && m.info[i].shape[0] == 3 * 384 && m.info[i].shape[1] == 384 &&
          m.info[i].layers == 6 && m.info[i].decay == 1);
    CHECK(m.param_mem + m.info[i].offset == m.params.stage[2].qkv_w);
    i = swin_param_lookup(&m, "layers.3.blocks.1.attn.relative_position_bias_table", &layer);
    CHECK(i >= 0 && layer == 1 && m.info[i].shape[0] == 169 && m.info[i].shape[1] == 24 &&
          m.info[i].decay == 0);
    i = swin_param_lookup(&m, "layers.1.downsample.reduction.weight", &layer);
    CHECK(i >= 0 && layer == -1 && m.info[i].shape[0] == 192 && m.info[i].shape[1] == 384);
    CHECK(swin_param_lookup(&m, "head.fc.bias", &layer) == m.ninfo - 1);
    CHECK(swin_param_lookup(&m, "patch_embed.norm.weight", &layer) == 2);
    CHECK(swin_param_lookup(&m, "layers.0.downsample.norm.weight", &layer) == -1);
    CHECK(swin_param_lookup(&m, "layers.2.blocks.6.norm1.weight", &layer) == -1);
    CHECK(swin_param_lookup(&m, "layers.2.blocks.05.norm1.weight", &layer) == -1);
    CHECK(m.params.stage[0].merge_w == NULL && m.params.stage[1].merge_w != NULL);
    /* flops: timm's 4.5 GMACs of Swin-T */
    double f = swin_forward_flops(&t);
    CHECK_MSG(f > 2 * 4.4e9 && f < 2 * 4.6e9, "%.4g flops", f);
    swin_init_weights(&m, 1);
    CHECK(m.params.stage[3].ln2_w[100] == 1.0f && m.params.stage[1].merge_norm_w[5] == 1.0f &&
          m.params.stage[2].qkv_b[7] == 0.0f && m.params.stage[2].qkv_w[7] != 0.0f &&
          m.params.stage[0].bias_table[3] != 0.0f);
    swin_free(&m);
}

TEST(config_check_names_the_problem) {
    char err[256];
    swin_config c = tiny;
    CHECK(swin_config_check(&c, err, sizeof err) == 0);
    c.img_size = 15;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "multiple of patch"));
    c = tiny;
    c.stages = 0;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "stages"));
    c = tiny;
    c.stages = SWIN_MAX_STAGES + 1;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "stages"));
    c = three;
    c.stages = 4; /* stage 2 is 3x3: no merge after it */
    c.depths[3] = 2;
    c.heads[3] = 2;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "odd before a merge"));
    c = tiny;
    c.window = 3; /* 8 is no multiple of 3 */
    CHECK(swin_config_check(&c, err, sizeof err) == -1 &&
          strstr(err, "not a multiple of its window"));
    c = tiny;
    c.heads[1] = 5;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "multiple of its heads"));
    c = tiny;
    c.depths[0] = 0;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "positive depth"));
    c = tiny;
    c.ln_eps = 0;
    CHECK(swin_config_check(&c, err, sizeof err) == -1 && strstr(err, "ln_eps"));
    swin_model m;
    c = tiny;
    c.num_classes = 0;
    CHECK(swin_init(&m, &c, err, sizeof err) == -1 && strstr(err, "num_classes"));
    /* the window: shrunk to the map where the map is not larger, and then no shift */
    CHECK(swin_stage_window(&three, 0) == 6 && swin_stage_window(&three, 1) == 6 &&
          swin_stage_window(&three, 2) == 3);
    CHECK(swin_block_shift(&three, 0) == 0 && swin_block_shift(&three, 1) == 3 &&
          swin_block_shift(&three, 3) == 0 && swin_block_shift(&three, 5) == 0);
    CHECK(swin_block_stage(&three, 3) == 1 && swin_num_blocks(&three) == 6);
}

TEST_MAIN()
