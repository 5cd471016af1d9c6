/*
 * test_dist.c: stage 1 data-parallel over MPI (train/dist.h) against one process.
 *
 * Run by hand (or by tests/run.sh) it is the driver: it computes the single-process results
 * itself and starts `mpirun -np 2` of itself for the two-rank ones (the ranks know their part
 * from GPLQ_TEST_DIST, see rank_main), then compares:
 *   - the first step of stage 1 on one global batch: loss, its parts, every weight gradient and
 *     every quantizer step's gradient, 2 ranks against 1 process, within float tolerance;
 *   - resume across a change of rank count: 2 ranks stop at step 3 and 1 process finishes from
 *     their state file, 1 process stops at step 3 and 2 ranks finish, each against an
 *     uninterrupted single-process run;
 * and, without MPI, that dist is rank 0 of 1 and that skipping augmentation draws is what
 * ds_batch draws.
 * mpirun is started with --oversubscribe (2 ranks may exceed the cores) and, as root,
 * --allow-run-as-root. Without mpirun on the PATH the MPI cases fail (Open MPI is a base
 * dependency: scripts/install-deps.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/blas.h"
#include "gplq/pipeline.h"
#include "gplq/stage1.h"
#include "train/dist.h"
#include "tests/test.h"

/* ---- the shared set-up: a small random ViT, a real Fashion-MNIST subset ---- */

#define STEP_STOP 3   /* where the interrupted runs stop */

static ds_set train_set;

static int load_data(char *err, size_t errlen) {
    if (train_set.n) return 0;
    if (ds_open_builtin("fashion-mnist", NULL, &train_set, NULL, err, errlen)) return -1;
    ds_truncate(&train_set, 320); /* 10 steps of 32 */
    return 0;
}

/* teacher (random weights, seed 1), student = its copy, quantizers for the student. */
static int setup(model *t, model *s, actq_set *aq, char *err, size_t errlen) {
    model_config cfg = {.arch = MODEL_VIT};
    cfg.vit = (vit_config){.img_size = 28, .patch = 7, .in_chans = 1, .dim = 64, .depth = 2,
                      .heads = 2, .mlp_hidden = 128, .num_classes = 10, .ln_eps = 1e-6f,
                      .mean = {0.286f}, .std = {0.353f}};
    if (load_data(err, errlen) || model_init(t, &cfg, err, errlen)) return -1;
    model_init_weights(t, 1);
    if (model_clone(s, t, err, errlen)) return -1;
    return actq_init(aq, t, 4, 8, err, errlen);
}

static stage1_config config(const char *state) {
    return (stage1_config){.epochs = 1, .batch = 32, .lr = 1e-3f, .alpha = 1.0f,
                           .pca_samples = 300, .pca_var = 0.6, .pca_multiple = 32,
                           .calib_images = 64, .aug = {.pad = 2, .hflip = 1}, .seed = 5,
                           .ckpt_path = state};
}

/* What a run hands back: its first step's numbers, or its final weights and steps. */
typedef struct {
    model *student;
    actq_set *aq;
    int64_t stop_at;        /* stop after this step (0: run to the end) */
    int64_t first_step;     /* the first step this run took */
    float loss, terms[2];
    float *grad, *steps_grad;   /* (num_params), (nsteps): the first step's */
} run_out;

static int on_step(void *ctx, const train_progress *p) {
    run_out *o = ctx;
    if (p->evaluated) return 0;
    if (!o->first_step) {
        o->first_step = p->step;
        o->loss = p->loss;
        o->terms[0] = p->terms[0];
        o->terms[1] = p->terms[1];
        size_t np = model_num_params(o->student), ne = actq_num_steps(o->aq);
        o->grad = malloc(sizeof(float) * np);
        o->steps_grad = malloc(sizeof(float) * ne);
        memcpy(o->grad, model_grads(o->student), sizeof(float) * np);
        memcpy(o->steps_grad, p->extra_grad, sizeof(float) * ne);
    }
    return o->stop_at && p->step == o->stop_at;
}

/* One stage-1 run (this process's part of it under MPI). 0 done, 1 stopped, -1 error. */
static int run(const char *state, int64_t stop_at, model *t, model *s, actq_set *aq,
               run_out *o, char *err, size_t errlen) {
    if (setup(t, s, aq, err, errlen)) return -1;
    *o = (run_out){.student = s, .aq = aq, .stop_at = stop_at};
    stage1_config c = config(state);
    stage1_result res;
    int rc = stage1_run(s, t, aq, &c, &train_set, on_step, o, &res, err, errlen);
    if (rc == 0) stage1_result_free(&res);
    return rc;
}

/* ---- the files a rank hands to the driver ---- */

/* first_step, loss, terms, then n floats of a and m of b. */
static int write_out(const char *path, const run_out *o, const float *a, size_t n, const float *b,
                     size_t m) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(&o->first_step, sizeof o->first_step, 1, f);
    fwrite(&o->loss, sizeof(float), 1, f);
    fwrite(o->terms, sizeof(float), 2, f);
    fwrite(a, sizeof(float), n, f);
    fwrite(b, sizeof(float), m, f);
    return fclose(f);
}

static int read_out(const char *path, run_out *o, float *a, size_t n, float *b, size_t m) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ok = fread(&o->first_step, sizeof o->first_step, 1, f) == 1 &&
             fread(&o->loss, sizeof(float), 1, f) == 1 && fread(o->terms, sizeof(float), 2, f) == 2 &&
             fread(a, sizeof(float), n, f) == n && fread(b, sizeof(float), m, f) == m;
    fclose(f);
    return ok ? 0 : -1;
}

/* Under mpirun: GPLQ_TEST_DIST="step OUT" (the first step's gradients), or "resume STATE OUT
 * STOP" (a run from STATE if it exists, stopped after step STOP unless 0: the final weights and
 * steps). Rank 0 writes OUT. */
static int rank_main(const char *spec) {
    char mode[16], state[1024], out[1024], err[1024];
    long long stop = 0;
    blas_set_threads(1);
    if (dist_init(NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "rank: %s\n", err);
        return 1;
    }
    model t, s;
    actq_set aq;
    run_out o;
    int rc = 1;
    if (sscanf(spec, "step %1023s", out) == 1 && !strncmp(spec, "step", 4)) {
        int r = run(NULL, 1, &t, &s, &aq, &o, err, sizeof err);
        if (r == 1 && (!dist_is_root() || !write_out(out, &o, o.grad, model_num_params(&s), o.steps_grad,
                                                     actq_num_steps(&aq))))
            rc = 0;
    } else if (sscanf(spec, "%15s %1023s %1023s %lld", mode, state, out, &stop) == 4 &&
               !strcmp(mode, "resume")) {
        int r = run(state, stop, &t, &s, &aq, &o, err, sizeof err);
        size_t ne = actq_num_steps(&aq);
        float *steps = malloc(sizeof(float) * ne);
        if (r >= 0 && steps) actq_gather(&aq, steps, 0);
        if (r >= 0 && steps &&
            (!dist_is_root() || !write_out(out, &o, model_params(&s), model_num_params(&s), steps, ne)))
            rc = 0;
        free(steps);
    } else {
        snprintf(err, sizeof err, "bad GPLQ_TEST_DIST '%s'", spec);
    }
    if (rc) {
        fprintf(stderr, "rank %d: %s\n", dist_rank(), err);
        dist_abort(1);
    }
    dist_finalize();
    return rc;
}

/* Runs `mpirun -np 2 SELF` with GPLQ_TEST_DIST=spec; 0 if every rank succeeded. */
static const char *self_path;
static int mpirun2(const char *spec) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setenv("GPLQ_TEST_DIST", spec, 1);
        /* under make san: Open MPI's own allocations outlive MPI_Finalize, which LeakSanitizer
         * would report as the ranks' (and fail them); the driver still checks for leaks */
        char asan[1024];
        const char *a = getenv("ASAN_OPTIONS");
        snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", a ? a : "", a && *a ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
        const char *args[12];
        int n = 0;
        args[n++] = "mpirun";
        if (geteuid() == 0) args[n++] = "--allow-run-as-root";
        args[n++] = "--oversubscribe";
        args[n++] = "-np";
        args[n++] = "2";
        args[n++] = self_path;
        args[n] = NULL;
        execvp("mpirun", (char *const *)args);
        perror("exec mpirun");
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* ---- the cases ---- */

TEST(alone_is_rank_0_of_1) {
    char err[256];
    CHECK(dist_init(NULL, NULL, err, sizeof err) == 0);
    CHECK(dist_rank() == 0 && dist_size() == 1 && dist_is_root());
    int lo = -1, cnt = -1;
    dist_shard(37, &lo, &cnt);
    CHECK(lo == 0 && cnt == 37);
    float v[3] = {1, 2, 3};
    CHECK(dist_allreduce_sum(v, 3, err, sizeof err) == 0 && v[0] == 1 && v[1] == 2 && v[2] == 3);
    CHECK(dist_any(0) == 0 && dist_any(5) == 1);
}

TEST(augment_skip_draws_what_ds_batch_draws) {
    char err[256];
    CHECK(load_data(err, sizeof err) == 0);
    ds_augment augs[] = {{.pad = 2, .hflip = 1}, {.pad = 2}, {.hflip = 1}, {0}};
    float *x = malloc(sizeof(float) * 28 * 28 * 7);
    int idx[7] = {0, 1, 2, 3, 4, 5, 6};
    float mean[1] = {0.286f}, std[1] = {0.353f};
    for (int a = 0; a < 4; a++) {
        rng_t r1, r2;
        rng_seed(&r1, 9);
        rng_seed(&r2, 9);
        ds_batch(&train_set, idx, 7, x, mean, std, &augs[a], &r1);
        ds_augment_skip(&augs[a], &r2, 7);
        CHECK_MSG(!memcmp(&r1, &r2, sizeof r1), "augmentation %d: the streams part", a);
    }
    /* images 3..5 made after skipping 3 are the whole batch's images 3..5 */
    float *y = malloc(sizeof(float) * 28 * 28 * 3);
    rng_t r1, r2;
    rng_seed(&r1, 4);
    rng_seed(&r2, 4);
    ds_batch(&train_set, idx, 7, x, mean, std, &augs[0], &r1);
    ds_augment_skip(&augs[0], &r2, 3);
    ds_batch(&train_set, idx + 3, 3, y, mean, std, &augs[0], &r2);
    CHECK(!memcmp(x + 3 * 28 * 28, y, sizeof(float) * 28 * 28 * 3));
    free(x);
    free(y);
}

/* max |a - b| over max |b|, the error of a relative to b's scale */
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        d = e > d ? e : d;
        s = fabs(b[i]) > s ? fabs(b[i]) : s;
    }
    return s > 0 ? d / s : d;
}

TEST(first_step_two_ranks_equals_one_process) {
    char err[1024], out[] = "/tmp/gplq_test_dist_XXXXXX";
    CHECK(mkdtemp(out) != NULL);
    model t, s;
    actq_set aq;
    run_out one;
    CHECK_MSG(run(NULL, 1, &t, &s, &aq, &one, err, sizeof err) == 1, "%s", err);
    size_t np = model_num_params(&s), ne = actq_num_steps(&aq);
    char path[1100], spec[1200];
    snprintf(path, sizeof path, "%s/step.bin", out);
    snprintf(spec, sizeof spec, "step %s", path);
    CHECK(mpirun2(spec) == 0);
    run_out two = {0};
    float *g = malloc(sizeof(float) * np), *gs = malloc(sizeof(float) * ne);
    CHECK(read_out(path, &two, g, np, gs, ne) == 0);
    double eg = rel_err(g, one.grad, np), es = rel_err(gs, one.steps_grad, ne);
    printf("  first step, 2 ranks vs 1 process: loss %.7g vs %.7g (ce %.7g vs %.7g, pca %.7g vs "
           "%.7g), weight gradients max rel. error %.2e, step gradients %.2e\n", two.loss,
           one.loss, two.terms[0], one.terms[0], two.terms[1], one.terms[1], eg, es);
    CHECK(two.first_step == 1);
    CHECK_NEAR(two.loss, one.loss, 1e-5 * fabs(one.loss));
    CHECK_NEAR(two.terms[0], one.terms[0], 1e-5 * fabs(one.terms[0]));
    /* the PCA term is off by 1.1e-5 of itself with the Zen kernel (see the gradients below) */
    CHECK_NEAR(two.terms[1], one.terms[1], 1e-4 * fabs(one.terms[1]) + 1e-7);
    /* 1e-3, not 1e-4: the two halves' sums round differently from the whole batch's, by
     * 1.73e-4 (weights) and 1.44e-4 (steps) with OpenBLAS's Zen kernel on an AVX2-only EPYC
     * (below 1e-4 with its SkylakeX kernel); the bugs this catches are percents */
    CHECK(eg < 1e-3);
    /* the steps' gradients carry LSQ's 1/sqrt(elements): a half batch's weighted by 1/2 alone,
     * not (1/2)^1.5, would be 41% too large */
    CHECK(es < 1e-3);
    unlink(path);
    rmdir(out);
    free(g);
    free(gs);
    free(one.grad);
    free(one.steps_grad);
    model_free(&t);
    model_free(&s);
    actq_free(&aq);
}

/* mean |a - b| over mean |b - start|: how far two runs ended apart, against how far they went */
static double drift(const float *a, const float *b, const float *start, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d += fabs((double)a[i] - b[i]);
        m += fabs((double)b[i] - start[i]);
    }
    return m > 0 ? d / m : d;
}

TEST(resume_across_rank_counts) {
    char err[1024], dir[] = "/tmp/gplq_test_dist_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char state[1100], out[1100], spec[2400];
    snprintf(state, sizeof state, "%s/s1.state", dir);
    snprintf(out, sizeof out, "%s/out.bin", dir);
    /* the reference: one process, uninterrupted */
    model t, ref, start;
    actq_set aq;
    run_out o;
    CHECK(setup(&t, &start, &aq, err, sizeof err) == 0);
    /* the steps' start: stage 1's calibration (the same seeded images) */
    stage1_config c = config(NULL);
    CHECK(gplq_calibrate(&start, &aq, &train_set, c.calib_images, c.seed, err, sizeof err) == 0);
    float *start_steps = malloc(sizeof(float) * actq_num_steps(&aq));
    actq_gather(&aq, start_steps, 0);
    model_free(&t);
    actq_free(&aq);
    CHECK_MSG(run(NULL, 0, &t, &ref, &aq, &o, err, sizeof err) == 0, "%s", err);
    size_t np = model_num_params(&ref), ne = actq_num_steps(&aq);
    float *ref_steps = malloc(sizeof(float) * ne);
    actq_gather(&aq, ref_steps, 0);
    float *w = malloc(sizeof(float) * np), *steps = malloc(sizeof(float) * ne);
    free(o.grad);
    free(o.steps_grad);
    model_free(&t);
    actq_free(&aq);

    /* 2 ranks stop after step 3 (rank 0 writes the state), 1 process finishes */
    snprintf(spec, sizeof spec, "resume %s %s %d", state, out, STEP_STOP);
    CHECK(mpirun2(spec) == 0);
    CHECK(access(state, F_OK) == 0);
    model s;
    CHECK_MSG(run(state, 0, &t, &s, &aq, &o, err, sizeof err) == 0, "%s", err);
    actq_gather(&aq, steps, 0);
    double d21 = drift(model_params(&s), model_params(&ref), model_params(&start), np);
    double e21 = drift(steps, ref_steps, start_steps, ne);
    printf("  2 ranks to step %d, then 1 process: resumed at step %lld; weights' drift from the "
           "uninterrupted run %.2e of their travel, steps' %.2e\n", STEP_STOP,
           (long long)o.first_step, d21, e21);
    CHECK(o.first_step == STEP_STOP + 1);
    CHECK(d21 < 0.1);
    CHECK(e21 < 0.5);
    free(o.grad);
    free(o.steps_grad);
    model_free(&t);
    model_free(&s);
    actq_free(&aq);
    unlink(state);

    /* 1 process stops after step 3, 2 ranks finish */
    CHECK(run(state, STEP_STOP, &t, &s, &aq, &o, err, sizeof err) == 1);
    free(o.grad);
    free(o.steps_grad);
    model_free(&t);
    model_free(&s);
    actq_free(&aq);
    snprintf(spec, sizeof spec, "resume %s %s 0", state, out);
    CHECK(mpirun2(spec) == 0);
    run_out two = {0};
    CHECK(read_out(out, &two, w, np, steps, ne) == 0);
    double d12 = drift(w, model_params(&ref), model_params(&start), np);
    double e12 = drift(steps, ref_steps, start_steps, ne);
    printf("  1 process to step %d, then 2 ranks: resumed at step %lld; weights' drift %.2e, "
           "steps' %.2e\n", STEP_STOP, (long long)two.first_step, d12, e12);
    CHECK(two.first_step == STEP_STOP + 1);
    CHECK(d12 < 0.1);
    CHECK(e12 < 0.5);
    /* The bounds sit between what was measured: resumed runs drift 1.5e-3 to 8.9e-3 (weights)
     * and 9e-3 to 7e-2 (steps: few values, some with gradients near zero whose Adam updates
     * take the sign of rounding noise); a run on other batches and augmentations (seed 6 for
     * 5) drifted 0.87 and 4.5. */
    unlink(state);
    unlink(out);
    rmdir(dir);
    free(w);
    free(steps);
    free(ref_steps);
    free(start_steps);
    model_free(&ref);
    model_free(&start);
}

/* TEST_MAIN's loop, after the rank mode (test.h's main cannot take it). */
struct test_case test_cases_[256];
int test_ncases_, test_failed_checks_;
int main(int argc, char **argv) {
    blas_setup(argv);
    const char *spec = getenv("GPLQ_TEST_DIST");
    if (spec) return rank_main(spec);
    self_path = argv[0];
    blas_set_threads(1); /* the same arithmetic as one rank's, where it matters little */
    int passed = 0, failed = 0;
    for (int i = 0; i < test_ncases_; i++) {
        if (argc > 1 && !strstr(test_cases_[i].name, argv[1])) continue;
        int before = test_failed_checks_;
        test_cases_[i].fn();
        int ok = test_failed_checks_ == before;
        printf("%s %s\n", ok ? "ok  " : "FAIL", test_cases_[i].name);
        fflush(stdout);
        if (ok) passed++; else failed++;
    }
    printf("%s: %d passed, %d failed\n", argv[0], passed, failed);
    return failed ? 1 : 0;
}
