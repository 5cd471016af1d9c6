/*
 * test_gplq.c: the GPLQ stages on a small ViT trained here on real Fashion-MNIST images.
 * Stage 1: the PCA keeps a multiple of 32 components (or all), stage 1 raises the W32A3
 * accuracy above the merely calibrated model, and a run stopped midway resumes to the exact
 * same weights and quantizer steps. Stage 2: QwT is kept only where it fits (R^2 > 0), lowers
 * each kept block's output error, and does not lose accuracy against W4 without it. QwT's
 * ridge fit recovers a known linear map, and its BLAS R^2 matches the plain loop's. The
 * pipeline's artifacts reload to its accuracy, and its bf16 option reaches every pass.
 */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gplq/stage1.h"
#include "gplq/stage2.h"
#include "gplq/export.h"
#include "gplq/pipeline.h"
#include "engine/ops.h"
#include "gplq/ridge.h"
#include "tests/test.h"

static ds_set train_set, test_set;

static model fp_model;
static int have_fp;

/* The small FP32 model, trained once per process. */
static int setup(model *out) {
    char err[512];
    if (have_fp) return model_clone(out, &fp_model, err, sizeof err);
    model *fp = &fp_model;
    if (!train_set.n && ds_open_builtin("fashion-mnist", NULL, &train_set, &test_set, err, sizeof err)) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    model_config cfg = {.arch = MODEL_VIT,
                        .vit = {.img_size = 28, .patch = 7, .in_chans = 1, .dim = 48, .depth = 2,
                                .heads = 2, .mlp_hidden = 96, .num_classes = 10, .ln_eps = 1e-6f,
                                .mean = {0.286f}, .std = {0.353f}}};
    model_init(fp, &cfg, err, sizeof err);
    model_init_weights(fp, 1);
    ds_set tr = train_set;
    tr.n = 4096;
    train_config tc = {.epochs = 4, .batch = 64, .lr = 2e-3f, .min_lr = 1e-4f,
                       .warmup_epochs = 0.5f, .weight_decay = 0.05f, .label_smoothing = 0.1f,
                       .clip_grad = 1.0f, .seed = 3};
    if (train_run(fp, &tc, &tr, NULL, NULL, NULL, err, sizeof err)) return -1;
    have_fp = 1;
    return model_clone(out, &fp_model, err, sizeof err);
}

/* Stage 1's feature passes: stop at the call-th tick, recording what the ticks said. */
typedef struct { int calls, stop_call; int64_t last_done, last_total; } feature_ticks;
static int feature_tick(void *ctx, int64_t done, int64_t total) {
    feature_ticks *t = ctx;
    t->last_done = done;
    t->last_total = total;
    return ++t->calls == t->stop_call;
}

typedef struct { int64_t stop_at; } stopper;
static int stop_cb(void *ctx, const train_progress *p) {
    return ((stopper *)ctx)->stop_at && p->step == ((stopper *)ctx)->stop_at;
}

TEST(stage1_improves_w32a4_and_resumes_exactly) {
    model fp;
    if (setup(&fp)) { CHECK(0); return; }
    char err[512];
    ds_set tr = train_set, te = test_set;
    tr.n = 4096;
    te.n = 2000;
    double fp_top1, cal_top1, s1_top1;
    CHECK(train_eval_top1(&fp, &te, 250, &fp_top1, err, sizeof err) == 0);

    gplq_config g;
    gplq_defaults(&g);
    stage1_config c = g.s1;
    c.lr = 5e-4f;
    c.epochs = 2;
    c.batch = 64;
    c.pca_samples = 2000;
    c.calib_images = 256;
    c.ckpt_every = 0;

    /* calibrated only: the steps stage 1 starts from, no training */
    model cal;
    actq_set aq;
    CHECK(model_clone(&cal, &fp, err, sizeof err) == 0);
    CHECK(actq_init(&aq, &cal, 3, 8, err, sizeof err) == 0);
    CHECK(gplq_calibrate(&cal, &aq, &tr, c.calib_images, c.seed, err, sizeof err) == 0);
    CHECK(train_eval_top1(&cal, &te, 250, &cal_top1, err, sizeof err) == 0);
    actq_free(&aq);
    model_free(&cal);

    /* stage 1, uninterrupted */
    model st, teacher;
    stage1_result res;
    CHECK(model_clone(&st, &fp, err, sizeof err) == 0);
    CHECK(model_clone(&teacher, &fp, err, sizeof err) == 0);
    CHECK(actq_init(&aq, &st, 3, 8, err, sizeof err) == 0);
    int rc = stage1_run(&st, &teacher, &aq, &c, &tr, NULL, NULL, &res, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    CHECK(res.pca.k == 32 && res.pca.explained >= 0.6);
    CHECK(train_eval_top1(&st, &te, 250, &s1_top1, err, sizeof err) == 0);
    printf("  FP32 %.2f%%, W32A3 calibrated %.2f%%, after stage 1 %.2f%% (PCA k=%d, %.0f%% var)\n",
           100 * fp_top1, 100 * cal_top1, 100 * s1_top1, res.pca.k, 100 * res.pca.explained);
    CHECK_MSG(s1_top1 > cal_top1 + 0.01, "stage 1 did not help: %.4f vs %.4f", s1_top1, cal_top1);
    size_t ns = actq_num_steps(&aq);
    float *steps = malloc(sizeof(float) * ns);
    actq_gather(&aq, steps, 0);
    stage1_result_free(&res);
    actq_free(&aq);

    /* stopped at step 37 of 128, then resumed into fresh objects */
    char path[] = "/tmp/gplq_test_stage1_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    unlink(path);
    c.ckpt_path = path;
    model st2;
    stopper sp = {.stop_at = 37};
    CHECK(model_clone(&st2, &fp, err, sizeof err) == 0);
    CHECK(actq_init(&aq, &st2, 3, 8, err, sizeof err) == 0);
    CHECK(stage1_run(&st2, &teacher, &aq, &c, &tr, stop_cb, &sp, &res, err, sizeof err) == 1);
    stage1_result_free(&res);
    actq_free(&aq);
    model_free(&st2);
    CHECK(model_clone(&st2, &fp, err, sizeof err) == 0);
    CHECK(actq_init(&aq, &st2, 3, 8, err, sizeof err) == 0);
    sp.stop_at = 0;
    /* a stop during the feature passes (PCA, calibration) comes at the next batch, before any
     * training step (the progress callback never sees a step) */
    feature_ticks ft = {.stop_call = 3};
    c.tick = feature_tick;
    c.tick_ctx = &ft;
    stopper never = {.stop_at = -1};
    CHECK(stage1_run(&st2, &teacher, &aq, &c, &tr, stop_cb, &never, &res, err, sizeof err) == 1);
    CHECK_MSG(ft.calls == 3 && ft.last_done == 3 * 256 && ft.last_total == 2000,
              "ticks: %d calls, last %lld of %lld", ft.calls, (long long)ft.last_done,
              (long long)ft.last_total);
    CHECK(res.pca.basis == NULL); /* freed: a stopped run leaves nothing to free */
    actq_free(&aq);
    CHECK(actq_init(&aq, &st2, 3, 8, err, sizeof err) == 0);
    /* and a run that is never stopped hears every batch: 8 of the 2000 PCA samples, then the
     * one of the 256 calibration images */
    ft = (feature_ticks){.stop_call = 0};
    CHECK(stage1_run(&st2, &teacher, &aq, &c, &tr, stop_cb, &sp, &res, err, sizeof err) == 0);
    CHECK_MSG(ft.calls == 8 + 1 && ft.last_done == 256 && ft.last_total == 256,
              "ticks: %d calls, last %lld of %lld", ft.calls, (long long)ft.last_done,
              (long long)ft.last_total);
    CHECK_MSG(memcmp(model_params(&st), model_params(&st2), sizeof(float) * model_num_params(&st)) == 0,
              "resumed stage 1 weights differ");
    float *steps2 = malloc(sizeof(float) * ns);
    actq_gather(&aq, steps2, 0);
    CHECK_MSG(memcmp(steps, steps2, sizeof(float) * ns) == 0, "resumed quantizer steps differ");
    unlink(path);
    free(steps);
    free(steps2);
    stage1_result_free(&res);
    actq_free(&aq);
    model_free(&st);
    model_free(&st2);
    model_free(&teacher);
    model_free(&fp);
}

/* D = X W + b + noise on 2,500 rows (two whole dgemm chunks of ridge_r2 and a part): the fit
 * finds W and b, ridge_r2 agrees with ridge_r2_ref to rounding, and a constant D has R^2 0. */
TEST(ridge_fit_and_r2_against_the_reference) {
    enum { N = 2500, C = 24 };
    float *X = malloc(sizeof(float) * N * C), *D = malloc(sizeof(float) * N * C);
    double *w = malloc(sizeof(double) * (C + 1) * C), *sol = malloc(sizeof(double) * (C + 1) * C);
    if (!X || !D || !w || !sol) { CHECK(0); goto out; }
    uint64_t st = 0x9e3779b97f4a7c15ULL; /* a fixed xorshift stream: uniform in [-1, 1) */
#define UNIF() (st ^= st << 13, st ^= st >> 7, st ^= st << 17, (double)(st >> 11) / (1ULL << 52) - 1)
    for (int k = 0; k < (C + 1) * C; k++) w[k] = UNIF();
    for (int i = 0; i < N; i++) {
        for (int a = 0; a < C; a++) X[i * C + a] = (float)(3 * UNIF());
        for (int j = 0; j < C; j++) {
            double d = w[C * C + j] + 0.01 * UNIF();
            for (int a = 0; a < C; a++) d += X[i * C + a] * w[a * C + j];
            D[i * C + j] = (float)d;
        }
    }
#undef UNIF
    char err[256];
    CHECK(ridge_solve(sol, X, D, N, C, 1e-6, err, sizeof err) == 0);
    double worst = 0;
    for (int k = 0; k < (C + 1) * C; k++) worst = fmax(worst, fabs(sol[k] - w[k]));
    CHECK_MSG(worst < 2e-3, "the fit is off the true map by %g", worst);
    double r2, sse, r2_ref, sse_ref;
    CHECK(ridge_r2(&r2, &sse, sol, X, D, N, C, err, sizeof err) == 0);
    ridge_r2_ref(&r2_ref, &sse_ref, sol, X, D, N, C);
    CHECK_MSG(fabs(r2 - r2_ref) < 1e-12 && fabs(sse - sse_ref) <= 1e-9 * sse_ref,
              "R^2 %.15f against %.15f, SSE %.9g against %.9g", r2, r2_ref, sse, sse_ref);
    CHECK_MSG(r2 > 0.999 && r2 < 1, "R^2 %.6f of a fit to 1%% noise", r2);
    for (int k = 0; k < N * C; k++) D[k] = 0.5f; /* nothing to explain */
    CHECK(ridge_r2(&r2, &sse, sol, X, D, N, C, err, sizeof err) == 0);
    ridge_r2_ref(&r2_ref, &sse_ref, sol, X, D, N, C);
    CHECK(r2 == 0 && r2_ref == 0 && fabs(sse - sse_ref) <= 1e-9 * sse_ref);
out:
    free(X); free(D); free(w); free(sol);
}

TEST(stage2_qwt_compensates_where_it_fits) {
    model fp, q;
    if (setup(&fp)) { CHECK(0); return; }
    char err[512];
    ds_set tr = train_set, te = test_set;
    tr.n = 4096;
    te.n = 2000;
    /* activation quantizers calibrated (stage 1 skipped: stage 2 does not care how the steps
     * were found), 8-bit activations so the weight error dominates */
    actq_set aq;
    CHECK(actq_init(&aq, &fp, 8, 8, err, sizeof err) == 0);
    CHECK(gplq_calibrate(&fp, &aq, &tr, 256, 0, err, sizeof err) == 0);
    double a8, noqwt, withqwt;
    CHECK(train_eval_top1(&fp, &te, 250, &a8, err, sizeof err) == 0);
    gplq_config g;
    gplq_defaults(&g);
    stage2_config c = g.s2;
    c.wbits = 3;
    c.calib_images = 256;
    stage2_result res;
    for (int qwt = 0; qwt < 2; qwt++) {
        c.qwt = qwt;
        CHECK(model_clone(&q, &fp, err, sizeof err) == 0);
        int rc = stage2_run(&q, &fp, &aq, &c, &tr, &res, err, sizeof err);
        CHECK_MSG(rc == 0, "%s", err);
        if (rc) return;
        /* every quantized row holds at most 2^bits distinct values: codes * step */
        const stage2_qweight *fc1 = stage2_find(&res, "blocks.0.mlp.fc1.weight");
        CHECK(fc1 != NULL && res.nlin == 1 + 4 * 2 + 1); /* patch, 4 per block, head */
        if (!fc1) return;
        int8_t mn = 127, mx = -128;
        for (int i = 0; i < fc1->rows * fc1->cols; i++) {
            mn = fc1->codes[i] < mn ? fc1->codes[i] : mn;
            mx = fc1->codes[i] > mx ? fc1->codes[i] : mx;
        }
        CHECK(mn >= -4 && mx <= 3);
        CHECK(q.vit.params.fc1_w[5] == fc1->codes[5] * fc1->steps[0]);
        CHECK(train_eval_top1(&q, &te, 250, qwt ? &withqwt : &noqwt, err, sizeof err) == 0);
        for (int l = 0; l < 2 && qwt; l++) {
            printf("  block %d: R^2 %.3f, output MSE %.3g -> %.3g%s\n", l, res.r2[l],
                   res.mse_before[l], res.mse_after[l], res.qwt_w[l] ? "" : " (not kept)");
            CHECK((res.qwt_w[l] != NULL) == (res.r2[l] > 0));
            if (res.qwt_w[l]) CHECK(res.mse_after[l] < res.mse_before[l]);
        }
        stage2_result_free(&res);
        model_free(&q);
    }
    printf("  W32A8 %.2f%%, W3A8 %.2f%%, W3A8 + QwT %.2f%%\n", 100 * a8, 100 * noqwt, 100 * withqwt);
    CHECK(withqwt >= noqwt - 0.005);
    actq_free(&aq);
    model_free(&fp);
}

/* The defaults on a small run: no baselines, batch 64, pca PCA images, calib images for both
 * stages' calibration, no stage-1 checkpoints. */
static void small_config(gplq_config *c, int pca, int calib) {
    gplq_defaults(c);
    c->baselines = 0;
    c->s1.batch = 64;
    c->s1.pca_samples = pca;
    c->s1.calib_images = calib;
    c->s1.ckpt_every = 0;
    c->s2.calib_images = calib;
}

TEST(pipeline_artifacts_reload_to_the_same_accuracy) {
    model fp;
    if (setup(&fp)) { CHECK(0); return; }
    char err[512];
    ds_set tr = train_set, te = test_set;
    tr.n = 1024;
    te.n = 1000;
    gplq_config c;
    small_config(&c, 1000, 128);
    c.s1.lr = 5e-4f;
    gplq_report rep;
    model q;
    actq_set aq;
    stage2_result s2;
    int rc = gplq_run(&fp, &tr, &te, &c, NULL, NULL, &rep, &q, &aq, &s2, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc) return;
    CHECK(rep.fp32 > 0.5 && rep.stage1 > 0 && rep.stage2_noqwt > 0 && rep.gplq > 0);
    CHECK(rep.ptq_baseline < 0 && rep.minmax_baseline < 0);
    char dir[] = "/tmp/gplq_test_export_XXXXXX", path[256];
    CHECK(mkdtemp(dir) != NULL);
    const char *keys[] = {"note"}, *vals[] = {"test"};
    CHECK_MSG(gplq_export(dir, &q, &aq, &s2, keys, vals, 1, err, sizeof err) == 0, "%s", err);
    gplq_qmodel back;
    snprintf(path, sizeof path, "%s/model.q.safetensors", dir);
    CHECK_MSG(gplq_load_quantized(&back, path, err, sizeof err) == 0, "%s", err);
    double top1;
    CHECK(train_eval_top1(&back.m, &te, 250, &top1, err, sizeof err) == 0);
    CHECK_MSG(top1 == rep.gplq, "reloaded %.4f, measured %.4f", top1, rep.gplq);
    /* 4-bit codes: the packed file is much smaller than the FP32 one */
    struct stat sq, sf;
    char fpath[256];
    snprintf(fpath, sizeof fpath, "%s/model.fakequant.safetensors", dir);
    CHECK(stat(path, &sq) == 0 && stat(fpath, &sf) == 0 && sq.st_size * 3 < sf.st_size);
    gplq_qmodel_free(&back);
    /* the fake-quantized file (FP32 dequantized weights) is the same model */
    CHECK_MSG(gplq_load_quantized(&back, fpath, err, sizeof err) == 0, "%s", err);
    CHECK(train_eval_top1(&back.m, &te, 250, &top1, err, sizeof err) == 0 && top1 == rep.gplq);
    gplq_qmodel_free(&back);
    /* a plain FP32 checkpoint is not a quantized model, and says so */
    CHECK(gplq_load_quantized(&back, GPLQ_SRC_DIR "/tests/fixtures/vit_tiny_ref.safetensors",
                              err, sizeof err) != 0 && strstr(err, "not a gplq quantized model"));
    unlink(path);
    unlink(fpath);
    rmdir(dir);
    model_free(&q);
    actq_free(&aq);
    stage2_result_free(&s2);
    model_free(&fp);
}

/* One small run of gplq_run with bf16 as given: its activation steps into steps (nsteps floats,
 * their count into *n). 0, or -1 with the message printed. */
static int small_run(int bf16, float *steps, int nsteps, int *n) {
    model fp;
    if (setup(&fp)) return -1;
    char err[512];
    ds_set tr = train_set, te = test_set;
    tr.n = 256;
    te.n = 250;
    gplq_config c;
    small_config(&c, 256, 64);
    c.bf16 = bf16;
    gplq_report rep;
    model q;
    actq_set aq;
    stage2_result s2;
    int rc = gplq_run(&fp, &tr, &te, &c, NULL, NULL, &rep, &q, &aq, &s2, err, sizeof err);
    model_free(&fp);
    if (rc) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    CHECK(rep.bf16 == bf16);
    *n = 0;
    for (int i = 0; i < aq.nq; i++)
        for (int j = 0; j < aq.q[i].channels && *n < nsteps; j++) steps[(*n)++] = aq.q[i].step[j];
    model_free(&q);
    actq_free(&aq);
    stage2_result_free(&s2);
    return 0;
}

/* The bf16 option reaches every pass: stage 1 learns other steps with BF16 products than with
 * FP32 ones (a run that ignored the flag would learn the same bits), and the caller's own
 * precision is back after the run, whichever it was. */
TEST(pipeline_bf16_changes_the_run_and_restores_the_callers_precision) {
    enum { MAXSTEPS = 4096 };
    static float fp32[MAXSTEPS], bf16[MAXSTEPS];
    int n32 = 0, n16 = 0;
    matmul_set_precision(MATMUL_BF16); /* the caller's choice, which an FP32 run must restore */
    CHECK(small_run(0, fp32, MAXSTEPS, &n32) == 0);
    CHECK(matmul_set_precision(MATMUL_FP32) == MATMUL_BF16);
    CHECK(small_run(1, bf16, MAXSTEPS, &n16) == 0);
    CHECK(matmul_set_precision(MATMUL_FP32) == MATMUL_FP32);
    CHECK(n32 > 0 && n32 == n16);
    int differ = 0;
    double most = 0;
    for (int i = 0; i < n32 && i < n16; i++) {
        differ += fp32[i] != bf16[i];
        double r = fabs(fp32[i] - bf16[i]) / fabs(fp32[i]);
        most = r > most ? r : most;
    }
    printf("  %d of %d activation steps differ, by at most %.2g of themselves\n", differ, n32,
           most);
    CHECK(differ > 0);
    CHECK(most < 0.2); /* BF16 rounding moves the steps, it does not derail training */
}

TEST_MAIN()
