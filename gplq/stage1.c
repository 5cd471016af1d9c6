/*
 * stage1.c: see stage1.h.
 */
#include "gplq/stage1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "train/dist.h"
#include "util/clock.h"
#include "util/mem.h"

void stage1_result_free(stage1_result *r) { pca_free(&r->pca); }

int stage1_features(model *m, const ds_set *d, const int *order, int n, int batch, float *out,
                    train_tick_fn tick, void *tick_ctx,
                    char *err, size_t errlen) {
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size;
    batch = model_infer_batch(m, MODEL_INFER_ROWS, batch); /* large images: fewer at a time */
    float *x = malloc(sizeof(float) * img * batch);
    int *idx = malloc(sizeof(int) * batch);
    int rc = 0;
    if (!x || !idx) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (int i = 0; i < n && !rc; i += batch) {
        int B = n - i < batch ? n - i : batch;
        for (int b = 0; b < B; b++) idx[b] = order ? order[i + b] : i + b;
        ds_batch(d, idx, B, x, c->mean, c->std, NULL, NULL);
        if ((rc = model_forward_infer(m, x, B, err, errlen))) break;
        for (int b = 0; b < B; b++)
            memcpy(out + (size_t)(i + b) * c->feature_dim, model_feature(m, b), sizeof(float) * c->feature_dim);
        if (tick && tick(tick_ctx, i + B, n)) rc = 1;
    }
    free(x);
    free(idx);
    model_release_acts(m); /* sized for these chunks, not for the training batch */
    return rc;
}

/* ---- data-parallel runs (train/dist.h): with one process, each is what it replaces ---- */

/* stage1_features of the first n images of order (256 a batch, or model_infer_batch's fewer)
 * by every rank together: each
 * computes its share of every batch, and a sum over the ranks puts every row in place on every
 * rank (the others' rows are zeros, and x + 0 is x). */
static int features_shared(model *m, const ds_set *d, const int *order, int n, float *out,
                           train_tick_fn tick, void *tick_ctx, char *err, size_t errlen) {
    if (dist_size() == 1)
        return stage1_features(m, d, order, n, 256, out, tick, tick_ctx, err, errlen);
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size;
    int G = model_infer_batch(m, MODEL_INFER_ROWS, 256); /* the batch all ranks share */
    float *x = malloc(sizeof(float) * img * G);
    int *idx = malloc(sizeof(int) * G);
    int rc = 0;
    if (!x || !idx) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    if (!rc) memset(out, 0, sizeof(float) * (size_t)n * c->feature_dim);
    for (int i = 0; i < n && !rc; i += G) {
        int B = n - i < G ? n - i : G, lo, nb;
        dist_shard(B, &lo, &nb);
        for (int b = 0; b < nb; b++) idx[b] = order[i + lo + b];
        if (nb > 0) ds_batch(d, idx, nb, x, c->mean, c->std, NULL, NULL);
        if (nb > 0 && (rc = model_forward_infer(m, x, nb, err, errlen))) break;
        for (int b = 0; b < nb; b++)
            memcpy(out + (size_t)(i + lo + b) * c->feature_dim, model_feature(m, b), sizeof(float) * c->feature_dim);
        if (tick && dist_any(tick(tick_ctx, i + B, n))) rc = 1;
    }
    if (!rc && dist_allreduce_sum(out, (size_t)n * c->feature_dim, err, errlen)) rc = -1;
    free(x);
    free(idx);
    model_release_acts(m);
    return rc;
}

/* Rank 0's PCA basis to every rank (the others' p is zeroed): fitted once, so that every
 * replica mimics in the same subspace even where LAPACK would round differently. */
static int pca_share(pca_basis *p, int dim, char *err, size_t errlen) {
    struct { int k; double explained; } h = {p->k, p->explained};
    if (dist_bcast(&h, sizeof h, err, errlen)) return -1;
    if (!dist_is_root()) {
        p->dim = dim;
        p->k = h.k;
        p->explained = h.explained;
        p->mean = malloc(sizeof(float) * dim);
        p->basis = malloc(sizeof(float) * (size_t)dim * h.k);
        p->eigvals = malloc(sizeof(float) * dim);
        if (!p->mean || !p->basis || !p->eigvals) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return dist_bcast(p->mean, sizeof(float) * dim, err, errlen) ||
           dist_bcast(p->basis, sizeof(float) * (size_t)dim * h.k, err, errlen) ||
           dist_bcast(p->eigvals, sizeof(float) * dim, err, errlen) ? -1 : 0;
}

/* Rank 0's initial quantizer steps to every rank (each observed the same images; this makes
 * the replicas' steps equal to the bit). */
static int steps_share(actq_set *aq, char *err, size_t errlen) {
    size_t n = actq_num_steps(aq);
    float *buf = malloc(sizeof(float) * (n ? n : 1));
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    actq_gather(aq, buf, 0);
    int rc = dist_bcast(buf, sizeof(float) * n, err, errlen);
    if (!rc) actq_scatter(aq, buf);
    free(buf);
    return rc;
}

/* Token rows per teacher forward: the teacher runs on a step's batch in even chunks of at most
 * this many rows (whole images), so its forward-only buffers are a fraction of a batch's (they
 * sit beside the student's training activations for the whole run). 4096: the demo's batch of
 * 128 in two chunks, DeiT-S's 16 in one, Swin-T one image at a time (3136 tokens in its first
 * stage; 300 MB less than the whole batch); GEMMs of that many rows run at full rate. */
#define TEACHER_ROWS 4096

/* The objective: CE on the student's logits plus alpha times the PCA mimicking term. */
typedef struct {
    model *teacher;
    int chunk;          /* most images per teacher forward (TEACHER_ROWS) */
    int C, K;           /* feature width, classes */
    size_t img;         /* floats per image */
    actq_set *aq;
    const pca_basis *pca;
    float alpha, smoothing;
    float *fs, *ft, *probs; /* (B, C), (B, C), (B, K) */
} objective_ctx;

static int objective_loss(void *vctx, model *m, const float *x, const int *labels, int B,
                          float *dlogits, float *dfeature, int *use_dfeature, float *loss,
                          float *terms, char *err, size_t errlen) {
    objective_ctx *o = vctx;
    int C = o->C, K = o->K;
    float ce = crossentropy_forward_backward(o->probs, dlogits, model_logits(m), labels, B, K,
                                             o->smoothing, 1.0f);
    for (int b = 0; b < B; b++) memcpy(o->fs + (size_t)b * C, model_feature(m, b), sizeof(float) * C);
    /* the teacher's forward overwrites only the teacher's activations: the student's stay
     * intact for its backward pass */
    size_t img = o->img;
    int nchunks = (B + o->chunk - 1) / o->chunk, chunk = (B + nchunks - 1) / nchunks; /* even */
    for (int i = 0; i < B; i += chunk) {
        int n = B - i < chunk ? B - i : chunk;
        if (model_forward_infer(o->teacher, x + i * img, n, err, errlen)) return -1; /* frozen */
        for (int b = 0; b < n; b++)
            memcpy(o->ft + (size_t)(i + b) * C, model_feature(o->teacher, b), sizeof(float) * C);
    }
    float pca = pca_loss_forward_backward(o->pca, o->fs, o->ft, B, o->alpha, dfeature);
    *use_dfeature = 1;
    *loss = ce + pca;
    terms[0] = ce;
    terms[1] = o->alpha > 0 ? pca / o->alpha : 0;
    return 0;
}

/* The quantizer steps are the objective's extra trainable parameters. */
static void steps_gather(void *ctx, float *flat, int grads) {
    actq_gather(((objective_ctx *)ctx)->aq, flat, grads);
}
static void steps_scatter(void *ctx, const float *flat) {
    actq_scatter(((objective_ctx *)ctx)->aq, flat);
}
static void steps_zero(void *ctx) { actq_zero_grad(((objective_ctx *)ctx)->aq); }

int stage1_run(model *student, model *teacher, actq_set *aq, const stage1_config *c,
               const ds_set *train, train_progress_fn progress, void *ctx, stage1_result *res,
               char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    double t0 = clock_mono_s();
    model_dims vc_dims = model_get_dims(teacher), *vc = &vc_dims;
    int C = vc->feature_dim, n = train->n;
    int npca = c->pca_samples > 0 && c->pca_samples < n ? c->pca_samples : n;
    int ncal = c->calib_images > 0 && c->calib_images < n ? c->calib_images : n;
    int *order = malloc(sizeof(int) * n);
    float *feats = malloc(sizeof(float) * (size_t)npca * C);
    objective_ctx o = {.teacher = teacher, .aq = aq, .pca = &res->pca, .alpha = c->alpha,
                       .smoothing = c->label_smoothing};
    o.chunk = model_infer_batch(teacher, TEACHER_ROWS, c->batch);
    o.C = C;
    o.K = vc->num_classes;
    o.img = (size_t)vc->in_chans * vc->img_size * vc->img_size;
    o.fs = malloc(sizeof(float) * (size_t)c->batch * C);
    o.ft = malloc(sizeof(float) * (size_t)c->batch * C);
    o.probs = malloc(sizeof(float) * (size_t)c->batch * vc->num_classes);
    int rc = -1;
    if (!order || !feats || !o.fs || !o.ft || !o.probs) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* one seeded order of the training set picks both the PCA and the calibration images */
    rng_t r;
    rng_seed(&r, c->seed ^ 0x5eed5eedULL);
    ds_shuffle(order, n, &r);
    model_set_hooks(teacher, NULL);
    int f = features_shared(teacher, train, order, npca, feats, c->tick, c->tick_ctx, err, errlen);
    if (f) {
        rc = f; /* 1: stopped (nothing to checkpoint yet), -1: error */
        goto out;
    }
    if (dist_is_root() &&
        pca_fit(&res->pca, feats, npca, C, c->pca_var, c->pca_multiple, 0, err, errlen))
        goto out;
    if (dist_size() > 1 && pca_share(&res->pca, C, err, errlen)) goto out;
    /* steps from calibration statistics, quantization off */
    model_set_hooks(student, &aq->hooks);
    /* the student keeps one block's norm and GELU outputs and recomputes the rest in its
     * backward (same gradients): with the quantized copies recomputed the same way, this is what
     * puts stage 1 below FP32 training's memory (the teacher and the quantizers are on top) */
    model_set_recompute(student, 1);
    if (actq_observe_begin(aq, c->seed, err, errlen)) goto out;
    float *scratch = realloc(feats, sizeof(float) * (size_t)(ncal > npca ? ncal : npca) * C);
    if (!scratch) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    feats = scratch;
    f = stage1_features(student, train, order, ncal, 256, feats, c->tick, c->tick_ctx, err, errlen);
    if (f) {
        if (f < 0 && aq->err[0]) snprintf(err, errlen, "%s", aq->err);
        rc = f;
        goto out;
    }
    if (actq_observe_end(aq, err, errlen)) goto out;
    if (dist_size() > 1 && steps_share(aq, err, errlen)) goto out;
    res->seconds_prep = clock_mono_s() - t0;
    res->peak_kb_prep = mem_peak_kb();
    mem_peak_restart();
    free(feats); /* the PCA's and the calibration's features: not needed past here */
    feats = NULL;

    train_objective obj = {.ctx = &o, .loss = objective_loss, .term_names = {"ce", "pca"},
                           .nextra = actq_num_steps(aq), .extra_gather = steps_gather,
                           .extra_scatter = steps_scatter, .extra_zero_grad = steps_zero,
                           .extra_batch_power = 0.5f}; /* LSQ: g = 1/sqrt(elements per step) */
    /* GPLQ trains at a constant learning rate, without warmup or clipping */
    train_config tc = {.epochs = c->epochs, .batch = c->batch, .lr = c->lr, .min_lr = c->lr,
                       .warmup_epochs = 0, .weight_decay = c->weight_decay,
                       .label_smoothing = c->label_smoothing, .clip_grad = 0, .aug = c->aug,
                       .seed = c->seed, .eval_every = 0, .ckpt_every = c->ckpt_every,
                       .ckpt_path = c->ckpt_path, .objective = &obj};
    rc = train_run(student, &tc, train, NULL, progress, ctx, err, errlen);
    if (rc < 0 && aq->err[0]) snprintf(err, errlen, "%s", aq->err);
    /* the training's buffers: what follows (evaluation, stage 2) runs forward-only passes
     * sized for themselves */
    model_release_acts(student);
    model_release_acts(teacher);
out:
    res->seconds = clock_mono_s() - t0;
    free(order);
    free(feats);
    free(o.fs);
    free(o.ft);
    free(o.probs);
    if (rc) stage1_result_free(res); /* stopped or failed: nobody reads it */
    return rc;
}
