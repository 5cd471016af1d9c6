/*
 * gplq.c: the offline command. `gplq train` trains a ViT, `gplq eval` measures top-1.
 * (`gplq quantize` and the client commands come with the GPLQ library and the service.)
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "config/jobspec.h"
#include "config/layout.h"
#include "config/options.h"
#include "cli/client.h"
#include "cli/command.h"
#include "cli/progress.h"
#include "engine/blas.h"
#include "engine/model.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "gplq/export.h"
#include "gplq/pipeline.h"
#include "gplq/report.h"
#include "onnx/export.h"
#include "train/dist.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/fs.h"

#define GPLQ_VERSION "0.1.0"
#define N_OPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void usage(FILE *f) {
    fprintf(f,
            "gplq " GPLQ_VERSION ": 4-bit quantization of Vision Transformers (GPLQ)\n\n"
            "usage: gplq <command> [options]   (gplq <command> --help for its options)\n\n"
            "  train     train a ViT on a dataset, write a timm-named safetensors checkpoint\n"
            "  eval      top-1 accuracy of a checkpoint on a dataset's test set\n"
            "  quantize  GPLQ: W4A4 (or other bits) with stage 1, stage 2 and the baselines\n"
            "  export    a quantized model (model.q.safetensors) or an FP32 checkpoint as ONNX\n\n"
            "client of a gplqd server (--server URL --token T, or $GPLQ_SERVER, $GPLQ_TOKEN):\n"
            "  submit    upload a model (and a dataset), submit a job, --wait for it, --out DIR\n"
            "  jobs      list jobs, or --job ID for one\n"
            "  cancel    --job ID\n"
            "  artifacts --job ID [--out DIR]: list or download a job's artifacts\n");
}

static long peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static void log_blas(int json) {
    if (!json) fprintf(stderr, "gplq: OpenBLAS core %s (%s)\n", blas_core(), blas_core_source());
}

/* Loads the built-in dataset (tr may be NULL: test half only), limited to the subsets. */
static int open_data(const char *name, int train_subset, int eval_subset, ds_set *tr, ds_set *te) {
    char err[1024];
    if (ds_open_builtin(name, NULL, tr, te, err, sizeof err)) {
        fprintf(stderr, "gplq: %s\n", err);
        return -1;
    }
    if (tr) ds_truncate(tr, train_subset);
    ds_truncate(te, eval_subset);
    return 0;
}

/* ---- train ---- */

static struct {
    const char *data, *out, *state, *init, *arch, *depths, *stage_heads;
    int img_size, patch, in_chans, dim, depth, heads, mlp_ratio, classes, distilled, window;
    int epochs, batch, pad, hflip, seed, train_subset, eval_subset, ckpt_every, eval_every;
    int threads, json, recompute;
    float lr, min_lr, warmup, wd, smoothing, clip, mean, std;
} T;

static const opt_spec train_opts[] = {
    {"data", OPT_STR, &T.data, "fashion-mnist", 0, 0, "dataset (built in: fashion-mnist)"},
    {"out", OPT_STR, &T.out, "models/vit-fmnist.safetensors", 0, 0, "checkpoint to write"},
    {"state", OPT_STR, &T.state, NULL, 0, 0, "training state for resuming (default OUT.state)"},
    {"init", OPT_STR, &T.init, NULL, 0, 0, "start from these weights instead of a random init"},
    {"arch", OPT_STR, &T.arch, "vit", 0, 0, "architecture of a new model: vit or swin"},
    {"img-size", OPT_INT, &T.img_size, "28", 4, 1024, "input size in pixels"},
    {"patch", OPT_INT, &T.patch, "4", 1, 64, "patch size"},
    {"in-chans", OPT_INT, &T.in_chans, "1", 1, 3, "input channels"},
    {"dim", OPT_INT, &T.dim, "192", 8, 4096, "embedding dimension (a Swin's first stage's)"},
    {"depth", OPT_INT, &T.depth, "6", 1, 64, "transformer blocks (ViT)"},
    {"heads", OPT_INT, &T.heads, "3", 1, 64, "attention heads (ViT)"},
    {"depths", OPT_STR, &T.depths, "2,6", 0, 0, "blocks per stage (Swin), e.g. 2,2,6,2"},
    {"stage-heads", OPT_STR, &T.stage_heads, "2,4", 0, 0, "attention heads per stage (Swin)"},
    {"window", OPT_INT, &T.window, "7", 1, 64, "attention window (Swin)"},
    {"mlp-ratio", OPT_INT, &T.mlp_ratio, "4", 1, 16, "MLP hidden size / dim"},
    {"classes", OPT_INT, &T.classes, "10", 2, 100000, "classes"},
    {"distilled", OPT_FLAG, &T.distilled, "0", 0, 0, "add DeiT's distillation token and head"},
    {"mean", OPT_FLOAT, &T.mean, "0.2860", -10, 10, "input mean (Fashion-MNIST's)"},
    {"std", OPT_FLOAT, &T.std, "0.3530", 1e-3, 10, "input std (Fashion-MNIST's)"},
    {"epochs", OPT_INT, &T.epochs, "15", 1, 10000, "epochs"},
    {"batch-size", OPT_INT, &T.batch, "128", 1, 65536, "batch size"},
    {"lr", OPT_FLOAT, &T.lr, "0.001", 0, 10, "peak learning rate (AdamW)"},
    {"min-lr", OPT_FLOAT, &T.min_lr, "0.00001", 0, 10, "final learning rate of the cosine"},
    {"warmup-epochs", OPT_FLOAT, &T.warmup, "1", 0, 1000, "linear warmup"},
    {"weight-decay", OPT_FLOAT, &T.wd, "0.05", 0, 10, "AdamW weight decay (matrices only)"},
    {"label-smoothing", OPT_FLOAT, &T.smoothing, "0.1", 0, 0.99, "label smoothing"},
    {"clip-grad", OPT_FLOAT, &T.clip, "1.0", 0, 1e6, "global gradient norm clip (0 = off)"},
    {"pad", OPT_INT, &T.pad, "2", 0, 64, "random-crop padding in pixels (0 = off)"},
    {"hflip", OPT_FLAG, &T.hflip, "1", 0, 0, "random horizontal flips (--no-hflip to disable)"},
    {"seed", OPT_INT, &T.seed, "0", 0, 2147483647, "seed of init, order and augmentation"},
    {"train-subset", OPT_INT, &T.train_subset, "0", 0, 100000000, "use the first N training images (0 = all)"},
    {"eval-subset", OPT_INT, &T.eval_subset, "0", 0, 100000000, "use the first N test images (0 = all)"},
    {"ckpt-every", OPT_INT, &T.ckpt_every, "200", 0, 100000000, "steps between state checkpoints"},
    {"eval-every", OPT_INT, &T.eval_every, "1", 0, 10000, "epochs between test evaluations (0 = end only)"},
    {"recompute", OPT_FLAG, &T.recompute, "0", 0, 0,
     "recompute norm and GELU outputs in the backward (less memory, same result)"},
    {"threads", OPT_INT, &T.threads, "0", 0, 1024, "threads (0 = all cores)"},
    {"json", OPT_FLAG, &T.json, "0", 0, 0, "print the result as one JSON object"},
};

struct train_ui {
    progress_bar bar;
    int json;
};

static int on_train_progress(void *ctx, const train_progress *p) {
    struct train_ui *ui = ctx;
    char eta[32];
    progress_fmt_duration(eta, sizeof eta, p->eta_s);
    if (p->evaluated) {
        if (!ui->json)
            progress_line(&ui->bar, "epoch %d: train loss %.4f, test top-1 %.2f%%", p->epoch + 1,
                          p->epoch_loss, 100 * p->test_top1);
        return 0;
    }
    if (!ui->json)
        progress_update(&ui->bar, (double)p->step / p->total, p->step == p->total,
                        "step %" PRId64 "/%" PRId64 " epoch %d loss %.4f lr %.2e %.0f img/s ETA %s",
                        p->step, p->total, p->epoch + 1, p->loss, p->lr, p->images_per_s, eta);
    return 0;
}

/* "2,6" into v (up to max): how many, or 0 if malformed. */
static int int_list(const char *s, int *v, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x <= 0 || x > 4096 || (*end && *end != ',')) return 0;
        v[n++] = (int)x;
        s = *end ? end + 1 : end;
    }
    return *s ? 0 : n;
}

/* The configuration of a new model from the options. */
static int train_new_config(model_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    float *mean, *std;
    if (!strcmp(T.arch, "vit")) {
        c->arch = MODEL_VIT;
        c->vit = (vit_config){.img_size = T.img_size, .patch = T.patch, .in_chans = T.in_chans,
                              .dim = T.dim, .depth = T.depth, .heads = T.heads,
                              .mlp_hidden = T.mlp_ratio * T.dim, .num_classes = T.classes,
                              .distilled = T.distilled, .ln_eps = 1e-6f};
        mean = c->vit.mean, std = c->vit.std;
    } else if (!strcmp(T.arch, "swin")) {
        c->arch = MODEL_SWIN;
        swin_config *s = &c->swin;
        *s = (swin_config){.img_size = T.img_size, .patch = T.patch, .in_chans = T.in_chans,
                           .embed_dim = T.dim, .window = T.window, .mlp_ratio = T.mlp_ratio,
                           .num_classes = T.classes, .ln_eps = 1e-5f};
        s->stages = int_list(T.depths, s->depths, SWIN_MAX_STAGES);
        if (!s->stages || int_list(T.stage_heads, s->heads, SWIN_MAX_STAGES) != s->stages) {
            snprintf(err, errlen, "--depths '%s' and --stage-heads '%s' must be lists of the same "
                     "length, at most %d stages", T.depths, T.stage_heads, SWIN_MAX_STAGES);
            return -1;
        }
        mean = s->mean, std = s->std;
    } else {
        snprintf(err, errlen, "--arch must be vit or swin, not '%s'", T.arch);
        return -1;
    }
    for (int i = 0; i < 3; i++) mean[i] = T.mean, std[i] = T.std;
    return model_config_check(c, err, errlen);
}

static int cmd_train(int argc, char **argv) {
    char err[1024];
    int pc = command_parse("train", "[options]", train_opts, N_OPTS(train_opts), argc, argv);
    if (pc >= 0) return pc;
    if (dist_size() > 1) { /* the trainer would do it, but this command's files are not rank 0's */
        if (dist_is_root()) fprintf(stderr, "gplq train: not under mpirun (gplq quantize is)\n");
        return 2;
    }
    blas_set_threads(T.threads);
    log_blas(T.json);
    ds_set tr, te;
    if (open_data(T.data, T.train_subset, T.eval_subset, &tr, &te)) return 1;
    model m;
    if (T.init) {
        if (ckpt_load(&m, T.init, NULL, NULL, err, sizeof err)) goto fail_data;
    } else {
        model_config cfg;
        if (train_new_config(&cfg, err, sizeof err) || model_init(&m, &cfg, err, sizeof err))
            goto fail_data;
        model_init_weights(&m, (uint64_t)T.seed);
    }
    model_set_recompute(&m, T.recompute);
    char state[4096];
    snprintf(state, sizeof state, "%s.state", T.out);
    train_config tc = {.epochs = T.epochs, .batch = T.batch, .lr = T.lr, .min_lr = T.min_lr,
                       .warmup_epochs = T.warmup, .weight_decay = T.wd,
                       .label_smoothing = T.smoothing, .clip_grad = T.clip,
                       .aug = {.pad = T.pad, .hflip = T.hflip}, .seed = (uint64_t)T.seed,
                       .eval_every = T.eval_every, .ckpt_every = T.ckpt_every,
                       .ckpt_path = T.state ? T.state : state};
    struct train_ui ui = {.json = T.json};
    progress_init(&ui.bar, stderr, 30);
    if (!T.json)
        fprintf(stderr, "gplq: training %s %s (%zu parameters) on %d images of %s, %d epochs of "
                "%d steps; state in %s\n", T.init ? T.init : "a new",
                m.arch == MODEL_SWIN ? "Swin" : "ViT", model_num_params(&m), tr.n, T.data,
                T.epochs, tr.n / T.batch, tc.ckpt_path);
    double t0 = clock_mono_s();
    int rc = train_run(&m, &tc, &tr, &te, on_train_progress, &ui, err, sizeof err);
    progress_done(&ui.bar);
    if (rc < 0) goto fail_model;
    double top1;
    if (train_eval_top1(&m, &te, 256, &top1, err, sizeof err)) goto fail_model;
    /* the command that made the model travels with it */
    json_t *cfgj = opt_to_json(train_opts, N_OPTS(train_opts));
    char *cfgs = json_dumps(cfgj, JSON_COMPACT | JSON_SORT_KEYS);
    char acc[32];
    snprintf(acc, sizeof acc, "%.4f", top1);
    const char *keys[] = {"train_config", "test_top1", "generator"};
    const char *vals[] = {cfgs, acc, "gplq train " GPLQ_VERSION};
    rc = ckpt_save(&m, T.out, keys, vals, 3, err, sizeof err);
    free(cfgs);
    json_decref(cfgj);
    if (rc) goto fail_model;
    if (T.json)
        printf("{\"top1\": %.6f, \"images\": %d, \"out\": \"%s\", \"seconds\": %.1f, "
               "\"peak_rss_mb\": %ld}\n", top1, te.n, T.out, clock_mono_s() - t0, peak_rss_mb());
    else
        fprintf(stderr, "gplq: wrote %s: test top-1 %.2f%% on %d images (%.0f s, peak RSS %ld MB)\n",
                T.out, 100 * top1, te.n, clock_mono_s() - t0, peak_rss_mb());
    model_free(&m);
    ds_free(&tr);
    ds_free(&te);
    return 0;
fail_model:
    model_free(&m);
fail_data:
    fprintf(stderr, "gplq train: %s\n", err);
    ds_free(&tr);
    ds_free(&te);
    return 1;
}

/* ---- eval ---- */

/* What a checkpoint may not say, from the flags: --img-size N, --mean M, --std S (one value or
 * three, config/options.h) and the heads. --mean and --std go together: a file's normalization
 * is the pair. 0, or -1 with err. */
static int load_hints(ckpt_hints *h, int heads, int img_size, const char *mean, const char *std,
                      char *err, size_t errlen) {
    *h = (ckpt_hints){.num_heads = heads, .img_size = img_size};
    if (!mean && !std) return 0;
    if (!mean || !std) {
        snprintf(err, errlen, "--mean and --std go together (give both)");
        return -1;
    }
    if (opt_parse_triple(mean, "--mean", OPT_MEAN_MIN, OPT_MEAN_MAX, h->mean, err, errlen) ||
        opt_parse_triple(std, "--std", OPT_STD_MIN, OPT_STD_MAX, h->std, err, errlen))
        return -1;
    h->have_norm = 1;
    return 0;
}

/* The flags of load_hints beside --num-heads, as option table lines. */
#define HINT_OPTS(img, mean, std)                                                                  \
    {"img-size", OPT_INT, &(img), "0", 0, 4096, "input size in pixels if the checkpoint does not say (a Swin's; a ViT's must match its position embedding)"}, \
    {"mean", OPT_STR, &(mean), NULL, 0, 0, "input mean if the checkpoint does not say: one value or three (0.485,0.456,0.406)"}, \
    {"std", OPT_STR, &(std), NULL, 0, 0, "input std if the checkpoint does not say (with --mean): one value or three"}

static struct {
    const char *model, *data, *logits, *mean, *std;
    int eval_subset, batch, heads, img_size, threads, json;
} E;

static const opt_spec eval_opts[] = {
    {"model", OPT_STR, &E.model, NULL, 0, 0, "checkpoint (safetensors: timm, HuggingFace or torchvision names), or a job's model.q.safetensors"},
    {"data", OPT_STR, &E.data, "fashion-mnist", 0, 0, "dataset (built in: fashion-mnist)"},
    {"logits", OPT_STR, &E.logits, NULL, 0, 0, "also write every test image's logits here (float32, images x classes, little-endian)"},
    {"eval-subset", OPT_INT, &E.eval_subset, "0", 0, 100000000, "use the first N test images (0 = all)"},
    {"batch-size", OPT_INT, &E.batch, "256", 1, 65536, "images per forward pass"},
    {"num-heads", OPT_INT, &E.heads, "0", 0, 64, "attention heads if the file does not say (0 = dim/64)"},
    HINT_OPTS(E.img_size, E.mean, E.std),
    {"threads", OPT_INT, &E.threads, "0", 0, 1024, "threads (0 = all cores)"},
    {"json", OPT_FLAG, &E.json, "0", 0, 0, "print one JSON object"},
};

/* 1 if path is a gplq quantized model (format metadata gplq-q-1), else 0 (any other file,
 * or one that does not open: ckpt_load then says what is wrong with it). */
static int is_quantized_file(const char *path) {
    st_file f;
    char err[256];
    if (st_open(&f, path, err, sizeof err)) return 0;
    const char *fmt = st_meta(&f, "gplq_format");
    int q = fmt && !strcmp(fmt, GPLQ_Q_FORMAT);
    st_close(&f);
    return q;
}

/* train_eval_top1's pass (same batches, same forward), keeping every image's logits in the
 * file path (float32, n x classes): what the ONNX tests compare ONNX Runtime's logits with. */
static int eval_logits(model *m, const ds_set *d, int batch, const char *path, double *top1,
                       char *err, size_t errlen) {
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    if (d->channels != c->in_chans || d->height != c->img_size || d->width != c->img_size) {
        snprintf(err, errlen, "dataset images are %dx%dx%d, the model takes %dx%dx%d", d->channels,
                 d->height, d->width, c->in_chans, c->img_size, c->img_size);
        return -1;
    }
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size, K = c->num_classes;
    float *x = malloc(sizeof(float) * img * batch), *all = malloc(sizeof(float) * K * d->n);
    int *idx = malloc(sizeof(int) * batch);
    int rc = -1;
    int64_t correct = 0;
    if (!x || !idx || !all) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < d->n; i += batch) {
        int B = d->n - i < batch ? d->n - i : batch;
        for (int b = 0; b < B; b++) idx[b] = i + b;
        ds_batch(d, idx, B, x, c->mean, c->std, NULL, NULL);
        if (model_forward_infer(m, x, B, err, errlen)) goto out;
        memcpy(all + (size_t)i * K, model_logits(m), sizeof(float) * K * B);
        for (int b = 0; b < B; b++) {
            const float *l = model_logits(m) + (size_t)b * K;
            int best = 0;
            for (int k = 1; k < (int)K; k++) best = l[k] > l[best] ? k : best;
            correct += best == d->labels[i + b];
        }
    }
    if (fs_write_atomic(path, all, sizeof(float) * K * d->n)) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    *top1 = d->n ? (double)correct / d->n : 0.0;
    rc = 0;
out:
    free(x);
    free(idx);
    free(all);
    model_release_acts(m);
    return rc;
}

static int cmd_eval(int argc, char **argv) {
    char err[1024];
    int pc = command_parse("eval", "--model M [options]", eval_opts, N_OPTS(eval_opts), argc, argv);
    if (pc >= 0) return pc;
    if (dist_size() > 1) {
        if (dist_is_root()) fprintf(stderr, "gplq eval: not under mpirun (gplq quantize is)\n");
        return 2;
    }
    if (!E.model) {
        fprintf(stderr, "gplq eval: --model is required\n");
        return 2;
    }
    blas_set_threads(E.threads);
    log_blas(E.json);
    /* a job's model.q.safetensors runs as gplq measured it (quantizers and QwT installed) */
    gplq_qmodel q = {0};
    model *m = &q.m;
    ckpt_hints hints;
    ckpt_convention conv = CKPT_TIMM;
    int quantized = is_quantized_file(E.model);
    if (load_hints(&hints, E.heads, E.img_size, E.mean, E.std, err, sizeof err) ||
        (quantized ? gplq_load_quantized(&q, E.model, err, sizeof err)
                   : ckpt_load(m, E.model, &hints, &conv, err, sizeof err))) {
        fprintf(stderr, "gplq eval: %s\n", err);
        return 1;
    }
    ds_set te;
    if (open_data(E.data, 0, E.eval_subset, NULL, &te)) {
        gplq_qmodel_free(&q);
        return 1;
    }
    double t0 = clock_mono_s(), top1;
    int rc = E.logits ? eval_logits(m, &te, E.batch, E.logits, &top1, err, sizeof err)
                      : train_eval_top1(m, &te, E.batch, &top1, err, sizeof err);
    double dt = clock_mono_s() - t0;
    if (rc) {
        fprintf(stderr, "gplq eval: %s\n", err);
    } else if (E.json) {
        printf("{\"top1\": %.6f, \"images\": %d, \"model\": \"%s\", \"convention\": \"%s\", "
               "\"images_per_s\": %.1f, \"blas_core\": \"%s\"}\n", top1, te.n, E.model,
               quantized ? "gplq-q-1" : ckpt_convention_name(conv), te.n / dt, blas_core());
    } else {
        printf("%s (%s): top-1 %.2f%% on %d %s test images (%.0f images/s)\n", E.model,
               quantized ? "gplq quantized" : ckpt_convention_name(conv), 100 * top1, te.n, E.data,
               te.n / dt);
    }
    gplq_qmodel_free(&q);
    ds_free(&te);
    return rc ? 1 : 0;
}

/* ---- export ---- */

static struct {
    const char *model, *out;
    int fp32, w4, qwt_fp16, block;
} X;

static const opt_spec export_opts[] = {
    {"model", OPT_STR, &X.model, NULL, 0, 0, "model.q.safetensors of a job, or with --fp32 an FP32 checkpoint"},
    {"out", OPT_STR, &X.out, NULL, 0, 0, "the .onnx file to write (written whole or not at all)"},
    {"fp32", OPT_FLAG, &X.fp32, "0", 0, 0, "export an FP32 checkpoint as it is (model.fp32.onnx)"},
    {"w4", OPT_FLAG, &X.w4, "0", 0, 0, "4-bit weights as com.microsoft MatMulNBits, float activations (model.w4.onnx)"},
    {"qwt-fp16", OPT_FLAG, &X.qwt_fp16, "0", 0, 0, "store QwT's matrices in FP16"},
    {"block", OPT_INT, &X.block, "0", 0, 4096, "MatMulNBits block size (--w4), a power of two >= 16 (0: 128, or the largest smaller one that divides K)"},
};

static int cmd_export(int argc, char **argv) {
    char err[1024];
    int pc = command_parse("export", "--model M --out O.onnx [options]", export_opts,
                           N_OPTS(export_opts), argc, argv);
    if (pc >= 0) return pc;
    if (!X.model || !X.out) {
        fprintf(stderr, "gplq export: --model and --out are required\n");
        return 2;
    }
    if (X.fp32 && X.w4) {
        fprintf(stderr, "gplq export: --fp32 and --w4 exclude each other\n");
        return 2;
    }
    onnx_kind kind = X.fp32 ? ONNX_KIND_FP32 : X.w4 ? ONNX_KIND_W4 : ONNX_KIND_QDQ;
    onnx_opts o = {.qwt_fp16 = X.qwt_fp16, .w4_block = X.block};
    if (onnx_export(X.model, X.out, kind, &o, err, sizeof err)) {
        fprintf(stderr, "gplq export: %s\n", err);
        return 1;
    }
    struct stat st;
    long long sz = stat(X.out, &st) ? -1 : (long long)st.st_size;
    printf("%s: %s ONNX model, %lld bytes\n", X.out, onnx_kind_name(kind), sz);
    return 0;
}

/* ---- quantize ---- */

static struct {
    const char *model, *data, *out, *state, *mean, *std;
    int img_size, threads, json;
    jobspec js;            /* every stage option: the same table as the API's job spec */
} Q;

/* The command's own options, then the job spec's. */
#define QUANT_OWN 9
static opt_spec quant_opts[QUANT_OWN + JOBSPEC_NOPTS];

static void quant_table(void) {
    const opt_spec own[QUANT_OWN] = {
        {"model", OPT_STR, &Q.model, NULL, 0, 0, "FP32 checkpoint (timm, HuggingFace or torchvision names)"},
        {"data", OPT_STR, &Q.data, "fashion-mnist", 0, 0, "dataset (built in: fashion-mnist)"},
        {"out", OPT_STR, &Q.out, NULL, 0, 0, "folder for report.json and the artifacts"},
        {"state", OPT_STR, &Q.state, NULL, 0, 0, "stage 1 state file for resuming (default none)"},
        {"threads", OPT_INT, &Q.threads, "0", 0, 1024, "threads (0 = all cores)"},
        {"json", OPT_FLAG, &Q.json, "0", 0, 0, "print the report as JSON"},
        HINT_OPTS(Q.img_size, Q.mean, Q.std),
    };
    memcpy(quant_opts, own, sizeof own);
    jobspec_table(&Q.js, quant_opts + QUANT_OWN);
}

struct quant_ui {
    progress_bar bar;
    int json;
    const char *stage;
};

static int on_quant_progress(void *ctx, const gplq_progress *p) {
    struct quant_ui *ui = ctx;
    if (ui->json || !dist_is_root()) return 0; /* under mpirun, rank 0 speaks */
    if (p->metric) {
        progress_line(&ui->bar, "gplq: top-1 %-16s %6.2f%%", p->metric, 100 * p->value);
        return 0;
    }
    if (!ui->stage || strcmp(ui->stage, p->part)) {
        progress_line(&ui->bar, "gplq: %s (%s)", p->stage, p->part);
        ui->stage = p->part;
    }
    if (p->step <= 0) return 0;
    if (!strcmp(p->stage, "stage1")) {
        char eta[32];
        progress_fmt_duration(eta, sizeof eta, p->eta_s);
        progress_update(&ui->bar, p->fraction, 0,
                        "stage 1 step %" PRId64 "/%" PRId64 " ce %.4f pca %.4f %.0f img/s ETA %s",
                        p->step, p->total, p->ce, p->pca, p->images_per_s, eta);
    } else {
        progress_update(&ui->bar, p->fraction, 0, "%s %s %" PRId64 "/%" PRId64, p->stage, p->part,
                        p->step, p->total);
    }
    return 0;
}

static int cmd_quantize(int argc, char **argv) {
    char err[1024];
    quant_table();
    int pc = command_parse("quantize", "--model M [--data fashion-mnist] [--out DIR] [options]", quant_opts, N_OPTS(quant_opts), argc, argv);
    if (pc >= 0) return pc;
    if (!Q.model) {
        fprintf(stderr, "gplq quantize: --model is required\n");
        return 2;
    }
    if (Q.js.mpi) {
        fprintf(stderr, "gplq quantize: --mpi is for jobs of gplqd; offline, run it under the "
                "launcher: mpirun -np N gplq quantize ...\n");
        return 2;
    }
    blas_set_threads(Q.threads);
    log_blas(Q.json || !dist_is_root());
    if (dist_size() > 1 && dist_is_root() && !Q.json)
        fprintf(stderr, "gplq: %d ranks (MPI): stage 1 data-parallel, evaluations split\n",
                dist_size());
    model fp;
    ckpt_hints hints;
    if (load_hints(&hints, Q.js.num_heads, Q.img_size, Q.mean, Q.std, err, sizeof err) ||
        ckpt_load(&fp, Q.model, &hints, NULL, err, sizeof err)) {
        fprintf(stderr, "gplq quantize: %s\n", err);
        return 1;
    }
    ds_set tr, te;
    if (open_data(Q.data, Q.js.train_subset, Q.js.eval_subset, &tr, &te)) {
        model_free(&fp);
        return 1;
    }
    gplq_config c;
    gplq_config_from_spec(&c, &Q.js);
    c.s1.ckpt_path = Q.state;
    if (Q.out) c.after_passes = gplq_artifacts_passes(&te, Q.js.ort);
    struct quant_ui ui = {.json = Q.json};
    progress_init(&ui.bar, stderr, 30);
    gplq_report rep;
    model qm;
    actq_set aq;
    stage2_result s2;
    int rc = gplq_run(&fp, &tr, &te, &c, on_quant_progress, &ui, &rep, &qm, &aq, &s2, err,
                      sizeof err);
    if (rc < 0 && dist_size() > 1) { /* the other ranks may wait in a collective: end them */
        progress_done(&ui.bar);
        fprintf(stderr, "gplq quantize: rank %d: %s\n", dist_rank(), err);
        dist_abort(1);
    }
    json_t *config = opt_to_json(quant_opts, N_OPTS(quant_opts));
    if (rc == 0) {
        if (Q.out && dist_is_root())  /* the artifacts and report.json, proven to reload to rep.gplq */
            rc = gplq_write_artifacts(Q.out, &qm, &aq, &s2, &rep, config, &te, Q.js.ort,
                                      on_quant_progress, &ui, err, sizeof err);
        model_free(&qm);
        actq_free(&aq);
        stage2_result_free(&s2);
    }
    progress_done(&ui.bar);
    if (rc) {
        fprintf(stderr, "gplq quantize: %s\n", rc < 0 ? err : "stopped");
    } else if (dist_is_root()) {
        /* with --out, the report as written (it adds ONNX Runtime's top-1s to gplq's) */
        char rpath[4200];
        snprintf(rpath, sizeof rpath, "%s/" LAYOUT_ARTIFACT_REPORT, Q.out ? Q.out : ".");
        json_t *rj = Q.out ? json_load_file(rpath, 0, NULL) : NULL;
        if (!rj) rj = gplq_report_json(&rep, json_incref(config));
        if (Q.json) {
            char *sj = json_dumps(rj, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
            printf("%s\n", sj);
            free(sj);
        } else {
            printf("\n%-28s %8s\n", "model", "top-1");
            struct { const char *name; double v; } rows[] = {
                {"FP32", rep.fp32}, {"W32A%d (stage 1)", rep.stage1},
                {"W%dA%d without QwT", rep.stage2_noqwt}, {"W%dA%d GPLQ", rep.gplq},
                {"PTQ alone (W%dA%d + QwT)", rep.ptq_baseline}, {"min-max W%dA%d", rep.minmax_baseline}};
            for (int i = 0; i < 6; i++) {
                if (rows[i].v < 0) continue;
                char name[64];
                if (i == 1) snprintf(name, sizeof name, rows[i].name, Q.js.abits);
                else if (i) snprintf(name, sizeof name, rows[i].name, Q.js.wbits, Q.js.abits);
                else snprintf(name, sizeof name, "%s", rows[i].name);
                printf("%-28s %7.2f%%\n", name, 100 * rows[i].v);
            }
            json_t *acc = json_object_get(rj, "accuracy");
            json_t *o1 = json_object_get(acc, "ort_onnx"), *o2 = json_object_get(acc, "ort_w4");
            if (json_is_number(o1))
                printf("%-28s %7.2f%%\n", "model.onnx in ONNX Runtime", 100 * json_number_value(o1));
            if (json_is_number(o2)) {
                char name[64];
                snprintf(name, sizeof name, "model.w4.onnx (W%dA32), ORT", Q.js.wbits);
                printf("%-28s %7.2f%%\n", name, 100 * json_number_value(o2));
            }
            /* where the time and the memory went, phase by phase in the order they ran */
            json_t *times = json_object_get(rj, "timings_s");
            json_t *peaks = json_object_get(rj, "peak_rss_mb_by_phase");
            printf("\n%-28s %8s %8s\n", "phase", "seconds", "peak MB");
            for (int i = 0; i < rep.nphases + 2; i++) {
                const char *ph = i < rep.nphases ? rep.phases[i].name
                                 : i == rep.nphases ? "artifacts" : "onnx";
                json_t *sec = json_object_get(times, ph), *pk = json_object_get(peaks, ph);
                char mb[32] = "-";
                if (json_is_integer(pk))
                    snprintf(mb, sizeof mb, "%" JSON_INTEGER_FORMAT, json_integer_value(pk));
                if (json_is_number(sec)) printf("%-28s %8.1f %8s\n", ph, json_number_value(sec), mb);
            }
            /* the report's total counts the artifacts and the ONNX files too */
            json_t *total = json_object_get(times, "total");
            printf("(%d test images; stage 1 %.0f s at lr %g, stage 2 %.0f s, total %.0f s; PCA k=%d)\n",
                   te.n, rep.seconds_stage1, rep.lr, rep.seconds_stage2,
                   json_is_number(total) ? json_number_value(total) : rep.seconds_total, rep.pca_k);
        }
        json_decref(rj);
    }
    json_decref(config);
    model_free(&fp);
    ds_free(&tr);
    ds_free(&te);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    char derr[512];
    if (dist_init(&argc, &argv, derr, sizeof derr)) { /* only under mpirun (train/dist.h) */
        fprintf(stderr, "gplq: %s\n", derr);
        return 1;
    }
    atexit(dist_finalize);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("gplq %s (OpenBLAS core %s)\n", GPLQ_VERSION, blas_core());
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export")) return cmd_export(argc - 2, argv + 2);
    if (!strcmp(argv[1], "submit")) return client_submit(argc - 2, argv + 2);
    if (!strcmp(argv[1], "jobs")) return client_jobs(argc - 2, argv + 2);
    if (!strcmp(argv[1], "cancel")) return client_cancel(argc - 2, argv + 2);
    if (!strcmp(argv[1], "artifacts")) return client_artifacts(argc - 2, argv + 2);
    fprintf(stderr, "gplq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
