/*
 * bench_train.c: how fast one training step of gplq's ViT and Swin is, for `make bench`.
 *
 * Measures, in one run: the machine's sgemm rate (cblas_sgemm 1024^3, best of several after a
 * warmup), then for each model one full training step as train_run does it (forward, label-
 * smoothed cross-entropy, zero_grad, backward, gradient clipping, AdamW) on random weights and
 * random inputs: median step time, images/s, achieved GFLOP/s and that as a fraction of the
 * sgemm rate, and peak RSS. bench/run.sh puts these beside the same step in PyTorch
 * (bench/torch_step.py).
 *
 * FLOPs per step are 3x the forward pass's matrix-product FLOPs (model_forward_flops): the
 * backward pass does two products for each forward one. Elementwise work is not counted, so
 * the GFLOP/s figure is the rate of useful matmul work, comparable with the sgemm rate.
 *
 * Each model runs in a fresh child process (this program re-executed with --child) so that its
 * peak RSS (VmHWM) is its own, not the maximum over everything the parent did before.
 *
 * Usage: bench_train [--json] [--models demo,deit-s,swin-t] [--batch N] [--warmup N]
 *                    [--steps N] [--threads N] [--sgemm-n N]
 * --batch/--warmup/--steps override every model's own values (for quick smoke runs). With
 * --json, one JSON object per model goes to stdout (one a line) and the human table to stderr.
 * Exit status: 0, or 1 if a step failed or a child crashed; 2 for a bad command line.
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

#include "engine/adamw.h"
#include "engine/blas.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/model.h"
#include "util/clock.h"
#include "util/mem.h"

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The models of the benchmark. torch_step.py has the same table; run.sh joins on name. */
typedef struct {
    const char *name;
    const char *what;
    model_config cfg;
    int batch, warmup, steps;
} bench_model;

static const bench_model bench_models[] = {
    {"demo", "gplq train's default ViT (Fashion-MNIST)",
     {.arch = MODEL_VIT,
      .vit = {.img_size = 28, .patch = 4, .in_chans = 1, .dim = 192, .depth = 6, .heads = 3,
              .mlp_hidden = 768, .num_classes = 10, .ln_eps = 1e-6f, .std = {1, 1, 1}}},
     128, 3, 10},
    {"deit-s", "DeiT-S / ViT-S/16 shape (224 px)",
     {.arch = MODEL_VIT,
      .vit = {.img_size = 224, .patch = 16, .in_chans = 3, .dim = 384, .depth = 12, .heads = 6,
              .mlp_hidden = 1536, .num_classes = 1000, .ln_eps = 1e-6f, .std = {1, 1, 1}}},
     16, 2, 5},
    /* Swin-T as timm's swin_tiny_patch4_window7_224 (LayerNorm eps 1e-5, as timm's Swin) */
    {"swin-t", "Swin-T shape (224 px, window 7)",
     {.arch = MODEL_SWIN,
      .swin = {.img_size = 224, .patch = 4, .in_chans = 3, .embed_dim = 96, .stages = 4,
               .depths = {2, 2, 6, 2}, .heads = {3, 6, 12, 24}, .window = 7, .mlp_ratio = 4,
               .num_classes = 1000, .ln_eps = 1e-5f, .std = {1, 1, 1}}},
     16, 2, 5},
};

/* The step's hyperparameters: gplq train's defaults. lr is constant (no schedule), since the
 * schedule is a scalar computation and does not change the work. */
static const adamw_hparams bench_adamw = {
    .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.05f};
#define BENCH_SMOOTHING 0.1f
#define BENCH_CLIP 1.0f

/* Command line. Negative values mean "the model's own". */
static struct {
    int json, threads, sgemm_n, batch, warmup, steps;
    const char *models;  /* comma-separated names, NULL = all */
    const char *child;   /* model name when this process is a child */
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

/* ---- the sgemm rate ---- */

/* GFLOP/s of cblas_sgemm on n x n x n, best of reps timed calls after two warmup calls.
 * Best, not median: it is the ceiling the training step is measured against. */
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

/* ---- the child: one model's training steps ---- */

/* Everything one training step touches besides the model. */
typedef struct {
    model m;
    adamw_state opt;
    uint8_t *mask;          /* (num_params) 1 where weight decay applies */
    float *x;               /* (B, Cin, H, W) random, already-normalized images */
    int *labels;            /* (B) */
    float *probs, *dlogits; /* (B, K) */
    int B;
} step_state;

static int step_init(step_state *s, const model_config *cfg, int B, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->B = B;
    if (model_init(&s->m, cfg, err, errlen)) return -1;
    model_init_weights(&s->m, 0);
    model_dims d = model_config_dims(cfg);
    size_t img = (size_t)d.in_chans * d.img_size * d.img_size;
    size_t K = (size_t)d.num_classes;
    s->mask = malloc(model_num_params(&s->m));
    s->x = malloc(sizeof(float) * img * B);
    s->labels = malloc(sizeof(int) * B);
    s->probs = malloc(sizeof(float) * K * B);
    s->dlogits = malloc(sizeof(float) * K * B);
    if (!s->mask || !s->x || !s->labels || !s->probs || !s->dlogits ||
        adamw_init(&s->opt, model_num_params(&s->m))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (model_alloc_grads(&s->m, err, errlen)) return -1;
    /* the same decay mask as train_run: matrices only */
    int ninfo;
    const param_info *info = model_param_info(&s->m, &ninfo);
    for (int i = 0; i < ninfo; i++) memset(s->mask + info[i].offset, info[i].decay, info[i].numel);
    rng_t r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < img * B; i++) s->x[i] = rng_normal(&r);
    for (int b = 0; b < B; b++) s->labels[b] = (int)rng_below(&r, (uint32_t)d.num_classes);
    return 0;
}

static void step_free(step_state *s) {
    model_free(&s->m);
    adamw_free(&s->opt);
    free(s->mask); free(s->x); free(s->labels); free(s->probs); free(s->dlogits);
}

/* One training step, the sequence of train_run. Phase times into t: [0] forward and loss,
 * [1] zero_grad and backward, [2] clip and AdamW. The same batch every step: the work does
 * not depend on the data. */
static int step_run(step_state *s, float *loss, double t[3], char *err, size_t errlen) {
    model *m = &s->m;
    int B = s->B, K = model_get_dims(m).num_classes;
    double t0 = clock_mono_s();
    if (model_forward(m, s->x, B, err, errlen)) return -1;
    memset(s->dlogits, 0, sizeof(float) * B * K);
    *loss = crossentropy_forward_backward(s->probs, s->dlogits, model_logits(m), s->labels, B, K,
                                          BENCH_SMOOTHING, 1.0f);
    double t1 = clock_mono_s();
    model_zero_grad(m);
    if (model_backward(m, s->dlogits, NULL, NULL, err, errlen)) return -1;
    double t2 = clock_mono_s();
    adamw_clip_grad_norm(model_grads(m), model_num_params(m), BENCH_CLIP);
    adamw_step(&s->opt, model_params(m), model_grads(m), s->mask, &bench_adamw, bench_adamw.lr);
    double t3 = clock_mono_s();
    t[0] = t1 - t0, t[1] = t2 - t1, t[2] = t3 - t2;
    if (!isfinite(*loss)) {
        snprintf(err, errlen, "loss is %g: the step is broken, its time means nothing", *loss);
        return -1;
    }
    return 0;
}

/* Runs warmup + steps training steps of model bm, then as many forward-only passes
 * (model_forward_infer on the same batch: what evaluation, teacher features and calibration
 * run) after one warmup pass, and writes, to stdout, the line the parent reads:
 * "ok <VmHWM kB> <last loss> <steps>" then one "<forward> <backward> <optim> <forward-only>"
 * seconds line per timed step. The forward-only passes run in the training step's buffers,
 * so they do not move the peak RSS. Returns the exit status. */
static int child_main(const bench_model *bm, int B, int warmup, int steps) {
    char err[1024];
    step_state s;
    double *t = malloc(sizeof(double) * 4 * (size_t)steps);
    float loss = 0;
    int rc = 1;
    if (!t) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    if (step_init(&s, &bm->cfg, B, err, sizeof err)) goto out_state;
    for (int i = 0; i < warmup + steps; i++) {
        double ph[3];
        if (step_run(&s, &loss, ph, err, sizeof err)) goto out_state;
        if (i >= warmup) memcpy(t + 4 * (size_t)(i - warmup), ph, sizeof ph);
    }
    long hwm = mem_peak_kb();
    for (int i = -1; i < steps; i++) {
        double t0 = clock_mono_s();
        if (model_forward_infer(&s.m, s.x, B, err, sizeof err)) goto out_state;
        if (i >= 0) t[4 * (size_t)i + 3] = clock_mono_s() - t0;
    }
    printf("ok %ld %.6f %d\n", hwm, loss, steps);
    for (int i = 0; i < steps; i++)
        printf("%.9f %.9f %.9f %.9f\n", t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
    rc = fflush(stdout) ? 1 : 0;
out_state:
    step_free(&s);
out:
    if (rc) fprintf(stderr, "bench_train: %s: %s\n", bm->name, err);
    free(t);
    return rc;
}

/* ---- the parent: one child per model ---- */

typedef struct {
    const bench_model *bm;
    int batch, warmup, steps;
    long peak_rss_kb;
    float loss;
    double step_s, fwd_s, bwd_s, opt_s;  /* medians over the timed steps */
    double infer_s;                      /* median forward-only pass of the same batch */
    double min_step_s;
} bench_result;

/* Re-executes this program as "--child NAME" with the run's sizes and reads its report into
 * res. Returns 0, or -1 with a message (the child crashed, failed, or said something else). */
static int run_child(const char *argv0, bench_result *res, char *err, size_t errlen) {
    char b[16], w[16], s[16], th[16];
    snprintf(b, sizeof b, "%d", res->batch);
    snprintf(w, sizeof w, "%d", res->warmup);
    snprintf(s, sizeof s, "%d", res->steps);
    snprintf(th, sizeof th, "%d", opt.threads);
    const char *args[] = {argv0, "--child", res->bm->name, "--batch", b, "--warmup", w,
                          "--steps", s, "--threads", th, NULL};
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
        fprintf(stderr, "bench_train: exec: %s\n", strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    double *t = malloc(sizeof(double) * 4 * (size_t)res->steps);
    int n = -1, got = 0;
    if (f && t && fscanf(f, "ok %ld %f %d", &res->peak_rss_kb, &res->loss, &n) == 3 &&
        n == res->steps) {
        for (got = 0; got < n; got++)
            if (fscanf(f, "%lf %lf %lf %lf", &t[got], &t[n + got], &t[2 * n + got],
                       &t[3 * n + got]) != 4)
                break;
    }
    if (f) fclose(f); else close(fd[0]);
    int status = 0, rc = -1;
    pid_t waited;
    while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
    if (waited < 0) {
        snprintf(err, errlen, "%s: waitpid: %s", res->bm->name, strerror(errno));
    } else if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "%s: the child died of signal %d", res->bm->name, WTERMSIG(status));
    } else if (WEXITSTATUS(status)) {
        snprintf(err, errlen, "%s: the child failed (exit %d)", res->bm->name,
                 WEXITSTATUS(status));
    } else if (!t || got != res->steps || n != res->steps) {
        snprintf(err, errlen, "%s: the child's report was short or garbled", res->bm->name);
    } else {
        double *total = malloc(sizeof(double) * n);
        if (!total) {
            snprintf(err, errlen, "out of memory");
        } else {
            res->min_step_s = 1e30;
            for (int i = 0; i < n; i++) {
                total[i] = t[i] + t[n + i] + t[2 * n + i];
                if (total[i] < res->min_step_s) res->min_step_s = total[i];
            }
            res->step_s = median(total, n);
            res->fwd_s = median(t, n);
            res->bwd_s = median(t + n, n);
            res->opt_s = median(t + 2 * n, n);
            res->infer_s = median(t + 3 * n, n);
            free(total);
            rc = 0;
        }
    }
    free(t);
    return rc;
}

static json_t *result_json(const bench_result *r, double sgemm) {
    const model_config *c = &r->bm->cfg;
    double flops = 3 * model_forward_flops(c) * r->batch;
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(r->bm->name));
    json_object_set_new(o, "batch", json_integer(r->batch));
    json_object_set_new(o, "threads", json_integer(opt.threads));
    json_object_set_new(o, "blas_core", json_string(blas_core()));
    json_object_set_new(o, "blas_core_source", json_string(blas_core_source()));
    char desc[256];
    model_config_describe(c, desc, sizeof desc);
    json_object_set_new(o, "arch", json_string(model_arch_name(c->arch)));
    json_object_set_new(o, "config", json_string(desc));
    json_object_set_new(o, "img_size", json_integer(model_config_dims(c).img_size));
    json_object_set_new(o, "num_classes", json_integer(model_config_dims(c).num_classes));
    json_object_set_new(o, "warmup", json_integer(r->warmup));
    json_object_set_new(o, "steps", json_integer(r->steps));
    json_object_set_new(o, "step_s", json_real(r->step_s));
    json_object_set_new(o, "step_s_min", json_real(r->min_step_s));
    json_object_set_new(o, "forward_s", json_real(r->fwd_s));
    json_object_set_new(o, "backward_s", json_real(r->bwd_s));
    json_object_set_new(o, "optim_s", json_real(r->opt_s));
    json_object_set_new(o, "images_per_s", json_real(r->batch / r->step_s));
    json_object_set_new(o, "flops_per_step", json_real(flops));
    json_object_set_new(o, "flops_note", json_string("3 x forward matmul FLOPs (backward = 2x)"));
    json_object_set_new(o, "gflops", json_real(flops / r->step_s * 1e-9));
    json_object_set_new(o, "sgemm_n", json_integer(opt.sgemm_n));
    json_object_set_new(o, "sgemm_gflops", json_real(sgemm));
    json_object_set_new(o, "frac_sgemm", json_real(flops / r->step_s * 1e-9 / sgemm));
    json_object_set_new(o, "peak_rss_mb", json_real(r->peak_rss_kb / 1024.0));
    json_object_set_new(o, "loss", json_real(r->loss));
    /* the forward-only pass: 1 x forward matmul FLOPs */
    double fwd = model_forward_flops(c) * r->batch;
    json_object_set_new(o, "infer_s", json_real(r->infer_s));
    json_object_set_new(o, "infer_images_per_s", json_real(r->batch / r->infer_s));
    json_object_set_new(o, "infer_frac_sgemm", json_real(fwd / r->infer_s * 1e-9 / sgemm));
    return o;
}

/* ---- the command line ---- */

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "bench_train: %s needs an integer in [%d, %d]\n", flag, lo, hi);
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
        if (!strcmp(a, "--models")) opt.models = v;
        else if (!strcmp(a, "--child")) opt.child = v;
        else if (!strcmp(a, "--batch")) rc = parse_int(a, v, 1, 1 << 16, &opt.batch);
        else if (!strcmp(a, "--warmup")) rc = parse_int(a, v, 0, 1000, &opt.warmup);
        else if (!strcmp(a, "--steps")) rc = parse_int(a, v, 1, 1000, &opt.steps);
        else if (!strcmp(a, "--threads")) rc = parse_int(a, v, 1, 1024, &opt.threads);
        else if (!strcmp(a, "--sgemm-n")) rc = parse_int(a, v, 16, 16384, &opt.sgemm_n);
        else {
            fprintf(stderr, "usage: bench_train [--json] [--models demo,deit-s,swin-t] "
                            "[--batch N] [--warmup N] [--steps N] [--threads N] [--sgemm-n N]\n");
            return -1;
        }
        if (rc || !v) {
            if (!v) fprintf(stderr, "bench_train: %s needs a value\n", a);
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
                fprintf(stderr, "bench_train: unknown model '%.*s' (demo, deit-s, swin-t)\n",
                        (int)len, p);
                return 2;
            }
            p += len + (p[len] == ',');
        }
    blas_set_threads(opt.threads);

    if (opt.child) {
        const bench_model *bm = find_model(opt.child, strlen(opt.child));
        if (!bm || opt.batch < 1 || opt.warmup < 0 || opt.steps < 1) {
            fprintf(stderr, "bench_train: --child needs a model, --batch, --warmup, --steps\n");
            return 2;
        }
        return child_main(bm, opt.batch, opt.warmup, opt.steps);
    }

    /* the human table goes to stderr when stdout carries the JSON */
    FILE *out = opt.json ? stderr : stdout;
    fprintf(out, "bench_train: OpenBLAS core %s (%s), threads %d\n", blas_core(),
            blas_core_source(), opt.threads);
    double sgemm = sgemm_gflops(opt.sgemm_n, 10);
    if (sgemm <= 0) {
        fprintf(stderr, "bench_train: out of memory for the sgemm matrices\n");
        return 1;
    }
    fprintf(out, "sgemm %dx%dx%d: %.1f GFLOP/s (best of 10)\n", opt.sgemm_n, opt.sgemm_n,
            opt.sgemm_n, sgemm);
    fprintf(out, "training step = forward + cross-entropy + backward + clip + AdamW; "
                 "FLOPs = 3 x forward matmul FLOPs\n\n");
    fprintf(out, "%-7s %5s %10s %9s %24s %8s %8s %7s %9s %12s %8s\n", "model", "batch",
            "GFLOP/step", "step ms", "fwd / bwd / optim ms", "img/s", "GFLOP/s", "%sgemm",
            "RSS MB", "fwd-only ms", "%sgemm");
    int failed = 0;
    for (int i = 0; i < N_ELEMS(bench_models); i++) {
        const bench_model *bm = &bench_models[i];
        if (!selected(bm)) continue;
        bench_result r = {.bm = bm,
                          .batch = opt.batch > 0 ? opt.batch : bm->batch,
                          .warmup = opt.warmup >= 0 ? opt.warmup : bm->warmup,
                          .steps = opt.steps > 0 ? opt.steps : bm->steps};
        char err[1024];
        if (run_child(argv[0], &r, err, sizeof err)) {
            fprintf(stderr, "bench_train: %s\n", err);
            failed = 1;
            continue;
        }
        double flops = 3 * model_forward_flops(&bm->cfg) * r.batch;
        double gf = flops / r.step_s * 1e-9;
        char phases[64];
        snprintf(phases, sizeof phases, "%.1f / %.1f / %.1f", 1e3 * r.fwd_s, 1e3 * r.bwd_s,
                 1e3 * r.opt_s);
        double gfi = model_forward_flops(&bm->cfg) * r.batch / r.infer_s * 1e-9;
        fprintf(out, "%-7s %5d %10.2f %9.1f %24s %8.1f %8.1f %6.1f%% %9.1f %12.1f %7.1f%%\n",
                bm->name, r.batch, flops * 1e-9, 1e3 * r.step_s, phases, r.batch / r.step_s, gf,
                100 * gf / sgemm, r.peak_rss_kb / 1024.0, 1e3 * r.infer_s, 100 * gfi / sgemm);
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
