/*
 * test_swin_ref.c: the Swin engine against PyTorch. tests/ref/gen_swin_ref.py wrote, with
 * Debian's torch, a model with timm >= 0.9 SwinTransformer semantics: its weights, inputs,
 * every block's and merge's output, logits, feature, loss and every gradient, for the tiny
 * config (a shifted block, a window that covers its map) and the demo config on Fashion-MNIST
 * images. Here the C model takes the same weights (by their timm names, read straight from the
 * file: the checkpoint loader is not this test's subject) and must reproduce all of it, piece by
 * piece from PyTorch's own inputs and as a whole.
 */
#include <stdlib.h>

#include <unistd.h>

#include "engine/ops.h"
#include "engine/swin.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
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

/* "2,6" into v; returns the count */
static int parse_list(const char *s, int *v, int max) {
    int n = 0;
    while (s && *s && n < max) {
        v[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

static int meta_int(const st_file *f, const char *key) {
    const char *v = st_meta(f, key);
    CHECK_MSG(v != NULL, "no metadata %s", key);
    return v ? atoi(v) : 0;
}

/* The model of the fixture: config from the metadata, every parameter by its timm name.
 * Returns 0, or -1 (having recorded why). */
static int load(swin_model *m, const st_file *f, const char *file) {
    char err[512], name[256];
    swin_config c = {0};
    c.img_size = meta_int(f, "img_size");
    c.patch = meta_int(f, "patch_size");
    c.in_chans = meta_int(f, "in_chans");
    c.embed_dim = meta_int(f, "embed_dim");
    c.stages = parse_list(st_meta(f, "depths"), c.depths, SWIN_MAX_STAGES);
    CHECK(parse_list(st_meta(f, "num_heads"), c.heads, SWIN_MAX_STAGES) == c.stages);
    c.window = meta_int(f, "window_size");
    c.mlp_ratio = meta_int(f, "mlp_ratio");
    c.num_classes = meta_int(f, "num_classes");
    c.ln_eps = (float)atof(st_meta(f, "ln_eps"));
    if (swin_init(m, &c, err, sizeof err)) {
        CHECK_MSG(0, "%s: %s", file, err);
        return -1;
    }
    int used = 0;
    for (int i = 0; i < m->ninfo; i++) {
        const param_info *pi = &m->info[i];
        size_t per = pi->numel / pi->layers;
        for (int l = 0; l < pi->layers; l++) {
            const char *br = strstr(pi->name, "{}");
            if (br)
                snprintf(name, sizeof name, "%.*s%d%s", (int)(br - pi->name), pi->name, l, br + 2);
            else
                snprintf(name, sizeof name, "%s", pi->name);
            const st_tensor *t = st_find(f, name);
            CHECK_MSG(t && (size_t)t->numel == per, "%s: %s missing or of another size", file,
                      name);
            if (!t || (size_t)t->numel != per) return -1;
            st_to_f32(t, m->param_mem + pi->offset + (size_t)l * per);
            used++;
        }
    }
    /* and nothing in the file that is a parameter went unused */
    int params = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const char *n = f->tensors[i].name;
        if (strncmp(n, "grad.", 5) && strncmp(n, "act.", 4) && strcmp(n, "input") &&
            strcmp(n, "labels") && strcmp(n, "feature") && strcmp(n, "logits") &&
            strcmp(n, "loss") && strcmp(n, "dinput"))
            params++;
    }
    CHECK_MSG(params == used, "%s: %d parameter tensors in the file, %d loaded", file, params,
              used);
    return 0;
}

/* One fixture; tol_fwd for activations and logits, tol_grad for the gradients. */
static void check_fixture(const char *file, double tol_fwd, double tol_grad) {
    char err[1024], name[256];
    st_file f;
    if (st_open(&f, file, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    swin_model m;
    if (load(&m, &f, file)) {
        st_close(&f);
        return;
    }
    const swin_config *c = &m.cfg;
    const char *base = strrchr(file, '/') + 1;
    int B = meta_int(&f, "batch"), K = c->num_classes, S = c->stages;
    int CL = swin_stage_dim(c, S - 1);
    float smoothing = (float)atof(st_meta(&f, "label_smoothing"));
    size_t nin = 0;
    float *input = tensor_f32(&f, "input", &nin);
    float *labels_f = tensor_f32(&f, "labels", NULL);
    int *labels = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) labels[b] = (int)labels_f[b];

    /* piece by piece, each from PyTorch's own input to it */
    size_t big = (size_t)B * swin_stage_res(c, 0) * swin_stage_res(c, 0) * c->embed_dim;
    float *y = malloc(sizeof(float) * big), *ln = malloc(sizeof(float) * big);
    float *mean = malloc(sizeof(float) * big), *rstd = malloc(sizeof(float) * big);
    double worst_act = 0;
    char worst_act_name[256] = "";
#define COMPARE(got, refname, n)                                                                  \
    do {                                                                                          \
        float *r_ = tensor_f32(&f, refname, NULL);                                                \
        CHECK_MSG(r_ != NULL, "%s: no %s", base, refname);                                       \
        if (r_) {                                                                                 \
            double e_ = relerr(got, r_, n);                                                       \
            if (e_ > worst_act) {                                                                 \
                worst_act = e_;                                                                   \
                snprintf(worst_act_name, sizeof worst_act_name, "%s", refname);                   \
            }                                                                                     \
            CHECK_MSG(e_ < tol_fwd, "%s: %s error %.3g", base, refname, e_);                      \
        }                                                                                         \
        free(r_);                                                                                 \
    } while (0)
    CHECK(swin_embed_forward(&m, y, input, B, err, sizeof err) == 0);
    COMPARE(y, "act.patch", big);
    swin_model z; /* a copy with one block's fc2 zeroed: its output is x + the attention branch */
    CHECK(swin_clone(&z, &m, err, sizeof err) == 0);
    for (int s = 0, l = 0; s < S; s++) {
        int C = swin_stage_dim(c, s);
        size_t n = (size_t)B * swin_stage_res(c, s) * swin_stage_res(c, s) * C;
        float *x;
        if (s > 0) {
            snprintf(name, sizeof name, "act.layers.%d.blocks.%d", s - 1, c->depths[s - 1] - 1);
            x = tensor_f32(&f, name, NULL);
            CHECK(swin_merge_forward(&m, s, y, x, B, err, sizeof err) == 0);
            snprintf(name, sizeof name, "act.layers.%d.downsample", s);
            COMPARE(y, name, n);
            free(x);
        }
        for (int j = 0; j < c->depths[s]; j++, l++) {
            if (j > 0) snprintf(name, sizeof name, "act.layers.%d.blocks.%d", s, j - 1);
            else if (s > 0) snprintf(name, sizeof name, "act.layers.%d.downsample", s);
            else snprintf(name, sizeof name, "act.patch");
            x = tensor_f32(&f, name, NULL);
            CHECK(swin_block_forward(&m, l, y, x, B, err, sizeof err) == 0);
            snprintf(name, sizeof name, "act.layers.%d.blocks.%d", s, j);
            COMPARE(y, name, n);
            snprintf(name, sizeof name, "act.layers.%d.blocks.%d.norm1", s, j);
            if (st_find(&f, name)) {
                const swin_stage_params *st = &m.params.stage[s];
                layernorm_forward(ln, mean, rstd, x, st->ln1_w + (size_t)j * C,
                                  st->ln1_b + (size_t)j * C, (int)(n / C), C, c->ln_eps);
                COMPARE(ln, name, n);
            }
            snprintf(name, sizeof name, "act.layers.%d.blocks.%d.attn", s, j);
            if (st_find(&f, name)) {
                size_t H = (size_t)c->mlp_ratio * C;
                memset(z.params.stage[s].fc2_w + (size_t)j * C * H, 0, sizeof(float) * C * H);
                memset(z.params.stage[s].fc2_b + (size_t)j * C, 0, sizeof(float) * C);
                CHECK(swin_block_forward(&z, l, ln, x, B, err, sizeof err) == 0);
                for (size_t i = 0; i < n; i++) ln[i] -= x[i];
                COMPARE(ln, name, n);
            }
            free(x);
        }
    }
    swin_free(&z);

    /* the whole model */
    CHECK(swin_forward(&m, input, B, err, sizeof err) == 0);
    float *logits_ref = tensor_f32(&f, "logits", NULL);
    double logit_err = relerr(m.logits, logits_ref, (size_t)B * K);
    CHECK_MSG(logit_err < tol_fwd, "%s: logits error %.3g", base, logit_err);
    float *feat = malloc(sizeof(float) * B * CL), *feat_ref = tensor_f32(&f, "feature", NULL);
    for (int b = 0; b < B; b++)
        memcpy(feat + (size_t)b * CL, swin_feature(&m, b), sizeof(float) * CL);
    double e = relerr(feat, feat_ref, (size_t)B * CL);
    CHECK_MSG(e < tol_fwd, "%s: feature error %.3g", base, e);
    float *probs = malloc(sizeof(float) * B * K), *dlogits = calloc((size_t)B * K, sizeof(float));
    float loss = crossentropy_forward_backward(probs, dlogits, m.logits, labels, B, K, smoothing,
                                               1.0f);
    float *loss_ref = tensor_f32(&f, "loss", NULL);
    CHECK_MSG(fabs(loss - loss_ref[0]) <= 1e-5 * fabs(loss_ref[0]), "%s: loss %.8g vs %.8g", base,
              loss, loss_ref[0]);

    /* the forward-only pass gives the very same bits */
    float *lg = malloc(sizeof(float) * B * K);
    memcpy(lg, m.logits, sizeof(float) * B * K);
    swin_release_acts(&m);
    CHECK(swin_forward_infer(&m, input, B, err, sizeof err) == 0);
    CHECK_MSG(memcmp(lg, m.logits, sizeof(float) * B * K) == 0, "%s: forward-only logits differ",
              base);
    free(lg);
    CHECK(swin_forward(&m, input, B, err, sizeof err) == 0);

    CHECK(swin_alloc_grads(&m, err, sizeof err) == 0);
    swin_zero_grad(&m);
    float *dinput = calloc(nin, sizeof(float));
    CHECK(swin_backward(&m, dlogits, NULL, dinput, err, sizeof err) == 0);
    double worst = 0;
    const char *worst_name = "";
    int ngrad = 0;
    for (int i = 0; i < f.ntensors; i++) {
        const char *gname = f.tensors[i].name;
        if (strncmp(gname, "grad.", 5)) continue;
        int layer, pi = swin_param_lookup(&m, gname + 5, &layer);
        CHECK_MSG(pi >= 0, "%s: no parameter for %s", base, gname);
        if (pi < 0) continue;
        size_t n = 0;
        float *g = tensor_f32(&f, gname, &n);
        size_t per = m.info[pi].numel / m.info[pi].layers;
        CHECK(n == per);
        e = relerr(m.grad_mem + m.info[pi].offset + (layer < 0 ? 0 : layer) * per, g, n);
        if (e > worst) { worst = e; worst_name = gname; }
        ngrad++;
        free(g);
    }
    int nparam = 0;
    for (int i = 0; i < m.ninfo; i++) nparam += m.info[i].layers;
    CHECK_MSG(ngrad == nparam, "%s: %d gradients for %d parameter tensors", base, ngrad, nparam);
    CHECK_MSG(worst < tol_grad, "%s: gradient error %.3g at %s", base, worst, worst_name);
    float *dref = tensor_f32(&f, "dinput", NULL);
    double de = relerr(dinput, dref, nin);
    CHECK_MSG(de < tol_grad, "%s: dinput error %.3g", base, de);
    printf("  %s: activations %.2g (%s), logits %.2g, feature/loss ok, worst gradient %.2g (%s), "
           "dinput %.2g\n", base, worst_act, worst_act_name, logit_err, worst, worst_name, de);
    free(dref);
    free(input); free(labels_f); free(labels); free(y); free(ln); free(mean); free(rstd);
    free(logits_ref); free(feat); free(feat_ref); free(probs); free(dlogits); free(loss_ref);
    free(dinput);
    swin_free(&m);
    st_close(&f);
}

TEST(tiny_matches_pytorch) { check_fixture(FIX "swin_tiny_ref.safetensors", 1e-5, 1e-4); }

TEST(demo_config_on_fashion_mnist_matches_pytorch) {
    check_fixture(FIX "swin_demo_ref.safetensors", 1e-4, 1e-3);
}

/* The tiny fixture's logits through ckpt_load of one of its three namings (conv: the naming
 * the loader must report); NULL (recorded) on failure. */
static float *logits_via_loader(const char *file, const char *conv, const float *input, int B) {
    char err[1024];
    model m;
    ckpt_convention c;
    ckpt_hints hints = {.img_size = 16, .allow_extra = 1}; /* the old and HF files do not say */
    int rc = ckpt_load(&m, file, &hints, &c, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc) return NULL;
    CHECK_MSG(m.arch == MODEL_SWIN && !strcmp(ckpt_convention_name(c), conv),
              "%s: loaded as %s, %s names", file, model_arch_name(m.arch), ckpt_convention_name(c));
    float *out = NULL;
    if (model_forward(&m, input, B, err, sizeof err) == 0) {
        size_t n = (size_t)B * model_get_dims(&m).num_classes;
        out = malloc(sizeof(float) * n);
        memcpy(out, model_logits(&m), sizeof(float) * n);
    }
    CHECK_MSG(out != NULL, "%s", err);
    model_free(&m);
    return out;
}

TEST(three_namings_load_to_identical_logits) {
    char err[512];
    st_file f;
    CHECK(st_open(&f, FIX "swin_tiny_ref.safetensors", err, sizeof err) == 0);
    int B = meta_int(&f, "batch");
    size_t n = 0;
    float *input = tensor_f32(&f, "input", NULL), *want = tensor_f32(&f, "logits", &n);
    float *timm = logits_via_loader(FIX "swin_tiny_ref.safetensors", "timm", input, B);
    float *old = logits_via_loader(FIX "swin_tiny_timm_old.safetensors", "timm < 0.9", input, B);
    float *hf = logits_via_loader(FIX "swin_tiny_hf.safetensors", "huggingface", input, B);
    if (timm && old && hf) {
        CHECK(memcmp(timm, old, sizeof(float) * n) == 0 && memcmp(timm, hf, sizeof(float) * n) == 0);
        double e = relerr(timm, want, n);
        printf("  three namings: bit-identical logits, %.2g from PyTorch's\n", e);
        CHECK(e < 1e-4);
    }
    free(timm); free(old); free(hf); free(input); free(want);
    st_close(&f);
}

TEST(a_swin_without_image_size_is_refused_then_saved_with_it) {
    char err[1024], path[] = "/tmp/gplq_test_swin_XXXXXX";
    model m, back;
    CHECK(ckpt_load(&m, FIX "swin_tiny_hf.safetensors", NULL, NULL, err, sizeof err) != 0);
    CHECK_MSG(strstr(err, "image size") && strstr(err, "--img-size"), "message: %s", err);
    ckpt_hints hints = {.img_size = 16};
    CHECK_MSG(ckpt_load(&m, FIX "swin_tiny_hf.safetensors", &hints, NULL, err, sizeof err) == 0,
              "%s", err);
    /* gplq writes timm >= 0.9 names with the config in the metadata: no hint needed back */
    int fd = mkstemp(path);
    close(fd);
    CHECK_MSG(ckpt_save(&m, path, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    ckpt_convention c;
    CHECK_MSG(ckpt_load(&back, path, NULL, &c, err, sizeof err) == 0, "%s", err);
    CHECK(c == CKPT_TIMM && model_same_config(&m, &back) &&
          memcmp(model_params(&m), model_params(&back), sizeof(float) * model_num_params(&m)) == 0);
    st_file f;
    model_config mc;
    CHECK(st_open(&f, path, err, sizeof err) == 0);
    CHECK_MSG(ckpt_config_from_meta(&f, &mc, err, sizeof err) == 0, "%s", err);
    model_config want = model_get_config(&m);
    CHECK(!memcmp(&mc, &want, sizeof mc));
    st_close(&f);
    /* a ViT's image size is its position embedding's: a different one is refused */
    hints.img_size = 32;
    CHECK(ckpt_load(&back, FIX "vit_tiny_hf.safetensors", &hints, NULL, err, sizeof err) != 0 &&
          strstr(err, "position embedding"));
    model_free(&m);
    model_free(&back);
    unlink(path);
}

TEST_MAIN()
