/*
 * bench_onnx.c: the files of `make bench`'s ONNX table (bench/onnx.py), and gplq's own FP32
 * forward rate beside them.
 *
 * For each model shape (the demo ViT and DeiT-S) it writes into OUT/<name>/: model.fp32.onnx,
 * model.q.safetensors, model.onnx (QDQ W4A4) and model.w4.onnx (MatMulNBits), then times
 * vit_forward_infer (FP32, no quantizers) at batch 1 and 64. The demo's FP32 weights are the
 * committed checkpoint; DeiT-S's are timm's initialization (no DeiT-S checkpoint ships with
 * gplq). The quantized files are made without the GPLQ pipeline (weights by stage 2's
 * quantizer, activation steps set to a constant, QwT on every block): speed and size depend on
 * the shapes and the operators, not on the values, and a 9-minute job per shape is no
 * benchmark. One JSON object per model on stdout.
 *
 * Usage: bench_onnx OUT [--models demo,deit-s] [--iters N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/blas.h"
#include "engine/model.h"
#include "gplq/actq.h"
#include "gplq/export.h"
#include "gplq/quant.h"
#include "gplq/stage2.h"
#include "io/checkpoint.h"
#include "onnx/export.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/half.h"

typedef struct {
    const char *name;
    model_config cfg;
    const char *weights; /* FP32 checkpoint, or NULL for timm's init */
} bench_model;

static const bench_model models[] = {
    {"demo", {.arch = MODEL_VIT,
              .vit = {.img_size = 28, .patch = 4, .in_chans = 1, .dim = 192, .depth = 6,
                      .heads = 3, .mlp_hidden = 768, .num_classes = 10, .ln_eps = 1e-6f,
                      .mean = {0.286f, 0.286f, 0.286f}, .std = {0.353f, 0.353f, 0.353f}}},
     GPLQ_SRC_DIR "/models/vit-fmnist.safetensors"},
    {"deit-s", {.arch = MODEL_VIT,
                .vit = {.img_size = 224, .patch = 16, .in_chans = 3, .dim = 384, .depth = 12,
                        .heads = 6, .mlp_hidden = 1536, .num_classes = 1000, .ln_eps = 1e-6f,
                        .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}}},
     NULL},
};

static int quantize(stage2_qweight *q, const float *w, int rows, int cols, int bits, char *err,
                    size_t errlen) {
    q->rows = rows, q->cols = cols, q->bits = bits;
    q->steps = malloc(sizeof(float) * rows);
    q->codes = malloc((size_t)rows * cols);
    if (!q->steps || !q->codes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return quant_weight(q->steps, q->codes, NULL, NULL, w, rows, cols, bits, NULL, 0, err, errlen);
}

/* model.q.safetensors of m in dir: W4 (patch W8), A4 steps 0.05 (patch 8 bits), QwT 0.01 I. */
static int write_q(const char *dir, const model *m, char *err, size_t errlen) {
    model_config mc = model_get_config(m);
    int L = model_get_dims(m).blocks;
    actq_set aq;
    if (actq_init(&aq, m, 4, 8, err, errlen)) return -1;
    for (int i = 0; i < aq.nq; i++)
        for (int k = 0; k < aq.q[i].channels; k++) aq.q[i].step[k] = 0.05f;
    stage2_result s2 = {.depth = L, .nlin = model_linears(m, NULL, 0)};
    s2.lin = calloc(s2.nlin, sizeof *s2.lin), s2.qw = calloc(s2.nlin, sizeof *s2.qw);
    s2.qwt_w = calloc(L, sizeof *s2.qwt_w), s2.qwt_b = calloc(L, sizeof *s2.qwt_b);
    s2.r2 = calloc(L, sizeof *s2.r2), s2.mse_before = calloc(L, sizeof *s2.mse_before);
    s2.mse_after = calloc(L, sizeof *s2.mse_after);
    int rc = -1;
    if (!s2.lin || !s2.qw || !s2.qwt_w || !s2.qwt_b || !s2.r2 || !s2.mse_before ||
        !s2.mse_after) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    model_linears(m, s2.lin, s2.nlin);
    for (int i = 0; i < s2.nlin; i++) {
        const model_linear *l = &s2.lin[i];
        if (quantize(&s2.qw[i], l->w, l->rows, l->cols, l->kind == MODEL_LIN_PATCH ? 8 : 4, err,
                     errlen))
            goto out;
    }
    for (int l = 0; l < L; l++) {
        int T, C;
        model_block_shape(&mc, l, &T, &C);
        s2.qwt_w[l] = calloc((size_t)C * C, sizeof(float));
        s2.qwt_b[l] = calloc(C, sizeof(float));
        if (!s2.qwt_w[l] || !s2.qwt_b[l]) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        for (int i = 0; i < C; i++) s2.qwt_w[l][(size_t)i * C + i] = half_round(0.01f);
    }
    rc = gplq_export(dir, m, &aq, &s2, NULL, NULL, 0, err, errlen);
out:
    stage2_result_free(&s2);
    actq_free(&aq);
    return rc;
}

static long long file_size(const char *dir, const char *name) {
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) ? -1 : (long long)st.st_size;
}

/* gplq's FP32 forward: images/s at batch B (after one warm-up), over iters passes, or with
 * iters 0 over as many as fit in about 3 s (at least 2). */
static double gplq_rate(model *m, int B, int iters, char *err, size_t errlen) {
    model_dims d = model_get_dims(m);
    size_t img = (size_t)d.in_chans * d.img_size * d.img_size;
    float *x = malloc(sizeof(float) * img * B);
    if (!x) return -1;
    for (size_t i = 0; i < img * B; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double r = -1;
    if (!model_forward_infer(m, x, B, err, errlen)) {
        double t0 = clock_mono_s(), dt = 0;
        int i = 0, ok = 1;
        for (; iters ? i < iters : (i < 2 || dt < 3.0); i++, dt = clock_mono_s() - t0)
            if (model_forward_infer(m, x, B, err, errlen)) {
                ok = 0;
                break;
            }
        if (ok) r = (double)B * i / (clock_mono_s() - t0);
    }
    free(x);
    model_release_acts(m);
    return r;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    if (argc < 2) {
        fprintf(stderr, "usage: bench_onnx OUT [--models demo,deit-s] [--iters N]\n");
        return 2;
    }
    const char *out = argv[1], *which = "demo,deit-s";
    int iters = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--models")) which = argv[i + 1];
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
    }
    char err[2048];
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        const bench_model *bm = &models[k];
        if (!strstr(which, bm->name)) continue;
        char dir[4096], path[4200], qpath[4200];
        snprintf(dir, sizeof dir, "%s/%s", out, bm->name);
        if (fs_mkdirs(dir)) {
            fprintf(stderr, "bench_onnx: cannot create %s\n", dir);
            return 1;
        }
        model m;
        int rc = bm->weights ? ckpt_load(&m, bm->weights, NULL, NULL, err, sizeof err)
                             : model_init(&m, &bm->cfg, err, sizeof err);
        if (rc) {
            fprintf(stderr, "bench_onnx: %s\n", err);
            return 1;
        }
        if (!bm->weights) model_init_weights(&m, 1);
        snprintf(path, sizeof path, "%s/model.fp32.safetensors", dir);
        snprintf(qpath, sizeof qpath, "%s/model.q.safetensors", dir);
        char o1[4200], o2[4200], o3[4200];
        snprintf(o1, sizeof o1, "%s/model.fp32.onnx", dir);
        snprintf(o2, sizeof o2, "%s/model.onnx", dir);
        snprintf(o3, sizeof o3, "%s/model.w4.onnx", dir);
        if (ckpt_save(&m, path, NULL, NULL, 0, err, sizeof err) || write_q(dir, &m, err, sizeof err) ||
            onnx_export(path, o1, ONNX_KIND_FP32, NULL, err, sizeof err) ||
            onnx_export(qpath, o2, ONNX_KIND_QDQ, NULL, err, sizeof err) ||
            onnx_export(qpath, o3, ONNX_KIND_W4, NULL, err, sizeof err)) {
            fprintf(stderr, "bench_onnx: %s: %s\n", bm->name, err);
            model_free(&m);
            return 1;
        }
        double r1 = gplq_rate(&m, 1, iters, err, sizeof err);
        double r64 = gplq_rate(&m, 64, iters, err, sizeof err);
        printf("{\"model\": \"%s\", \"dir\": \"%s\", \"gplq_fp32_images_per_s\": {\"batch1\": %.1f, "
               "\"batch64\": %.1f}, \"bytes\": {\"model.fp32.safetensors\": %lld, "
               "\"model.q.safetensors\": %lld, \"model.fp32.onnx\": %lld, \"model.onnx\": %lld, "
               "\"model.w4.onnx\": %lld}}\n",
               bm->name, dir, r1, r64, file_size(dir, "model.fp32.safetensors"),
               file_size(dir, "model.q.safetensors"), file_size(dir, "model.fp32.onnx"),
               file_size(dir, "model.onnx"), file_size(dir, "model.w4.onnx"));
        fflush(stdout);
        model_free(&m);
    }
    return 0;
}
