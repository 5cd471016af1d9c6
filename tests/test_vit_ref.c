/*
 * test_vit_ref.c: the engine against PyTorch. tests/ref/gen_vit_ref.py wrote, with Debian's
 * torch, a timm-equivalent model's weights, inputs, activations, logits, loss and every
 * gradient for three configs (tiny, tiny distilled, the demo config on real Fashion-MNIST
 * images); here the C model loads the same weights and must reproduce all of it. Also: the
 * same weights in HuggingFace and torchvision naming give the same logits.
 */
#include <stdlib.h>

#include "engine/ops.h"
#include "engine/vit.h"
#include "io/checkpoint.h"
#include "tests/test.h"

#define FIX GPLQ_SRC_DIR "/tests/fixtures/"

static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

static float *tensor_f32(const st_file *f, const char *name, size_t *n) {
    const st_tensor *t = st_find(f, name);
    if (!t) return NULL;
    float *x = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    st_to_f32(t, x);
    if (n) *n = (size_t)t->numel;
    return x;
}

/* Runs one fixture; returns worst relative errors of logits and gradients. */
static void check_fixture(const char *file, double *logit_err, double *grad_err) {
    char err[1024];
    st_file f;
    *logit_err = *grad_err = INFINITY;
    if (st_open(&f, file, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    model mw;
    vit_model *m = &mw.vit; /* a checkpoint loads as a model; these tests are the ViT's */
    ckpt_hints hints = {.allow_extra = 1};
    if (ckpt_load_file(&mw, &f, &hints, NULL, err, sizeof err)) {
        CHECK_MSG(0, "%s: %s", file, err);
        st_close(&f);
        return;
    }
    const vit_config *c = &m->cfg;
    int B = atoi(st_meta(&f, "batch")), K = c->num_classes, C = c->dim, T = vit_num_tokens(c);
    float smoothing = (float)atof(st_meta(&f, "label_smoothing"));
    CHECK(c->heads == atoi(st_meta(&f, "num_heads")));
    size_t nin = 0;
    float *input = tensor_f32(&f, "input", &nin);
    float *labels_f = tensor_f32(&f, "labels", NULL);
    int *labels = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) labels[b] = (int)labels_f[b];

    /* the pieces: embedding, block 0's norm1 and output */
    size_t nx = (size_t)B * T * C;
    float *x0 = malloc(sizeof(float) * nx), *y0 = malloc(sizeof(float) * nx);
    float *mean = malloc(sizeof(float) * B * T), *rstd = malloc(sizeof(float) * B * T);
    CHECK(vit_embed_forward(m, x0, input, B, err, sizeof err) == 0);
    float *ref = tensor_f32(&f, "act.patch", NULL);
    double e = relerr(x0, ref, nx);
    CHECK_MSG(e < 1e-5, "%s: act.patch error %.3g", file, e);
    free(ref);
    layernorm_forward(y0, mean, rstd, x0, m->params.ln1_w, m->params.ln1_b, B * T, C, c->ln_eps);
    ref = tensor_f32(&f, "act.blocks.0.norm1", NULL);
    e = relerr(y0, ref, nx);
    CHECK_MSG(e < 1e-5, "%s: act.blocks.0.norm1 error %.3g", file, e);
    free(ref);
    CHECK(vit_block_forward(m, 0, y0, x0, B, err, sizeof err) == 0);
    ref = tensor_f32(&f, "act.blocks.0", NULL);
    e = relerr(y0, ref, nx);
    CHECK_MSG(e < 1e-5, "%s: act.blocks.0 error %.3g", file, e);
    free(ref);

    /* the whole model */
    CHECK(vit_forward(m, input, B, err, sizeof err) == 0);
    float *logits_ref = tensor_f32(&f, "logits", NULL);
    *logit_err = relerr(m->logits, logits_ref, (size_t)B * K);
    float *feat = malloc(sizeof(float) * B * C), *feat_ref = tensor_f32(&f, "feature", NULL);
    for (int b = 0; b < B; b++) memcpy(feat + (size_t)b * C, vit_feature(m, b), sizeof(float) * C);
    e = relerr(feat, feat_ref, (size_t)B * C);
    CHECK_MSG(e < 1e-4, "%s: feature error %.3g", file, e);
    float *probs = malloc(sizeof(float) * B * K), *dlogits = calloc((size_t)B * K, sizeof(float));
    float loss = crossentropy_forward_backward(probs, dlogits, m->logits, labels, B, K, smoothing, 1.0f);
    float *loss_ref = tensor_f32(&f, "loss", NULL);
    CHECK_MSG(fabs(loss - loss_ref[0]) <= 1e-5 * fabs(loss_ref[0]), "%s: loss %.8g vs %.8g", file,
              loss, loss_ref[0]);

    /* the forward-only pass (one block's buffers for all blocks) gives the very same bits */
    float *lg = malloc(sizeof(float) * B * K);
    memcpy(lg, m->logits, sizeof(float) * B * K);
    vit_release_acts(m);
    CHECK(vit_forward_infer(m, input, B, err, sizeof err) == 0);
    CHECK_MSG(memcmp(lg, m->logits, sizeof(float) * B * K) == 0, "%s: forward-only logits differ", file);
    for (int b = 0; b < B; b++)
        CHECK(memcmp(feat + (size_t)b * C, vit_feature(m, b), sizeof(float) * C) == 0);
    free(lg);
    CHECK(vit_forward(m, input, B, err, sizeof err) == 0); /* the backward below needs it */

    CHECK(vit_alloc_grads(m, err, sizeof err) == 0);
    vit_zero_grad(m);
    float *dinput = calloc(nin, sizeof(float));
    CHECK(vit_backward(m, dlogits, NULL, dinput, err, sizeof err) == 0);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < f.ntensors; i++) {
        const char *name = f.tensors[i].name;
        if (strncmp(name, "grad.", 5)) continue;
        int layer, pi = vit_param_lookup(m, name + 5, &layer);
        CHECK_MSG(pi >= 0, "%s: no parameter for %s", file, name);
        if (pi < 0) continue;
        size_t n = 0;
        float *g = tensor_f32(&f, name, &n);
        size_t per = m->info[pi].numel / (m->info[pi].per_layer ? c->depth : 1);
        CHECK(n == per);
        e = relerr(m->grad_mem + m->info[pi].offset + (layer < 0 ? 0 : layer) * per, g, n);
        if (e > worst) { worst = e; worst_name = name; }
        free(g);
    }
    *grad_err = worst;
    ref = tensor_f32(&f, "dinput", NULL);
    e = relerr(dinput, ref, nin);
    CHECK_MSG(e < 1e-3, "%s: dinput error %.3g", file, e);
    printf("  %s: logits %.2g, feature/loss ok, worst gradient %.2g (%s), dinput %.2g\n",
           strrchr(file, '/') + 1, *logit_err, worst, worst_name, e);
    free(ref);
    free(input); free(labels_f); free(labels); free(x0); free(y0); free(mean); free(rstd);
    free(logits_ref); free(feat); free(feat_ref); free(probs); free(dlogits); free(loss_ref);
    free(dinput);
    model_free(&mw);
    st_close(&f);
}

TEST(tiny_matches_pytorch) {
    double le, ge;
    check_fixture(FIX "vit_tiny_ref.safetensors", &le, &ge);
    CHECK_MSG(le < 1e-5, "logits error %.3g", le);
    CHECK_MSG(ge < 1e-4, "gradient error %.3g", ge);
}

TEST(tiny_distilled_matches_pytorch) {
    double le, ge;
    check_fixture(FIX "vit_tiny_dist_ref.safetensors", &le, &ge);
    CHECK_MSG(le < 1e-5, "logits error %.3g", le);
    CHECK_MSG(ge < 1e-4, "gradient error %.3g", ge);
}

TEST(demo_config_on_fashion_mnist_matches_pytorch) {
    double le, ge;
    check_fixture(FIX "vit_demo_ref.safetensors", &le, &ge);
    CHECK_MSG(le < 1e-4, "logits error %.3g", le);
    CHECK_MSG(ge < 1e-3, "gradient error %.3g", ge);
}

/* logits of the model at path, on the tiny fixture's input; eps < 0 keeps the loaded one */
static float *logits_of(const char *path, float eps, int *n) {
    char err[1024];
    st_file f;
    model mw;
    vit_model *m = &mw.vit; /* a checkpoint loads as a model; these tests are the ViT's */
    ckpt_hints hints = {.num_heads = 2, .allow_extra = 1};
    float *out = NULL;
    if (st_open(&f, FIX "vit_tiny_ref.safetensors", err, sizeof err)) return NULL;
    float *input = tensor_f32(&f, "input", NULL);
    int B = atoi(st_meta(&f, "batch"));
    if (ckpt_load(&mw, path, &hints, NULL, err, sizeof err) == 0) {
        if (eps > 0) m->cfg.ln_eps = eps;
        if (vit_forward(m, input, B, err, sizeof err) == 0) {
            *n = B * m->cfg.num_classes;
            out = malloc(sizeof(float) * *n);
            memcpy(out, m->logits, sizeof(float) * *n);
        }
        model_free(&mw);
    }
    if (!out) fprintf(stderr, "  %s: %s\n", path, err);
    free(input);
    st_close(&f);
    return out;
}

TEST(three_naming_conventions_give_identical_logits) {
    int n = 0, nh = 0, nt = 0;
    float *timm = logits_of(FIX "vit_tiny_ref.safetensors", -1, &n);
    float *tv = logits_of(FIX "vit_tiny_tv.safetensors", -1, &nt);
    float *hf_same_eps = logits_of(FIX "vit_tiny_hf.safetensors", 1e-6f, &nh);
    float *hf = logits_of(FIX "vit_tiny_hf.safetensors", -1, &nh);
    CHECK(timm && tv && hf && hf_same_eps && n == nt && n == nh);
    if (!(timm && tv && hf && hf_same_eps)) return;
    /* same weights, same eps: bit for bit */
    CHECK(memcmp(timm, tv, sizeof(float) * n) == 0);
    CHECK(memcmp(timm, hf_same_eps, sizeof(float) * n) == 0);
    /* HuggingFace's own eps (1e-12) against PyTorch run with it */
    st_file f;
    char err[256];
    CHECK(st_open(&f, FIX "vit_tiny_ref.safetensors", err, sizeof err) == 0);
    float *ref = tensor_f32(&f, "logits_hf", NULL);
    CHECK_MSG(relerr(hf, ref, n) < 1e-5, "HF logits error %.3g", relerr(hf, ref, n));
    free(ref);
    st_close(&f);
    free(timm); free(tv); free(hf); free(hf_same_eps);
}

TEST(bf16_checkpoint_loads_as_its_float32_values) {
    /* The tiny fixture's weights saved as BF16 (the top 16 bits of each float) must load to
     * exactly the float32 model whose weights were cut the same way. */
    char err[1024], path[] = "/tmp/gplq_test_bf16_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    st_file f;
    CHECK(st_open(&f, FIX "vit_tiny_ref.safetensors", err, sizeof err) == 0);
    model ref, m;
    ckpt_hints hints = {.allow_extra = 1};
    CHECK(ckpt_load_file(&ref, &f, &hints, NULL, err, sizeof err) == 0);
    float *rp = model_params(&ref);
    for (size_t i = 0; i < model_num_params(&ref); i++) {
        uint32_t u;
        memcpy(&u, &rp[i], 4);
        u &= 0xffff0000u;
        memcpy(&rp[i], &u, 4);
    }
    st_writer *w = st_writer_new();
    uint16_t *bufs[64];
    int nb = 0;
    for (int i = 0; i < f.ntensors && nb < 64; i++) {
        const st_tensor *t = &f.tensors[i];
        int layer;
        if (model_param_lookup(&ref, t->name, &layer) < 0) continue;
        uint16_t *b = bufs[nb++] = malloc(2 * t->numel);
        for (int64_t j = 0; j < t->numel; j++) {
            float v;
            uint32_t u;
            memcpy(&v, (const char *)t->data + 4 * j, 4);
            memcpy(&u, &v, 4);
            b[j] = (uint16_t)(u >> 16);
        }
        CHECK(st_writer_add(w, t->name, ST_BF16, t->ndim, t->shape, b, err, sizeof err) == 0);
    }
    st_writer_meta(w, "num_heads", st_meta(&f, "num_heads"));
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    CHECK_MSG(ckpt_load(&m, path, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(model_same_config(&m, &ref) &&
          memcmp(model_params(&m), rp, sizeof(float) * model_num_params(&m)) == 0);
    model_free(&m);
    model_free(&ref);
    st_close(&f);
    unlink(path);
}

TEST(unknown_checkpoint_lists_missing_and_unexpected) {
    /* A file with one unrelated tensor: the message must name both sides. */
    char path[] = "/tmp/gplq_test_ckpt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    st_writer *w = st_writer_new();
    float x[4] = {0};
    int64_t shape[1] = {4};
    char err[1024];
    CHECK(st_writer_add(w, "encoder.weight", ST_F32, 1, shape, x, err, sizeof err) == 0);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    model m;
    CHECK(ckpt_load(&m, path, NULL, NULL, err, sizeof err) != 0);
    CHECK_MSG(strstr(err, "missing: patch_embed.proj.weight") && strstr(err, "unexpected: encoder.weight"),
              "message: %s", err);
    unlink(path);
}

TEST_MAIN()
