/*
 * pipeline.c: see pipeline.h.
 */
#include "gplq/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train/trainer.h"

void gplq_defaults(gplq_config *c) {
    memset(c, 0, sizeof *c);
    c->wbits = 4;
    c->abits = 4;
    stage1_defaults(&c->s1);
    stage2_defaults(&c->s2);
    c->baselines = 1;
    c->eval_batch = 256;
}

void gplq_config_from_spec(gplq_config *c, const jobspec *js) {
    gplq_defaults(c);
    c->wbits = js->wbits;
    c->abits = js->abits;
    c->baselines = js->baselines;
    stage1_config *s1 = &c->s1;
    s1->epochs = js->epochs;
    s1->batch = js->batch_size;
    s1->lr = js->lr;
    s1->weight_decay = js->weight_decay;
    s1->alpha = js->alpha;
    s1->label_smoothing = js->label_smoothing;
    s1->pca_samples = js->pca_samples;
    s1->pca_var = js->pca_var;
    s1->calib_images = js->calib_images;
    s1->aug = (ds_augment){.pad = js->pad, .hflip = js->hflip};
    s1->seed = (uint64_t)js->seed;
    s1->ckpt_every = js->ckpt_every;
    s1->ckpt_path = NULL;
    c->s2.calib_images = js->qwt_images;
    c->s2.qwt = js->qwt;
    c->s2.lambda = js->lambda;
    c->s2.seed = (uint64_t)js->seed;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    gplq_progress_fn fn;
    void *ctx;
} relay;

/* Stage 1's trainer progress, as the pipeline's. */
static int on_stage1(void *vctx, const train_progress *p) {
    relay *r = vctx;
    if (!r->fn || p->evaluated) return 0;
    gplq_progress g = {.stage = "stage1", .step = p->step, .total = p->total, .ce = p->terms[0],
                       .pca = p->terms[1], .images_per_s = p->images_per_s, .eta_s = p->eta_s};
    return r->fn(r->ctx, &g);
}

static void announce(relay *r, const char *stage) {
    if (!r->fn) return;
    gplq_progress g = {.stage = stage, .step = 0, .total = 1};
    r->fn(r->ctx, &g);
}

int gplq_calibrate(vit_model *m, actq_set *aq, const ds_set *train, int n, uint64_t seed,
                   char *err, size_t errlen) {
    n = n < train->n ? n : train->n;
    int *order = malloc(sizeof(int) * train->n);
    float *feat = malloc(sizeof(float) * (size_t)n * m->cfg.dim);
    int rc = -1;
    if (!order || !feat) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rng_t r;
    rng_seed(&r, seed ^ 0x5eed5eedULL); /* the same images stage 1 calibrates on */
    ds_shuffle(order, train->n, &r);
    vit_set_hooks(m, &aq->hooks);
    if (actq_observe_begin(aq, seed, err, errlen) ||
        stage1_features(m, train, order, n, 256, feat, err, errlen) ||
        actq_observe_end(aq, err, errlen))
        goto out;
    rc = 0;
out:
    if (rc && aq->err[0]) snprintf(err, errlen, "%s", aq->err);
    free(order);
    free(feat);
    return rc;
}

/* A baseline: calibrate a copy of fp, then stage 2 with cfg; its top-1 into *top1. */
static int baseline(const vit_model *fp, const ds_set *train, const ds_set *test,
                    const gplq_config *c, int minmax, double *top1, char *err, size_t errlen) {
    vit_model a, w;
    actq_set aq;
    stage2_result res;
    stage2_config s2 = c->s2;
    s2.minmax = minmax;
    s2.qwt = minmax ? 0 : c->s2.qwt;
    int rc = -1;
    if (vit_clone(&a, fp, err, errlen)) return -1;
    if (actq_init(&aq, &fp->cfg, c->abits, 8, err, errlen)) {
        vit_free(&a);
        return -1;
    }
    aq.minmax = minmax;
    if (gplq_calibrate(&a, &aq, train, c->s1.calib_images, c->s1.seed, err, errlen) ||
        vit_clone(&w, &a, err, errlen))
        goto out;
    if (stage2_run(&w, &a, &aq, &s2, train, &res, err, errlen) == 0) {
        rc = eval_top1(&w, test, c->eval_batch, top1, err, errlen);
        stage2_result_free(&res);
    }
    vit_free(&w);
out:
    actq_free(&aq);
    vit_free(&a);
    return rc;
}

int gplq_run(const vit_model *fp, const ds_set *train, const ds_set *test, const gplq_config *c,
             gplq_progress_fn progress, void *ctx, gplq_report *rep, vit_model *out,
             actq_set *aq_out, stage2_result *s2_out, char *err, size_t errlen) {
    memset(rep, 0, sizeof *rep);
    rep->fp32 = rep->stage1 = rep->stage2_noqwt = rep->gplq = -1;
    rep->ptq_baseline = rep->minmax_baseline = -1;
    rep->depth = fp->cfg.depth;
    if (fp->cfg.depth > 64) {
        snprintf(err, errlen, "models deeper than 64 blocks are not supported");
        return -1;
    }
    double t0 = now_s();
    relay r = {progress, ctx};
    vit_model teacher, student, q;
    actq_set aq;
    stage1_result s1;
    stage2_result s2;
    int rc = -1;
    memset(&q, 0, sizeof q);
    stage2_config s2c = c->s2;
    stage1_config s1c = c->s1;
    s2c.wbits = c->wbits;
    if (vit_clone(&teacher, fp, err, errlen)) return -1;
    if (vit_clone(&student, fp, err, errlen)) {
        vit_free(&teacher);
        return -1;
    }
    if (actq_init(&aq, &fp->cfg, c->abits, 8, err, errlen)) goto out_models;

    announce(&r, "evaluate");
    if (eval_top1(&teacher, test, c->eval_batch, &rep->fp32, err, errlen)) goto out_aq;
    if (c->baselines) {
        announce(&r, "calibrate");
        if (baseline(fp, train, test, c, 1, &rep->minmax_baseline, err, errlen) ||
            baseline(fp, train, test, c, 0, &rep->ptq_baseline, err, errlen))
            goto out_aq;
    }
    announce(&r, "stage1");
    int s = stage1_run(&student, &teacher, &aq, &s1c, train, on_stage1, &r, &s1, err, errlen);
    if (s) {
        rc = s;
        goto out_aq;
    }
    rep->pca_k = s1.pca.k;
    rep->pca_explained = s1.pca.explained;
    rep->seconds_stage1 = s1.seconds;
    stage1_result_free(&s1);
    announce(&r, "evaluate");
    if (eval_top1(&student, test, c->eval_batch, &rep->stage1, err, errlen)) goto out_aq;

    announce(&r, "stage2");
    if (vit_clone(&q, &student, err, errlen) ||
        stage2_run(&q, &student, &aq, &s2c, train, &s2, err, errlen))
        goto out_aq;
    rep->seconds_stage2 = s2.seconds;
    for (int l = 0; l < rep->depth; l++) {
        rep->r2[l] = s2.r2[l];
        rep->mse_before[l] = s2.mse_before[l];
        rep->mse_after[l] = s2.mse_after[l];
    }
    announce(&r, "evaluate");
    q.qwt_w = NULL; /* the same weights, without the compensation */
    if (eval_top1(&q, test, c->eval_batch, &rep->stage2_noqwt, err, errlen)) goto out_s2;
    q.qwt_w = (const float *const *)s2.qwt_w;
    if (eval_top1(&q, test, c->eval_batch, &rep->gplq, err, errlen)) goto out_s2;
    rep->seconds_total = now_s() - t0;
    rc = 0;
    if (out && aq_out && s2_out) {
        *out = q;
        *aq_out = aq;
        *s2_out = s2;
        aq_out->hooks.ctx = aq_out; /* the hooks' ctx must follow the moved set */
        vit_set_hooks(out, &aq_out->hooks);
        memset(&q, 0, sizeof q);
        memset(&aq, 0, sizeof aq);
        memset(&s2, 0, sizeof s2);
    }
out_s2:
    stage2_result_free(&s2);
out_aq:
    vit_free(&q);
    actq_free(&aq);
out_models:
    vit_free(&teacher);
    vit_free(&student);
    return rc;
}
