/*
 * bench_dist.c: how fast stage 1 runs data-parallel over MPI ranks (train/dist.h), for
 * `make bench` (bench/dist.sh runs it alone and under mpirun and prints the table).
 *
 * Runs stage 1 exactly as gplq does (stage1_run: the PCA, the calibration, then train_run with
 * stage 1's objective) on a synthetic dataset of random 8-bit images of the model's shape,
 * as bench_stage1.c does, for warmup + steps steps of one global batch each; under mpirun every
 * rank takes its share of each batch and the gradients go through the one allreduce per step.
 * Rank 0 reports, as one JSON line on stdout:
 *   - the median step time and the global images/s;
 *   - the allreduce's time per step (median, from dist_allreduce_seconds around each step):
 *     within a step it includes waiting for the slowest rank, so it is an upper bound on the
 *     transfer; and the allreduce alone of the same buffer after training (median of
 *     --reduce-reps calls, every rank idle), the transfer cost the scaling model uses;
 *   - the fused buffer's size (weights' gradients, quantizer steps' gradients, loss terms).
 * Alone (no mpirun) the allreduce is a no-op and its times are 0.
 *
 * With --reduce-only 1 it skips stage 1 and measures the allreduce alone (the same buffer
 * size), the cheap way to get the transfer cost of a shape under mpirun.
 *
 * Usage: bench_dist [--model demo|deit-s] [--batch N] [--warmup N] [--steps N] [--threads N]
 *                   [--reduce-reps N] [--reduce-only 1]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "engine/rng.h"
#include "gplq/pipeline.h"
#include "gplq/stage1.h"
#include "train/dist.h"
#include "util/clock.h"

typedef struct {
    const char *name;
    model_config cfg;
    int batch, pca_k;
} model_shape;

/* bench_stage1.c's shapes (the demo model: batch 128, its default; DeiT-S: 32, what two cores
 * step through in seconds) */
static const model_shape shapes[] = {
    {"demo", {.arch = MODEL_VIT,
              .vit = {.img_size = 28, .patch = 4, .in_chans = 1, .dim = 192, .depth = 6,
                      .heads = 3, .mlp_hidden = 768, .num_classes = 10, .ln_eps = 1e-6f,
                      .std = {1, 1, 1}}}, 128, 64},
    {"deit-s", {.arch = MODEL_VIT,
                .vit = {.img_size = 224, .patch = 16, .in_chans = 3, .dim = 384, .depth = 12,
                        .heads = 6, .mlp_hidden = 1536, .num_classes = 1000, .ln_eps = 1e-6f,
                        .std = {1, 1, 1}}}, 32, 128},
};

typedef struct {
    int n, cap;
    double *t, *red; /* at each step's end: the clock, dist_allreduce_seconds() */
} step_log;

static int on_step(void *ctx, const train_progress *p) {
    step_log *l = ctx;
    (void)p;
    if (l->n < l->cap) {
        l->t[l->n] = clock_mono_s();
        l->red[l->n] = dist_allreduce_seconds();
        l->n++;
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int synth(ds_set *d, const model_config *mc, int n) {
    model_dims dims = model_config_dims(mc), *c = &dims;
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size;
    *d = (ds_set){.n = n, .channels = c->in_chans, .height = c->img_size, .width = c->img_size,
                  .num_classes = c->num_classes};
    d->pixels = malloc(img * n);
    d->labels = malloc(sizeof(int32_t) * n);
    if (!d->pixels || !d->labels) return -1;
    rng_t r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < img * n; i++) d->pixels[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < n; i++) d->labels[i] = (int32_t)rng_below(&r, (uint32_t)c->num_classes);
    return 0;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    char err[1024];
    if (dist_init(&argc, &argv, err, sizeof err)) {
        fprintf(stderr, "bench_dist: %s\n", err);
        return 1;
    }
    const char *name = "demo";
    int batch = 0, warmup = 2, steps = 8, threads = 0, reps = 10, reduce_only = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) name = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reduce-reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reduce-only")) reduce_only = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_dist: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const model_shape *ms = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        if (!strcmp(shapes[i].name, name)) ms = &shapes[i];
    if (!ms || warmup < 1 || steps < 1 || reps < 1) {
        fprintf(stderr, "bench_dist: --model demo|deit-s, --warmup >= 1, --steps >= 1\n");
        return 2;
    }
    int B = batch > 0 ? batch : ms->batch, total = warmup + steps;
    blas_set_threads(threads);
    model teacher, student;
    actq_set aq;
    ds_set data;
    stage1_result res;
    step_log log = {.cap = total, .t = malloc(sizeof(double) * total),
                    .red = malloc(sizeof(double) * total)};
    if (!log.t || !log.red || synth(&data, &ms->cfg, total * B) ||
        model_init(&student, &ms->cfg, err, sizeof err)) {
        fprintf(stderr, "bench_dist: out of memory\n");
        return 1;
    }
    model_init_weights(&student, 0);
    if (model_clone(&teacher, &student, err, sizeof err) ||
        actq_init(&aq, &student, 4, 8, err, sizeof err)) {
        fprintf(stderr, "bench_dist: %s\n", err);
        return 1;
    }
    gplq_config g;
    gplq_defaults(&g);
    stage1_config c = g.s1;
    c.lr = 5e-6f;
    c.epochs = 1;
    c.batch = B;
    c.pca_samples = B;
    c.calib_images = B;
    c.pca_var = 0; /* k = pca_multiple exactly: random features say nothing of k */
    c.pca_multiple = ms->pca_k;
    c.ckpt_path = NULL;
    int r = 0;
    if (reduce_only) /* no steps: zero step and reduce times below */
        for (log.n = 0; log.n < total; log.n++) log.t[log.n] = log.red[log.n] = 0;
    else
        r = stage1_run(&student, &teacher, &aq, &c, &data, on_step, &log, &res, err, sizeof err);
    if (r || log.n != total) {
        fprintf(stderr, "bench_dist: rank %d: %s\n", dist_rank(), r ? err : "steps missing");
        dist_abort(1);
        return 1;
    }
    if (!reduce_only) stage1_result_free(&res);
    /* the step's allreduce alone, every rank idle: the transfer */
    size_t nbuf = model_num_params(&student) + actq_num_steps(&aq) + 1 + TRAIN_MAX_TERMS;
    float *buf = calloc(nbuf, sizeof(float));
    double *alone = malloc(sizeof(double) * reps);
    if (!buf || !alone) {
        fprintf(stderr, "bench_dist: out of memory\n");
        dist_abort(1);
        return 1;
    }
    for (int i = 0; i < reps; i++) {
        double a = dist_allreduce_seconds();
        if (dist_allreduce_sum(buf, nbuf, err, sizeof err)) {
            fprintf(stderr, "bench_dist: %s\n", err);
            dist_abort(1);
            return 1;
        }
        alone[i] = dist_allreduce_seconds() - a;
    }
    double *st = malloc(sizeof(double) * steps), *red = malloc(sizeof(double) * steps);
    for (int i = 0; i < steps; i++) {
        st[i] = log.t[warmup + i] - log.t[warmup + i - 1];
        red[i] = log.red[warmup + i] - log.red[warmup + i - 1];
    }
    double step_s = median(st, steps), red_s = median(red, steps), alone_s = median(alone, reps);
    if (dist_is_root())
        printf("{\"model\": \"%s\", \"ranks\": %d, \"threads_per_rank\": %d, \"batch\": %d, "
               "\"steps\": %d, \"step_s\": %.6f, \"images_per_s\": %.3f, "
               "\"allreduce_in_step_s\": %.6f, \"allreduce_share\": %.4f, "
               "\"allreduce_alone_s\": %.6f, \"allreduce_floats\": %zu, \"num_params\": %zu}\n",
               ms->name, dist_size(), threads, B, steps, step_s, step_s > 0 ? B / step_s : 0,
               red_s, step_s > 0 ? red_s / step_s : 0, alone_s, nbuf, model_num_params(&student));
    fflush(stdout);
    free(buf); free(alone); free(st); free(red); free(log.t); free(log.red);
    actq_free(&aq);
    model_free(&student);
    model_free(&teacher);
    ds_free(&data);
    dist_finalize();
    return 0;
}
