/*
 * pipeline.c: see pipeline.h.
 */
#include "gplq/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "train/dist.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/half.h"
#include "util/mem.h"

void gplq_defaults(gplq_config *c) {
    jobspec js;
    jobspec_defaults(&js);
    gplq_config_from_spec(c, &js);
}

void gplq_config_from_spec(gplq_config *c, const jobspec *js) {
    memset(c, 0, sizeof *c);
    c->wbits = js->wbits;
    c->abits = js->abits;
    c->baselines = js->baselines;
    c->percentile_init = js->percentile_init;
    c->bf16 = js->bf16;
    c->eval_batch = GPLQ_EVAL_BATCH;
    stage1_config *s1 = &c->s1;
    s1->epochs = js->epochs;
    s1->batch = js->batch_size;
    s1->lr = js->lr;
    s1->weight_decay = js->weight_decay;
    s1->alpha = js->alpha;
    s1->label_smoothing = js->label_smoothing;
    s1->pca_samples = js->pca_samples;
    s1->pca_var = js->pca_var;
    s1->pca_multiple = STAGE1_PCA_MULTIPLE;
    s1->calib_images = js->calib_images;
    s1->aug = (ds_augment){.pad = js->pad, .hflip = js->hflip};
    s1->seed = (uint64_t)js->seed;
    s1->ckpt_every = js->ckpt_every;
    stage2_config *s2 = &c->s2;
    s2->wbits = js->wbits;
    s2->patch_wbits = STAGE2_PATCH_WBITS;
    s2->calib_images = js->qwt_images;
    s2->qwt = js->qwt;
    s2->lambda = js->lambda;
    s2->seed = (uint64_t)js->seed;
}

/* Progress of the whole run, relayed to the caller's callback. The fraction of the job done is
 * counted in image forward passes (a backward pass costs two), the unit that dominates every
 * part's time: so a bar moves at an even pace across parts of very different lengths. */
typedef struct {
    gplq_progress_fn fn;
    void *ctx;
    const char *stage, *part;
    double done, cost, total; /* forward passes: before this part, of this part, of the run */
} relay;

static int relay_send(relay *r, gplq_progress *g) {
    if (!r->fn) return 0;
    double f = g->total > 0 ? (double)g->step / g->total : 0;
    g->stage = r->stage;
    g->part = r->part;
    g->fraction = r->total > 0 ? (r->done + f * r->cost) / r->total : 0;
    return dist_any(r->fn(r->ctx, g)); /* under MPI, every rank stops if one is asked to */
}

/* Starts a part of stage `stage` costing `cost` forward passes; nonzero: stop. */
static int relay_part(relay *r, const char *stage, const char *part, double cost) {
    r->done += r->cost;
    r->stage = stage;
    r->part = part;
    r->cost = cost;
    gplq_progress g = {.step = 0, .total = 1};
    return relay_send(r, &g);
}

static int relay_tick(void *vctx, int64_t done, int64_t total) {
    gplq_progress g = {.step = done, .total = total};
    return relay_send(vctx, &g);
}

/* Stage 1's feature passes: the caller hears of them (and may stop the run) as step 0 of the
 * part, whose steps are the training's; the part's cost already counts these passes. */
static int relay_hold(void *vctx, int64_t done, int64_t total) {
    (void)done;
    (void)total;
    return relay_tick(vctx, 0, 1);
}

/* An accuracy just measured (metric: the report's key); nonzero: stop. */
static int relay_metric(relay *r, const char *metric, double top1) {
    gplq_progress g = {.step = 1, .total = 1, .metric = metric, .value = top1};
    return relay_send(r, &g);
}

/* Stage 1's trainer progress, as the pipeline's. */
static int on_stage1(void *vctx, const train_progress *p) {
    if (p->evaluated) return 0;
    gplq_progress g = {.step = p->step, .total = p->total, .ce = p->terms[0], .pca = p->terms[1],
                       .images_per_s = p->images_per_s, .eta_s = p->eta_s};
    return relay_send(vctx, &g);
}

/* QwT's terms rounded to FP16, before the model is measured: the official QwT code runs them in
 * half precision, model.q.safetensors then stores them in half the bytes without loss (about 7
 * of a W4A4 DeiT-S's 18.9 MB are these twelve 384 x 384 matrices in FP32), and the accuracy
 * reported is the stored model's. Measured on the demo model: no change in top-1 (README). */
static void qwt_to_half(stage2_result *s2, const model_config *mc) {
    for (int l = 0; l < s2->depth; l++) {
        if (!s2->qwt_w[l]) continue;
        int T, C;
        model_block_shape(mc, l, &T, &C);
        for (size_t i = 0; i < (size_t)C * C; i++) s2->qwt_w[l][i] = half_round(s2->qwt_w[l][i]);
        for (int i = 0; i < C; i++) s2->qwt_b[l][i] = half_round(s2->qwt_b[l][i]);
    }
}

/* Measures top-1 of m on test as part `metric` of stage "evaluate"; 1 if stopped. */
static int evaluate(relay *r, model *m, const ds_set *test, const gplq_config *c,
                    const char *metric, double *top1, char *err, size_t errlen) {
    if (relay_part(r, "evaluate", metric, test->n)) return 1;
    int rc = train_eval_top1_dist(m, test, c->eval_batch, top1, relay_tick, r, err, errlen);
    if (rc) return rc;
    return relay_metric(r, metric, *top1);
}

int gplq_calibrate(model *m, actq_set *aq, const ds_set *train, int n, uint64_t seed,
                   char *err, size_t errlen) {
    n = n < train->n ? n : train->n;
    int *order = malloc(sizeof(int) * train->n);
    float *feat = malloc(sizeof(float) * (size_t)n * model_get_dims(m).feature_dim);
    int rc = -1;
    if (!order || !feat) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rng_t r;
    rng_seed(&r, seed ^ 0x5eed5eedULL); /* the same images stage 1 calibrates on */
    ds_shuffle(order, train->n, &r);
    model_set_hooks(m, &aq->hooks);
    if (actq_observe_begin(aq, seed, err, errlen) ||
        stage1_features(m, train, order, n, 256, feat, NULL, NULL, err, errlen) ||
        actq_observe_end(aq, err, errlen))
        goto out;
    rc = 0;
out:
    if (rc && aq->err[0]) snprintf(err, errlen, "%s", aq->err);
    free(order);
    free(feat);
    return rc;
}

/* A baseline: calibrate a copy of fp, then stage 2 with cfg; its top-1 into *top1.
 * 0, 1 if stopped, -1 on error. */
static int baseline(relay *r, const model *fp, const ds_set *train, const ds_set *test,
                    const gplq_config *c, int minmax, double *top1, char *err, size_t errlen) {
    model a, w;
    actq_set aq;
    stage2_result res;
    stage2_config s2 = c->s2;
    s2.minmax = minmax;
    s2.qwt = minmax ? 0 : c->s2.qwt;
    s2.wbits = c->wbits;
    s2.tick = relay_tick;
    s2.tick_ctx = r;
    const char *name = minmax ? "minmax_baseline" : "ptq_baseline";
    int calib = c->s1.calib_images < train->n ? c->s1.calib_images : train->n;
    int qwt = s2.calib_images < train->n ? s2.calib_images : train->n;
    if (relay_part(r, "calibrate", name, calib + 2.0 * qwt)) return 1;
    int rc = -1;
    if (model_clone(&a, fp, err, errlen)) return -1;
    if (actq_init(&aq, fp, c->abits, 8, err, errlen)) {
        model_free(&a);
        return -1;
    }
    aq.minmax = minmax || !c->percentile_init;
    if (gplq_calibrate(&a, &aq, train, c->s1.calib_images, c->s1.seed, err, errlen) ||
        model_clone(&w, &a, err, errlen))
        goto out;
    if ((rc = stage2_run(&w, &a, &aq, &s2, train, &res, err, errlen)) == 0) {
        rc = evaluate(r, &w, test, c, name, top1, err, errlen);
        stage2_result_free(&res);
    }
    model_free(&w);
out:
    actq_free(&aq);
    model_free(&a);
    return rc;
}

/* Appends a phase to the report (name static). */
static void phase_add(gplq_report *rep, const char *name, double seconds, long peak_kb) {
    if (rep->nphases < (int)(sizeof rep->phases / sizeof rep->phases[0])) {
        rep->phases[rep->nphases].name = name;
        rep->phases[rep->nphases].peak_kb = peak_kb;
        rep->phases[rep->nphases++].seconds = seconds;
    }
}

/* Ends a phase: the seconds since *t, which moves to now, and the resident peak since the
 * last phase ended, whose mark restarts. */
static void phase_end(gplq_report *rep, const char *name, double *t) {
    double now = clock_mono_s();
    phase_add(rep, name, now - *t, mem_peak_kb());
    mem_peak_restart();
    *t = now;
}

float gplq_resolve_lr(const gplq_config *c, const model *m) {
    if (!opt_is_auto(c->s1.lr)) return c->s1.lr;
    return model_num_params(m) < 10000000 ? 1e-4f : 5e-6f;
}

int gplq_run(const model *fp, const ds_set *train, const ds_set *test, const gplq_config *c,
             gplq_progress_fn progress, void *ctx, gplq_report *rep, model *out,
             actq_set *aq_out, stage2_result *s2_out, char *err, size_t errlen) {
    memset(rep, 0, sizeof *rep);
    rep->fp32 = rep->stage1 = rep->stage2_noqwt = rep->gplq = -1;
    rep->ptq_baseline = rep->minmax_baseline = -1;
    rep->depth = model_get_dims(fp).blocks;
    if (rep->depth > 64) {
        snprintf(err, errlen, "models deeper than 64 blocks are not supported");
        return -1;
    }
    double t0 = clock_mono_s();
    rep->peaks = mem_peak_restart() == 0; /* each phase's peak from here (phase_end) */
    relay r = {.fn = progress, .ctx = ctx};
    {   /* the run's cost in forward passes, for the fraction done (see relay) */
        double calib = c->s1.calib_images < train->n ? c->s1.calib_images : train->n;
        double qwt = c->s2.calib_images < train->n ? c->s2.calib_images : train->n;
        double pca = c->s1.pca_samples < train->n ? c->s1.pca_samples : train->n;
        r.total = 4.0 * test->n + calib + pca + 4.0 * c->s1.epochs * train->n + 2 * qwt;
        if (c->baselines) r.total += 2 * (calib + 2 * qwt + test->n);
        r.total += c->after_passes;
        rep->passes = r.total;
        rep->after_passes = c->after_passes;
    }
    model teacher, student, q;
    actq_set aq;
    stage1_result s1;
    stage2_result s2;
    int rc = -1;
    memset(&q, 0, sizeof q);
    memset(&s2, 0, sizeof s2);
    stage2_config s2c = c->s2;
    stage1_config s1c = c->s1;
    s1c.lr = gplq_resolve_lr(c, fp);
    s1c.tick = relay_hold;
    s1c.tick_ctx = &r;
    rep->lr = s1c.lr;
    s2c.wbits = c->wbits;
    if (model_clone(&teacher, fp, err, errlen)) return -1;
    if (model_clone(&student, fp, err, errlen)) {
        model_free(&teacher);
        return -1;
    }
    /* every product of the run in the precision asked for; the caller's is back at the end */
    enum matmul_precision caller_precision =
        matmul_set_precision(c->bf16 ? MATMUL_BF16 : MATMUL_FP32);
    rep->bf16 = c->bf16;
    if (actq_init(&aq, fp, c->abits, 8, err, errlen)) goto out_models;
    aq.minmax = !c->percentile_init;

    /* each step returns 0, 1 if the callback stopped the run, -1 on error */
    double tp = clock_mono_s();
    if ((rc = evaluate(&r, &teacher, test, c, "fp32", &rep->fp32, err, errlen))) goto out_aq;
    phase_end(rep, "eval_fp32", &tp);
    if (c->baselines) {
        if ((rc = baseline(&r, fp, train, test, c, 1, &rep->minmax_baseline, err, errlen)))
            goto out_aq;
        phase_end(rep, "minmax_baseline", &tp);
        if ((rc = baseline(&r, fp, train, test, c, 0, &rep->ptq_baseline, err, errlen)))
            goto out_aq;
        phase_end(rep, "ptq_baseline", &tp);
    }
    {
        double pca = c->s1.pca_samples < train->n ? c->s1.pca_samples : train->n;
        double calib = c->s1.calib_images < train->n ? c->s1.calib_images : train->n;
        if ((rc = relay_part(&r, "stage1", "stage1", calib + pca + 4.0 * c->s1.epochs * train->n)))
            goto out_aq;
    }
    if ((rc = stage1_run(&student, &teacher, &aq, &s1c, train, on_stage1, &r, &s1, err, errlen)))
        goto out_aq;
    rep->pca_k = s1.pca.k;
    rep->pca_explained = s1.pca.explained;
    rep->seconds_stage1 = s1.seconds;
    phase_add(rep, "stage1_prep", s1.seconds_prep, s1.peak_kb_prep);
    tp += s1.seconds_prep; /* the rest of stage 1 is its training */
    phase_end(rep, "stage1_train", &tp);
    stage1_result_free(&s1);
    if ((rc = evaluate(&r, &student, test, c, "stage1", &rep->stage1, err, errlen))) goto out_aq;
    phase_end(rep, "eval_stage1", &tp);

    s2c.tick = relay_tick;
    s2c.tick_ctx = &r;
    if ((rc = relay_part(&r, "stage2", "stage2", 2.0 * (c->s2.calib_images < train->n
                                                        ? c->s2.calib_images : train->n))))
        goto out_aq;
    if ((rc = model_clone(&q, &student, err, errlen))) goto out_aq;
    if ((rc = stage2_run(&q, &student, &aq, &s2c, train, &s2, err, errlen))) goto out_aq;
    rep->seconds_stage2 = s2.seconds;
    {
        model_config mc = model_get_config(&q);
        qwt_to_half(&s2, &mc);
    }
    for (int l = 0; l < rep->depth; l++) {
        rep->r2[l] = s2.r2[l];
        rep->mse_before[l] = s2.mse_before[l];
        rep->mse_after[l] = s2.mse_after[l];
    }
    phase_end(rep, "stage2", &tp);
    model_set_qwt(&q, NULL, NULL); /* the same weights, without the compensation */
    if ((rc = evaluate(&r, &q, test, c, "stage2_noqwt", &rep->stage2_noqwt, err, errlen))) goto out_s2;
    phase_end(rep, "eval_stage2_noqwt", &tp);
    model_set_qwt(&q, (const float *const *)s2.qwt_w, (const float *const *)s2.qwt_b);
    if ((rc = evaluate(&r, &q, test, c, "gplq", &rep->gplq, err, errlen))) goto out_s2;
    phase_end(rep, "eval_gplq", &tp);
    rep->seconds_total = clock_mono_s() - t0;
    rc = 0;
    if (out && aq_out && s2_out) {
        *out = q;
        *aq_out = aq;
        *s2_out = s2;
        aq_out->hooks.ctx = aq_out; /* the hooks' ctx must follow the moved set */
        model_set_hooks(out, &aq_out->hooks);
        memset(&q, 0, sizeof q);
        memset(&aq, 0, sizeof aq);
        memset(&s2, 0, sizeof s2);
    }
out_s2:
    stage2_result_free(&s2);
out_aq:
    model_free(&q);
    actq_free(&aq);
out_models:
    matmul_set_precision(caller_precision);
    model_free(&teacher);
    model_free(&student);
    return rc;
}
