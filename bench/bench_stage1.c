/*
 * bench_stage1.c: how fast GPLQ's stage 1 (activation QAT, W32A4) runs, and how much memory it
 * takes, for `make bench`.
 *
 * Measures, in one run: the machine's sgemm rate (cblas_sgemm 1024^3, best of several after a
 * warmup, as bench_train.c does), then for each model the stage-1 step exactly as gplq runs it,
 * by calling the real code path: stage1_run (gplq/stage1.c) on a synthetic dataset of random
 * 8-bit images, which does the teacher's PCA and the quantizers' calibration and then hands the
 * loop to train_run (train/trainer.c) with stage 1's objective. One step there is: a batch from
 * the dataset (normalize, pad-and-crop, flip), the student's forward with the activation fake
 * quantizers of gplq/actq.h in QUANT mode (abits 4, the patch-embedding input at 8 bits), the
 * frozen FP32 teacher's forward for the penultimate features, CE + alpha * the PCA feature-
 * mimicking loss (pca_loss_forward_backward, k = 64 components for demo, 128 for deit-s, 256
 * for swin-t: a third of the feature), the student's backward including every LSQ step
 * gradient, and AdamW on all weights and all steps.
 * Hyperparameters are the job spec's defaults (no weight decay, alpha 1, no label smoothing) at
 * the paper's lr 5e-6 (BENCH_LR; "auto" gives it to models over 10M parameters).
 *
 * Only steps are timed: train_run calls the progress callback after every step, and the time
 * between two calls is one step. The PCA, the calibration and the first step happen before the
 * first call, so they are outside the rate (the first step is therefore always a warmup step).
 * To keep the PCA and calibration from dominating the run (and the memory: see below), they
 * see one batch of images; the PCA's k is forced (pca_var 0, pca_multiple k) because random
 * features say nothing about how many components a real model needs.
 *
 * The time spent inside the quantizers is measured too, by wrapping actq's hook table in one
 * that times each call and forwards it unchanged (a few clock reads per layer per step).
 *
 * FLOPs per step are 4x the forward pass's matrix-product FLOPs (model_forward_flops): the
 * teacher's forward (1x) plus the student's forward and backward (3x, the backward doing two
 * products for each forward one). Quantizers, the PCA loss and elementwise work are not counted,
 * so the GFLOP/s figure is the rate of useful matmul work, comparable with the sgemm rate.
 *
 * Peak RSS: each measurement runs in a fresh child process (this program re-executed with
 * --child) so that its VmHWM is its own. Beside each stage-1 child, a second child runs FP32
 * training of the same model through the same trainer (train_run, plain cross-entropy, no
 * teacher, no quantizers) on the same data and batch: its peak RSS is what stage 1's is held
 * against (the paper reports stage 1 below FP32 training), and its step time tells how much
 * stage 1 costs beyond its 4/3 share of FLOPs. A third child runs the same FP32 training with
 * the norm and GELU outputs recomputed in the backward, as stage 1's student does (gplq train
 * --recompute): what FP32 training would hold with the same trade. Each peak is also split in two (VmHWM is reset
 * after the first step through /proc/self/clear_refs): the setup's, through the first step, and
 * the loop's, over the later steps. The setup here sees one batch; a real run calibrates and
 * fits the PCA on many more images, 256 at a time (stage1.c), which raises its peak.
 *
 * Usage: bench_stage1 [--json] [--models demo,deit-s,swin-t] [--batch N] [--warmup N]
 *                     [--steps N] [--threads N] [--sgemm-n N] [--no-fp32] [--bf16]
 * --batch/--warmup/--steps override every model's own values (for quick smoke runs); warmup is
 * at least 1 (see above). --no-fp32 skips the FP32 training children. --bf16 runs every child's
 * linear layers in BF16 (a job's --bf16: engine/ops.h), with gemm_bf16's kernel where the CPU
 * has AVX512-BF16 and its slower emulation elsewhere (the header line says which). With --json, one JSON object
 * per model goes to stdout (one a line) and the human table to stderr.
 * bench/run.sh puts these beside the same step in PyTorch (bench/torch_stage1.py).
 * Exit status: 0, or 1 if a run failed or a child crashed; 2 for a bad command line.
 */
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/blas.h"
#include "engine/gemm_bf16.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/model.h"
#include "gplq/actq.h"
#include "gplq/pipeline.h"
#include "gplq/stage1.h"
#include "io/dataset.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/mem.h"

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The models of the benchmark: bench_train.c's, with the PCA's k. torch_stage1.py has the same
 * table; run.sh joins on the name. */
typedef struct {
    const char *name;
    const char *what;
    model_config cfg;
    int batch, warmup, steps;
    int pca_k;
} bench_model;

static const bench_model bench_models[] = {
    {"demo", "gplq train's default ViT (Fashion-MNIST)",
     {.arch = MODEL_VIT,
      .vit = {.img_size = 28, .patch = 4, .in_chans = 1, .dim = 192, .depth = 6, .heads = 3,
              .mlp_hidden = 768, .num_classes = 10, .ln_eps = 1e-6f, .std = {1, 1, 1}}},
     128, 3, 10, 64},
    {"deit-s", "DeiT-S / ViT-S/16 shape (224 px)",
     {.arch = MODEL_VIT,
      .vit = {.img_size = 224, .patch = 16, .in_chans = 3, .dim = 384, .depth = 12, .heads = 6,
              .mlp_hidden = 1536, .num_classes = 1000, .ln_eps = 1e-6f, .std = {1, 1, 1}}},
     16, 2, 5, 128},
    /* Swin-T as timm's swin_tiny_patch4_window7_224; k a third of the feature, as above */
    {"swin-t", "Swin-T shape (224 px, window 7)",
     {.arch = MODEL_SWIN,
      .swin = {.img_size = 224, .patch = 4, .in_chans = 3, .embed_dim = 96, .stages = 4,
               .depths = {2, 2, 6, 2}, .heads = {3, 6, 12, 24}, .window = 7, .mlp_ratio = 4,
               .num_classes = 1000, .ln_eps = 1e-5f, .std = {1, 1, 1}}},
     16, 2, 5, 256},
};

#define BENCH_ABITS 4      /* GPLQ's W4A4 target */
#define BENCH_LR 5e-6f   /* the paper's stage-1 rate, what "auto" picks above 10M parameters */
#define BENCH_PATCH_BITS 8 /* the patch embedding's input, as gplq_run sets it */

/* What a child measures. */
typedef enum { KIND_STAGE1, KIND_FP32, KIND_FP32_RECOMPUTE } run_kind;
static const char *const kind_names[] = {"stage1", "fp32", "fp32-recompute"};

/* Command line. Negative values mean "the model's own". */
static struct {
    int json, threads, sgemm_n, batch, warmup, steps, no_fp32, bf16;
    const char *models; /* comma-separated names, NULL = all */
    const char *child;  /* model name when this process is a child */
    run_kind kind;      /* what the child runs */
} opt = {.threads = 2, .sgemm_n = 1024, .batch = -1, .warmup = -1, .steps = -1};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v (n > 0), by sorting v in place. */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- the sgemm rate (as bench_train.c measures it, so the two fractions compare) ---- */

/* GFLOP/s of cblas_sgemm on n x n x n, best of reps timed calls after two warmup calls.
 * Best, not median: it is the ceiling the step is measured against. */
static double sgemm_gflops(int n, int reps) {
    size_t nn = (size_t)n * n;
    float *a = malloc(sizeof(float) * nn), *b = malloc(sizeof(float) * nn);
    float *c = malloc(sizeof(float) * nn);
    if (!a || !b || !c) {
        free(a); free(b); free(c);
        return -1;
    }
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < nn; i++) a[i] = rng_normal(&r), b[i] = rng_normal(&r);
    double best = 1e30;
    for (int i = 0; i < reps + 2; i++) {
        double t0 = clock_mono_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        double dt = clock_mono_s() - t0;
        if (i >= 2 && dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

/* ---- the child: one model's stage-1 (or FP32) training run ---- */

/* actq's hook table wrapped to time every quantizer call. The wrapped calls get actq's own
 * context, so the arithmetic is untouched. */
typedef struct {
    model_hooks inner;      /* actq's table, as actq_init made it */
    double fwd_s, bwd_s;  /* running totals inside the quantizers */
} timed_hooks;

static int timed_forward(void *ctx, int layer, qpoint p, float *out, const float *in,
                         int64_t rows, int cols) {
    timed_hooks *th = ctx;
    double t0 = clock_mono_s();
    int rc = th->inner.forward(th->inner.ctx, layer, p, out, in, rows, cols);
    th->fwd_s += clock_mono_s() - t0;
    return rc;
}

/* the backward's recomputation of the quantized copies counts as backward time */
static int timed_reforward(void *ctx, int layer, qpoint p, float *out, const float *in,
                           int64_t rows, int cols) {
    timed_hooks *th = ctx;
    double t0 = clock_mono_s();
    int rc = th->inner.reforward(th->inner.ctx, layer, p, out, in, rows, cols);
    th->bwd_s += clock_mono_s() - t0;
    return rc;
}

static void timed_backward(void *ctx, int layer, qpoint p, float *din, const float *dout,
                           const float *in, int64_t rows, int cols) {
    timed_hooks *th = ctx;
    double t0 = clock_mono_s();
    th->inner.backward(th->inner.ctx, layer, p, din, dout, in, rows, cols);
    th->bwd_s += clock_mono_s() - t0;
}

/* What the progress callback records after each step: the time, the quantizers' running
 * totals, and the last step's loss; after the first step, the peak RSS so far (the setup's),
 * then the peak is reset so that the end shows the peak of the later steps alone. */
typedef struct {
    int n, cap;
    double *t, *qf, *qb;   /* (cap) */
    const timed_hooks *th; /* NULL for the FP32 run */
    float loss, ce, pca;
    long setup_hwm_kb;     /* VmHWM through the first step */
    int hwm_reset;         /* 1 if the reset worked */
} step_log;

static int on_step(void *ctx, const train_progress *p) {
    step_log *log = ctx;
    if (log->n < log->cap) {
        log->t[log->n] = clock_mono_s();
        log->qf[log->n] = log->th ? log->th->fwd_s : 0;
        log->qb[log->n] = log->th ? log->th->bwd_s : 0;
        log->n++;
        if (log->n == 1) {
            log->setup_hwm_kb = mem_peak_kb();
            log->hwm_reset = mem_peak_restart() == 0;
        }
    }
    log->loss = p->loss;
    log->ce = log->th ? p->terms[0] : p->loss;
    log->pca = log->th ? p->terms[1] : 0;
    return 0;
}

/* A dataset of n random 8-bit images of the model's shape with random labels: the step's work
 * does not depend on the pixels. Free with ds_free. */
static int synth_dataset(ds_set *d, const model_config *mc, int n, char *err, size_t errlen) {
    model_dims dims = model_config_dims(mc), *c = &dims;
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size;
    *d = (ds_set){.n = n, .channels = c->in_chans, .height = c->img_size, .width = c->img_size,
                  .num_classes = c->num_classes};
    d->pixels = malloc(img * n);
    d->labels = malloc(sizeof(int32_t) * n);
    if (!d->pixels || !d->labels) {
        ds_free(d);
        snprintf(err, errlen, "out of memory for %d synthetic images", n);
        return -1;
    }
    rng_t r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < img * n; i++) d->pixels[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < n; i++) d->labels[i] = (int32_t)rng_below(&r, (uint32_t)c->num_classes);
    return 0;
}

/* Runs warmup + steps steps of stage 1 (or of FP32 training) of model bm through the real
 * code path and writes, to stdout, the line the parent reads:
 *   "ok <peak kB> <setup peak kB> <loop peak kB> <loss> <ce> <pca> <k> <setup s> <steps>"
 * then one "<step s> <quantizer forward s> <quantizer backward s>" line per timed step.
 * The setup is everything up to the end of the first step (for stage 1: the PCA, the
 * calibration and one step); the loop is the steps after it (loop peak -1 if unknown).
 * Returns the exit status. */
static int child_main(const bench_model *bm, run_kind kind, int B, int warmup, int steps) {
    char err[1024] = "";
    int total = warmup + steps, rc = 1;
    model teacher, student;
    actq_set aq;
    ds_set data;
    stage1_result res;
    timed_hooks th;
    step_log log = {.cap = total};
    memset(&teacher, 0, sizeof teacher);
    memset(&student, 0, sizeof student);
    memset(&aq, 0, sizeof aq);
    memset(&data, 0, sizeof data);
    memset(&res, 0, sizeof res);
    log.t = malloc(sizeof(double) * total);
    log.qf = malloc(sizeof(double) * total);
    log.qb = malloc(sizeof(double) * total);
    if (!log.t || !log.qf || !log.qb) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    /* exactly `total` steps: train_run does n / B steps in its one epoch */
    if (synth_dataset(&data, &bm->cfg, total * B, err, sizeof err)) goto out;
    if (model_init(&student, &bm->cfg, err, sizeof err)) goto out;
    model_init_weights(&student, 0);
    /* stage 1's teacher is the FP32 model the student starts from (as in gplq_run); the FP32
     * run has none, or its RSS would carry a second copy of the weights */
    if (kind == KIND_STAGE1 && model_clone(&teacher, &student, err, sizeof err)) goto out;

    double t0 = clock_mono_s();
    if (kind == KIND_STAGE1) {
        if (actq_init(&aq, &student, BENCH_ABITS, BENCH_PATCH_BITS, err, sizeof err)) goto out;
        /* stage1_run installs &aq.hooks on the student: put the timing table there */
        th = (timed_hooks){.inner = aq.hooks};
        aq.hooks = (model_hooks){.ctx = &th, .forward = timed_forward, .backward = timed_backward,
                               .reforward = th.inner.reforward ? timed_reforward : NULL};
        log.th = &th;
        gplq_config g;
        gplq_defaults(&g);
        stage1_config c = g.s1;
        c.lr = BENCH_LR;
        c.epochs = 1;
        c.batch = B;
        c.pca_samples = B < 2 ? 2 : B; /* pca_fit needs two features */
        c.calib_images = B;
        c.pca_var = 0;              /* so k is the first multiple: exactly pca_multiple */
        c.pca_multiple = bm->pca_k;
        c.ckpt_every = 0;
        c.ckpt_path = NULL;         /* no checkpoint writes inside the timed steps */
        int r = stage1_run(&student, &teacher, &aq, &c, &data, on_step, &log, &res, err,
                           sizeof err);
        if (r) {
            if (r > 0) snprintf(err, sizeof err, "stage1_run stopped early");
            goto out;
        }
    } else {
        /* FP32 training as gplq train does it, with stage 1's learning rate and augmentation;
         * no clipping or decay, which stage 1 does not do either; with the norm and GELU
         * outputs recomputed as stage 1 does (gplq train --recompute), or kept (the default) */
        model_set_recompute(&student, kind == KIND_FP32_RECOMPUTE);
        gplq_config g;
        gplq_defaults(&g);
        stage1_config s1 = g.s1;
        train_config tc = {.epochs = 1, .batch = B, .lr = BENCH_LR, .min_lr = BENCH_LR,
                           .warmup_epochs = 0, .weight_decay = 0, .label_smoothing = 0,
                           .clip_grad = 0, .aug = s1.aug, .seed = 0, .eval_every = 0,
                           .ckpt_every = 0, .ckpt_path = NULL, .objective = NULL};
        int r = train_run(&student, &tc, &data, NULL, on_step, &log, err, sizeof err);
        if (r) {
            if (r > 0) snprintf(err, sizeof err, "train_run stopped early");
            goto out;
        }
    }
    if (log.n != total) {
        snprintf(err, sizeof err, "%d steps reported, %d expected", log.n, total);
        goto out;
    }
    if (!isfinite(log.loss)) {
        snprintf(err, sizeof err, "loss is %g: the step is broken, its time means nothing",
                 log.loss);
        goto out;
    }
    int k = kind == KIND_STAGE1 ? res.pca.k : 0;
    int fdim = model_config_dims(&bm->cfg).feature_dim;
    if (kind == KIND_STAGE1 && k != (bm->pca_k < fdim ? bm->pca_k : fdim)) {
        snprintf(err, sizeof err, "the PCA kept %d components, %d wanted", k, bm->pca_k);
        goto out;
    }
    long end_hwm = mem_peak_kb(), loop_hwm = log.hwm_reset ? end_hwm : -1;
    long peak = log.hwm_reset && log.setup_hwm_kb > end_hwm ? log.setup_hwm_kb : end_hwm;
    printf("ok %ld %ld %ld %.6f %.6f %.6f %d %.6f %d\n", peak, log.setup_hwm_kb, loop_hwm,
           log.loss, log.ce, log.pca, k, log.t[0] - t0, steps);
    /* timed step i is the interval between the calls after steps warmup + i - 1 and warmup + i */
    for (int i = warmup; i < total; i++)
        printf("%.9f %.9f %.9f\n", log.t[i] - log.t[i - 1], log.qf[i] - log.qf[i - 1],
               log.qb[i] - log.qb[i - 1]);
    rc = fflush(stdout) ? 1 : 0;
out:
    if (rc) fprintf(stderr, "bench_stage1: %s %s: %s\n", bm->name, kind_names[kind], err);
    stage1_result_free(&res);
    actq_free(&aq);
    model_free(&student);
    model_free(&teacher);
    ds_free(&data);
    free(log.t); free(log.qf); free(log.qb);
    return rc;
}

/* ---- the parent: children per model ---- */

typedef struct {
    long peak_rss_kb, setup_rss_kb, loop_rss_kb; /* whole run, through step 1, after (-1: ?) */
    float loss, ce, pca;
    int k;
    double setup_s;
    double step_s, min_step_s, qfwd_s, qbwd_s; /* medians over the timed steps, and the min */
} child_result;

typedef struct {
    const bench_model *bm;
    int batch, warmup, steps;
    child_result s1, fp32, fp32r; /* fp32r: FP32 training with recompute */
    int have_fp32, have_fp32r;
} bench_result;

/* Re-executes this program as "--child NAME --kind KIND" with the run's sizes and reads its
 * report into cr. Returns 0, or -1 with a message (the child crashed, failed, or said
 * something else). */
static int run_child(const bench_result *res, run_kind kind, child_result *cr, char *err,
                     size_t errlen) {
    const char *name = res->bm->name;
    char b[16], w[16], s[16], th[16];
    snprintf(b, sizeof b, "%d", res->batch);
    snprintf(w, sizeof w, "%d", res->warmup);
    snprintf(s, sizeof s, "%d", res->steps);
    snprintf(th, sizeof th, "%d", opt.threads);
    const char *args[] = {"bench_stage1", "--child", name, "--kind", kind_names[kind],
                          "--batch", b, "--warmup", w, "--steps", s, "--threads", th,
                          opt.bf16 ? "--bf16" : NULL, NULL};
    int fd[2];
    if (pipe(fd)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL); /* nothing buffered may be written twice */
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(fd[0]); close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]); close(fd[1]);
        /* exec rather than run in the forked copy: OpenMP's thread pool does not survive a fork,
         * and the child's VmHWM must not include the parent's pages */
        execv("/proc/self/exe", (char *const *)args); /* execv does not write to them */
        fprintf(stderr, "bench_stage1: exec: %s\n", strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    int n = res->steps, got = 0, said = -1;
    double *t = malloc(sizeof(double) * 3 * (size_t)n);
    if (f && t &&
        fscanf(f, "ok %ld %ld %ld %f %f %f %d %lf %d", &cr->peak_rss_kb, &cr->setup_rss_kb,
               &cr->loop_rss_kb, &cr->loss, &cr->ce, &cr->pca, &cr->k, &cr->setup_s,
               &said) == 9 && said == n) {
        for (got = 0; got < n; got++)
            if (fscanf(f, "%lf %lf %lf", &t[got], &t[n + got], &t[2 * n + got]) != 3) break;
    }
    if (f) fclose(f); else close(fd[0]);
    int status = 0, rc = -1;
    pid_t waited;
    while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
    if (waited < 0) {
        snprintf(err, errlen, "%s: waitpid: %s", name, strerror(errno));
    } else if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "%s %s: the child died of signal %d", name, kind_names[kind],
                 WTERMSIG(status));
    } else if (WEXITSTATUS(status)) {
        snprintf(err, errlen, "%s %s: the child failed (exit %d)", name, kind_names[kind],
                 WEXITSTATUS(status));
    } else if (!t || said != n || got != n) {
        snprintf(err, errlen, "%s %s: the child's report was short or garbled", name,
                 kind_names[kind]);
    } else {
        cr->min_step_s = 1e30;
        for (int i = 0; i < n; i++)
            if (t[i] < cr->min_step_s) cr->min_step_s = t[i];
        cr->step_s = median(t, n);
        cr->qfwd_s = median(t + n, n);
        cr->qbwd_s = median(t + 2 * n, n);
        rc = 0;
    }
    free(t);
    return rc;
}

static json_t *result_json(const bench_result *r, double sgemm) {
    const model_config *c = &r->bm->cfg;
    const child_result *s = &r->s1;
    double flops = 4 * model_forward_flops(c) * r->batch;
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(r->bm->name));
    json_object_set_new(o, "batch", json_integer(r->batch));
    json_object_set_new(o, "threads", json_integer(opt.threads));
    json_object_set_new(o, "blas_core", json_string(blas_core()));
    json_object_set_new(o, "bf16", json_string(!opt.bf16 ? "off" : gemm_bf16_available()
                                                                  ? "kernel" : "emulated"));
    json_object_set_new(o, "blas_core_source", json_string(blas_core_source()));
    char desc[256];
    model_config_describe(c, desc, sizeof desc);
    json_object_set_new(o, "arch", json_string(model_arch_name(c->arch)));
    json_object_set_new(o, "config", json_string(desc));
    json_object_set_new(o, "img_size", json_integer(model_config_dims(c).img_size));
    json_object_set_new(o, "num_classes", json_integer(model_config_dims(c).num_classes));
    json_object_set_new(o, "abits", json_integer(BENCH_ABITS));
    json_object_set_new(o, "patch_bits", json_integer(BENCH_PATCH_BITS));
    json_object_set_new(o, "pca_k", json_integer(s->k));
    json_object_set_new(o, "warmup", json_integer(r->warmup));
    json_object_set_new(o, "steps", json_integer(r->steps));
    json_object_set_new(o, "step_s", json_real(s->step_s));
    json_object_set_new(o, "step_s_min", json_real(s->min_step_s));
    json_object_set_new(o, "quant_forward_s", json_real(s->qfwd_s));
    json_object_set_new(o, "quant_backward_s", json_real(s->qbwd_s));
    json_object_set_new(o, "setup_s", json_real(s->setup_s));
    json_object_set_new(o, "images_per_s", json_real(r->batch / s->step_s));
    json_object_set_new(o, "flops_per_step", json_real(flops));
    json_object_set_new(o, "flops_note",
                        json_string("4 x forward matmul FLOPs (teacher forward 1x, student "
                                    "forward + backward 3x)"));
    json_object_set_new(o, "gflops", json_real(flops / s->step_s * 1e-9));
    json_object_set_new(o, "sgemm_n", json_integer(opt.sgemm_n));
    json_object_set_new(o, "sgemm_gflops", json_real(sgemm));
    json_object_set_new(o, "frac_sgemm", json_real(flops / s->step_s * 1e-9 / sgemm));
    json_object_set_new(o, "peak_rss_mb", json_real(s->peak_rss_kb / 1024.0));
    json_object_set_new(o, "setup_peak_rss_mb", json_real(s->setup_rss_kb / 1024.0));
    if (s->loop_rss_kb >= 0)
        json_object_set_new(o, "loop_peak_rss_mb", json_real(s->loop_rss_kb / 1024.0));
    json_object_set_new(o, "loss", json_real(s->loss));
    json_object_set_new(o, "ce", json_real(s->ce));
    json_object_set_new(o, "pca_loss", json_real(s->pca));
    if (r->have_fp32) {
        json_object_set_new(o, "fp32_step_s", json_real(r->fp32.step_s));
        json_object_set_new(o, "fp32_images_per_s", json_real(r->batch / r->fp32.step_s));
        json_object_set_new(o, "fp32_peak_rss_mb", json_real(r->fp32.peak_rss_kb / 1024.0));
        if (r->fp32.loop_rss_kb >= 0)
            json_object_set_new(o, "fp32_loop_peak_rss_mb",
                                json_real(r->fp32.loop_rss_kb / 1024.0));
        json_object_set_new(o, "rss_ratio_stage1_fp32",
                            json_real((double)s->peak_rss_kb / r->fp32.peak_rss_kb));
    }
    if (r->have_fp32r) {
        json_object_set_new(o, "fp32_recompute_step_s", json_real(r->fp32r.step_s));
        json_object_set_new(o, "fp32_recompute_peak_rss_mb",
                            json_real(r->fp32r.peak_rss_kb / 1024.0));
    }
    return o;
}

/* ---- the command line ---- */

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "bench_stage1: %s needs an integer in [%d, %d]\n", flag, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--json")) { opt.json = 1; continue; }
        if (!strcmp(a, "--no-fp32")) { opt.no_fp32 = 1; continue; }
        if (!strcmp(a, "--bf16")) { opt.bf16 = 1; continue; }
        if (!strcmp(a, "--models")) opt.models = v;
        else if (!strcmp(a, "--child")) opt.child = v;
        else if (!strcmp(a, "--kind")) {
            if (v && !strcmp(v, "stage1")) opt.kind = KIND_STAGE1;
            else if (v && !strcmp(v, "fp32")) opt.kind = KIND_FP32;
            else if (v && !strcmp(v, "fp32-recompute")) opt.kind = KIND_FP32_RECOMPUTE;
            else rc = -1;
        }
        else if (!strcmp(a, "--batch")) rc = parse_int(a, v, 1, 1 << 16, &opt.batch);
        else if (!strcmp(a, "--warmup")) rc = parse_int(a, v, 0, 1000, &opt.warmup);
        else if (!strcmp(a, "--steps")) rc = parse_int(a, v, 1, 1000, &opt.steps);
        else if (!strcmp(a, "--threads")) rc = parse_int(a, v, 1, 1024, &opt.threads);
        else if (!strcmp(a, "--sgemm-n")) rc = parse_int(a, v, 16, 16384, &opt.sgemm_n);
        else rc = -1;
        if (rc || !v) {
            if (!v) fprintf(stderr, "bench_stage1: %s needs a value\n", a);
            fprintf(stderr, "usage: bench_stage1 [--json] [--models demo,deit-s,swin-t] "
                            "[--batch N] [--warmup N] [--steps N] [--threads N] [--sgemm-n N] "
                            "[--no-fp32] [--bf16]\n");
            return -1;
        }
        i++;
    }
    return 0;
}

static const bench_model *find_model(const char *name, size_t len) {
    for (int i = 0; i < N_ELEMS(bench_models); i++)
        if (strlen(bench_models[i].name) == len && !strncmp(bench_models[i].name, name, len))
            return &bench_models[i];
    return NULL;
}

/* 1 if model bm is in the comma-separated --models list (or there is no list). */
static int selected(const bench_model *bm) {
    if (!opt.models) return 1;
    for (const char *p = opt.models; *p;) {
        size_t len = strcspn(p, ",");
        if (find_model(p, len) == bm) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    if (parse_args(argc, argv)) return 2;
    if (opt.models)
        for (const char *p = opt.models; *p;) {
            size_t len = strcspn(p, ",");
            if (!find_model(p, len)) {
                fprintf(stderr, "bench_stage1: unknown model '%.*s' (demo, deit-s, swin-t)\n",
                        (int)len, p);
                return 2;
            }
            p += len + (p[len] == ',');
        }
    blas_set_threads(opt.threads);
    if (opt.bf16) matmul_set_precision(MATMUL_BF16);

    if (opt.child) {
        const bench_model *bm = find_model(opt.child, strlen(opt.child));
        if (!bm || opt.batch < 1 || opt.warmup < 1 || opt.steps < 1) {
            fprintf(stderr, "bench_stage1: --child needs a model, --batch, --warmup >= 1, "
                            "--steps\n");
            return 2;
        }
        return child_main(bm, opt.kind, opt.batch, opt.warmup, opt.steps);
    }

    /* the human table goes to stderr when stdout carries the JSON */
    FILE *out = opt.json ? stderr : stdout;
    fprintf(out, "bench_stage1: OpenBLAS core %s (%s), threads %d\n", blas_core(),
            blas_core_source(), opt.threads);
    if (opt.bf16)
        fprintf(out, "bench_stage1: linear layers in BF16 (%s)\n",
                gemm_bf16_available() ? "AVX512-BF16 kernel"
                                      : "emulated: no AVX512-BF16 on this CPU, slower than FP32");
    double sgemm = sgemm_gflops(opt.sgemm_n, 10);
    if (sgemm <= 0) {
        fprintf(stderr, "bench_stage1: out of memory for the sgemm matrices\n");
        return 1;
    }
    fprintf(out, "sgemm %dx%dx%d: %.1f GFLOP/s (best of 10)\n", opt.sgemm_n, opt.sgemm_n,
            opt.sgemm_n, sgemm);
    fprintf(out, "stage-1 step = batch + student forward (A%d, patch A%d) + teacher forward + "
                 "CE + PCA loss + backward + AdamW (weights and steps), through stage1_run; "
                 "FLOPs = 4 x forward matmul FLOPs\n\n", BENCH_ABITS, BENCH_PATCH_BITS);
    fprintf(out, "%-7s %5s %4s %10s %9s %15s %7s %8s %7s %8s %11s %8s %11s %8s\n", "model",
            "batch", "k", "GFLOP/step", "step ms", "quant f/b ms", "img/s", "GFLOP/s", "%sgemm",
            "RSS MB", "FP32 step ms", "FP32 RSS", "rec step ms", "rec RSS");
    int failed = 0;
    for (int i = 0; i < N_ELEMS(bench_models); i++) {
        const bench_model *bm = &bench_models[i];
        if (!selected(bm)) continue;
        bench_result r = {.bm = bm,
                          .batch = opt.batch > 0 ? opt.batch : bm->batch,
                          .warmup = opt.warmup >= 0 ? opt.warmup : bm->warmup,
                          .steps = opt.steps > 0 ? opt.steps : bm->steps};
        /* the first step has no start mark outside train_run, and carries the allocations */
        if (r.warmup < 1) r.warmup = 1;
        char err[1024];
        if (run_child(&r, KIND_STAGE1, &r.s1, err, sizeof err)) {
            fprintf(stderr, "bench_stage1: %s\n", err);
            failed = 1;
            continue;
        }
        if (!opt.no_fp32) {
            if (run_child(&r, KIND_FP32, &r.fp32, err, sizeof err)) {
                fprintf(stderr, "bench_stage1: %s\n", err);
                failed = 1;
            } else {
                r.have_fp32 = 1;
            }
            if (run_child(&r, KIND_FP32_RECOMPUTE, &r.fp32r, err, sizeof err)) {
                fprintf(stderr, "bench_stage1: %s\n", err);
                failed = 1;
            } else {
                r.have_fp32r = 1;
            }
        }
        double flops = 4 * model_forward_flops(&bm->cfg) * r.batch;
        double gf = flops / r.s1.step_s * 1e-9;
        char quant[32], fp32_ms[16] = "-", fp32_rss[16] = "-", fp32r_ms[16] = "-";
        char fp32r_rss[16] = "-";
        snprintf(quant, sizeof quant, "%.1f / %.1f", 1e3 * r.s1.qfwd_s, 1e3 * r.s1.qbwd_s);
        if (r.have_fp32) {
            snprintf(fp32_ms, sizeof fp32_ms, "%.1f", 1e3 * r.fp32.step_s);
            snprintf(fp32_rss, sizeof fp32_rss, "%.1f", r.fp32.peak_rss_kb / 1024.0);
        }
        if (r.have_fp32r) {
            snprintf(fp32r_ms, sizeof fp32r_ms, "%.1f", 1e3 * r.fp32r.step_s);
            snprintf(fp32r_rss, sizeof fp32r_rss, "%.1f", r.fp32r.peak_rss_kb / 1024.0);
        }
        fprintf(out, "%-7s %5d %4d %10.2f %9.1f %15s %7.1f %8.1f %6.1f%% %8.1f %11s %8s %11s %8s\n",
                bm->name, r.batch, r.s1.k, flops * 1e-9, 1e3 * r.s1.step_s, quant,
                r.batch / r.s1.step_s, gf, 100 * gf / sgemm, r.s1.peak_rss_kb / 1024.0, fp32_ms,
                fp32_rss, fp32r_ms, fp32r_rss);
        if (opt.json) {
            json_t *o = result_json(&r, sgemm);
            char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
            if (s) printf("%s\n", s);
            free(s);
            json_decref(o);
            fflush(stdout);
        }
    }
    return failed;
}
