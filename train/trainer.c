/*
 * trainer.c: the training loop, its checkpoints, and evaluation. See trainer.h.
 */
#include "train/trainer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/adamw.h"
#include "engine/ops.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "train/dist.h"
#include "util/clock.h"

int train_eval_top1(model *m, const ds_set *d, int batch, double *top1, char *err,
                    size_t errlen) {
    return train_eval_top1_tick(m, d, batch, top1, NULL, NULL, err, errlen);
}

/* split: this rank evaluates its share of every batch and the ranks add their counts. */
static int eval_top1(model *m, const ds_set *d, int batch, double *top1, train_tick_fn tick,
                     void *ctx, int split, char *err, size_t errlen) {
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    if (d->channels != c->in_chans || d->height != c->img_size || d->width != c->img_size) {
        snprintf(err, errlen, "dataset images are %dx%dx%d, the model takes %dx%dx%d", d->channels,
                 d->height, d->width, c->in_chans, c->img_size, c->img_size);
        return -1;
    }
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size;
    batch = model_infer_batch(m, MODEL_INFER_ROWS, batch); /* large images: fewer at a time */
    float *x = malloc(sizeof(float) * img * batch);
    int *idx = malloc(sizeof(int) * batch);
    if (!x || !idx) {
        free(x); free(idx);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int64_t correct = 0;
    int rc = 0;
    for (int i = 0; i < d->n && !rc; i += batch) {
        int B = d->n - i < batch ? d->n - i : batch;
        int lo = 0, nb = B;
        if (split) dist_shard(B, &lo, &nb); /* this rank's images of the batch */
        for (int b = 0; b < nb; b++) idx[b] = i + lo + b;
        if (nb > 0) ds_batch(d, idx, nb, x, c->mean, c->std, NULL, NULL);
        if (nb > 0 && (rc = model_forward_infer(m, x, nb, err, errlen))) break;
        for (int b = 0; b < nb; b++) {
            const float *l = model_logits(m) + (size_t)b * c->num_classes;
            int best = 0;
            for (int k = 1; k < c->num_classes; k++) best = l[k] > l[best] ? k : best;
            correct += best == d->labels[i + lo + b];
        }
        if (tick && (split ? dist_any(tick(ctx, i + B, d->n)) : tick(ctx, i + B, d->n))) rc = 1;
    }
    if (!rc && split && dist_allreduce_sum_i64(&correct, 1, err, errlen)) rc = -1;
    free(x);
    free(idx);
    model_release_acts(m); /* sized for eval batches: training keeps its own */
    if (!rc) *top1 = d->n ? (double)correct / d->n : 0.0;
    return rc;
}

int train_eval_top1_tick(model *m, const ds_set *d, int batch, double *top1, train_tick_fn tick,
                   void *ctx, char *err, size_t errlen) {
    return eval_top1(m, d, batch, top1, tick, ctx, 0, err, errlen);
}

int train_eval_top1_dist(model *m, const ds_set *d, int batch, double *top1,
                         train_tick_fn tick, void *ctx, char *err, size_t errlen) {
    return eval_top1(m, d, batch, top1, tick, ctx, 1, err, errlen);
}

/* The training state beyond the weights. */
typedef struct {
    int64_t step;
    adamw_state opt;
    adamw_state opt_extra;  /* for the objective's extra parameters (n = 0 if none) */
    float *extra;           /* (nextra) their values, gathered for saving and updating */
    float *extra_grad;      /* (nextra) */
    rng_t aug_rng;
} train_state;

static int save_state(const char *path, const model *m, const train_state *s,
                      const train_config *cfg, char *err, size_t errlen) {
    st_writer *w = st_writer_new();
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char buf[160];
    int64_t n = (int64_t)model_num_params(m);
    int rc = ckpt_add_model(w, m, err, errlen);
    if (!rc) rc = st_writer_add(w, "optim.m", ST_F32, 1, &n, s->opt.m, err, errlen);
    if (!rc) rc = st_writer_add(w, "optim.v", ST_F32, 1, &n, s->opt.v, err, errlen);
    int64_t ne = (int64_t)s->opt_extra.n;
    if (!rc && ne) rc = st_writer_add(w, "extra", ST_F32, 1, &ne, s->extra, err, errlen);
    if (!rc && ne) rc = st_writer_add(w, "optim_extra.m", ST_F32, 1, &ne, s->opt_extra.m, err, errlen);
    if (!rc && ne) rc = st_writer_add(w, "optim_extra.v", ST_F32, 1, &ne, s->opt_extra.v, err, errlen);
    snprintf(buf, sizeof buf, "%" PRId64, s->step);
    if (!rc) rc = st_writer_meta(w, "train_step", buf);
    snprintf(buf, sizeof buf, "%" PRId64, s->opt.t);
    if (!rc) rc = st_writer_meta(w, "optim_t", buf);
    snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             s->aug_rng.s[0], s->aug_rng.s[1], s->aug_rng.s[2], s->aug_rng.s[3]);
    if (!rc) rc = st_writer_meta(w, "aug_rng", buf);
    snprintf(buf, sizeof buf, "%" PRIu64 " %d %d", cfg->seed, cfg->batch, cfg->epochs);
    if (!rc) rc = st_writer_meta(w, "train_seed_batch_epochs", buf);
    if (!rc) rc = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    return rc;
}

static int load_state(const char *path, model *m, train_state *s, const train_config *cfg,
                      char *err, size_t errlen) {
    st_file f;
    model saved;
    if (st_open(&f, path, err, errlen)) return -1;
    ckpt_hints hints = {.allow_extra = 1};
    int rc = -1;
    if (ckpt_load_file(&saved, &f, &hints, NULL, err, errlen)) goto out_file;
    const st_tensor *tm = st_find(&f, "optim.m"), *tv = st_find(&f, "optim.v");
    const st_tensor *te = st_find(&f, "extra"), *tem = st_find(&f, "optim_extra.m");
    const st_tensor *tev = st_find(&f, "optim_extra.v");
    size_t ne = s->opt_extra.n;
    int extra_ok = ne == 0 ? !te : (te && tem && tev && (size_t)te->numel == ne &&
                                    (size_t)tem->numel == ne && (size_t)tev->numel == ne &&
                                    te->dtype == ST_F32 && tem->dtype == ST_F32 &&
                                    tev->dtype == ST_F32);
    const char *step = st_meta(&f, "train_step"), *t = st_meta(&f, "optim_t");
    const char *rng = st_meta(&f, "aug_rng"), *sbe = st_meta(&f, "train_seed_batch_epochs");
    char want[96];
    snprintf(want, sizeof want, "%" PRIu64 " %d %d", cfg->seed, cfg->batch, cfg->epochs);
    if (!tm || !tv || !step || !t || !rng || !sbe || strlen(rng) != 64) {
        snprintf(err, errlen, "%s: not a gplq training state (no optimizer or position)", path);
    } else if (!model_same_config(&saved, m)) {
        snprintf(err, errlen, "%s: saved for a different model configuration", path);
    } else if (strcmp(sbe, want)) {
        snprintf(err, errlen, "%s: saved with seed/batch/epochs %s, this run has %s; resuming "
                 "would not be exact (remove the file to start over)", path, sbe, want);
    } else if ((size_t)tm->numel != model_num_params(m) || (size_t)tv->numel != model_num_params(m) ||
               tm->dtype != ST_F32 || tv->dtype != ST_F32 || !extra_ok) {
        snprintf(err, errlen, "%s: optimizer state does not match the model", path);
    } else {
        if (ne) {
            st_to_f32(te, s->extra);
            st_to_f32(tem, s->opt_extra.m);
            st_to_f32(tev, s->opt_extra.v);
        }
        memcpy(model_params(m), model_params(&saved), sizeof(float) * model_num_params(m));
        st_to_f32(tm, s->opt.m);
        st_to_f32(tv, s->opt.v);
        s->step = strtoll(step, NULL, 10);
        s->opt.t = s->opt_extra.t = strtoll(t, NULL, 10);
        for (int i = 0; i < 4; i++) {
            char part[17];
            memcpy(part, rng + 16 * i, 16);
            part[16] = 0;
            s->aug_rng.s[i] = strtoull(part, NULL, 16);
        }
        rc = 0;
    }
    model_free(&saved);
out_file:
    st_close(&f);
    return rc;
}

/* One train_run call: its inputs, sizes, buffers and running tallies, which its phases below
 * share. */
typedef struct {
    model *m;
    const train_config *cfg;
    const ds_set *train, *test;
    const train_objective *obj;       /* cfg->objective; NULL: label-smoothed cross-entropy */
    size_t ne;                        /* the objective's extra parameters (0: none) */
    int B, K;                         /* batch size, classes */
    int64_t per_epoch, total, warmup; /* in steps */
    train_state s;
    adamw_hparams h;
    float *x;                         /* (B, in_chans, img_size, img_size) the batch */
    float *probs;                     /* (B, K) */
    float *dlogits;                   /* (B, K) */
    float *dfeature;                  /* (B, dim) with an objective, else NULL */
    int *perm;                        /* (train->n) the epoch's order */
    int *labels;                      /* (B) */
    uint8_t *mask;                    /* (num_params) 1 where weight decay applies */
    float *fused;                     /* (num_params + ne + 1 + TRAIN_MAX_TERMS) the step's one
                                         allreduce with more than one rank (dist.h), else NULL */
    int nb;                           /* this rank's images of the step's batch */
    train_progress_fn progress;
    void *ctx;
    train_progress p;
    double t0;                        /* when training started, moved on by evaluation time */
    int64_t first;                    /* the step this call started at (a resumed run's > 0) */
    double epoch_loss;                /* sum of this epoch's losses so far */
    int epoch_steps;
} train_run_state;

/* The config must make at least one step, and the data must fit the model. */
static int run_check(const train_run_state *r, char *err, size_t errlen) {
    model_dims c_dims = model_get_dims(r->m), *c = &c_dims;
    const ds_set *train = r->train;
    int B = r->B, K = r->K;
    if (B < dist_size() || r->cfg->epochs <= 0 || train->n < B) {
        snprintf(err, errlen, "need batch > 0, epochs > 0 and at least one batch of data "
                 "(batch %d, epochs %d, %d images; and an image per rank: %d ranks)", B,
                 r->cfg->epochs, train->n, dist_size());
        return -1;
    }
    if (train->channels != c->in_chans || train->height != c->img_size ||
        train->num_classes > K) {
        snprintf(err, errlen, "dataset (%d channels, %dx%d, %d classes) does not fit the model "
                 "(%d channels, %d px, %d classes)", train->channels, train->height, train->width,
                 train->num_classes, c->in_chans, c->img_size, K);
        return -1;
    }
    return 0;
}

/* The buffers, the optimizer states and the model's gradients; run_free frees what this
 * allocated, also after a failure here. */
static int run_alloc(train_run_state *r, char *err, size_t errlen) {
    model *m = r->m;
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    int B = r->B, K = r->K;
    size_t img = (size_t)c->in_chans * c->img_size * c->img_size, ne = r->ne;
    r->x = malloc(sizeof(float) * img * B);
    r->probs = malloc(sizeof(float) * B * K);
    r->dlogits = malloc(sizeof(float) * B * K);
    r->perm = malloc(sizeof(int) * r->train->n);
    r->labels = malloc(sizeof(int) * B);
    r->mask = malloc(model_num_params(m));
    r->dfeature = r->obj ? malloc(sizeof(float) * B * c->feature_dim) : NULL;
    if (ne) {
        r->s.extra = malloc(sizeof(float) * ne);
        r->s.extra_grad = malloc(sizeof(float) * ne);
    }
    if (!r->x || !r->probs || !r->dlogits || !r->perm || !r->labels || !r->mask ||
        (r->obj && !r->dfeature) ||
        (dist_size() > 1 &&
         !(r->fused = malloc(sizeof(float) * (model_num_params(m) + ne + 1 + TRAIN_MAX_TERMS)))) ||
        (ne && (!r->s.extra || !r->s.extra_grad || adamw_init(&r->s.opt_extra, ne))) ||
        adamw_init(&r->s.opt, model_num_params(m)) || model_alloc_grads(m, err, errlen)) {
        if (!err[0]) snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void run_free(train_run_state *r) {
    free(r->x); free(r->probs); free(r->dlogits); free(r->perm); free(r->labels); free(r->mask);
    free(r->dfeature);
    free(r->fused);
    free(r->s.extra); free(r->s.extra_grad);
    adamw_free(&r->s.opt);
    adamw_free(&r->s.opt_extra);
}

/* With more than one rank: rank 0's state (read from the state file, or the start) to every
 * rank, so that the replicas start equal wherever the file is. */
static int run_share_state(train_run_state *r, char *err, size_t errlen) {
    train_state *s = &r->s;
    size_t np = model_num_params(r->m), ne = r->ne;
    int64_t pos[2] = {s->step, s->opt.t};
    if (dist_bcast(model_params(r->m), sizeof(float) * np, err, errlen) ||
        dist_bcast(s->opt.m, sizeof(float) * np, err, errlen) ||
        dist_bcast(s->opt.v, sizeof(float) * np, err, errlen) ||
        (ne && (dist_bcast(s->extra, sizeof(float) * ne, err, errlen) ||
                dist_bcast(s->opt_extra.m, sizeof(float) * ne, err, errlen) ||
                dist_bcast(s->opt_extra.v, sizeof(float) * ne, err, errlen))) ||
        dist_bcast(pos, sizeof pos, err, errlen) ||
        dist_bcast(&s->aug_rng, sizeof s->aug_rng, err, errlen))
        return -1;
    s->step = pos[0];
    s->opt.t = s->opt_extra.t = pos[1];
    return 0;
}

/* With more than one rank: the step's gradients (the weights', then the objective's extra
 * parameters'), its loss and loss parts, each rank's weighted by its share of the batch (see
 * train_objective.extra_batch_power) and summed over the ranks in one allreduce: the single
 * process's values for the whole batch, on every rank. */
static int run_reduce(train_run_state *r, float *loss, char *err, size_t errlen) {
    model *m = r->m;
    size_t np = model_num_params(m), ne = r->ne, n = np + ne + 1 + TRAIN_MAX_TERMS;
    float *f = r->fused;
    const float *g = model_grads(m);
    double share = (double)r->nb / r->B;
    float w = (float)share;
    float we = (float)pow(share, 1.0 + (ne ? r->obj->extra_batch_power : 0.0));
    #pragma omp parallel for
    for (size_t i = 0; i < np; i++) f[i] = w * g[i];
    if (ne) {
        r->obj->extra_gather(r->obj->ctx, r->s.extra_grad, 1);
        for (size_t j = 0; j < ne; j++) f[np + j] = we * r->s.extra_grad[j];
    }
    f[np + ne] = w * *loss;
    for (int t = 0; t < TRAIN_MAX_TERMS; t++) f[np + ne + 1 + t] = w * r->p.terms[t];
    if (dist_allreduce_sum(f, n, err, errlen)) return -1;
    memcpy(model_grads(m), f, sizeof(float) * np);
    if (ne) memcpy(r->s.extra_grad, f + np, sizeof(float) * ne);
    *loss = f[np + ne];
    for (int t = 0; t < TRAIN_MAX_TERMS; t++) r->p.terms[t] = f[np + ne + 1 + t];
    return 0;
}

/* The state at step 0 (decay mask, augmentation stream, the objective's extra values), or the
 * one the checkpoint file holds if there is one. */
static int run_start_or_resume(train_run_state *r, char *err, size_t errlen) {
    model *m = r->m;
    const train_config *cfg = r->cfg;
    const train_objective *obj = r->obj;
    if (r->ne) obj->extra_gather(obj->ctx, r->s.extra, 0);
    int ninfo;
        const param_info *info = model_param_info(m, &ninfo);
        for (int i = 0; i < ninfo; i++) memset(r->mask + info[i].offset, info[i].decay, info[i].numel);
    rng_seed(&r->s.aug_rng, cfg->seed ^ 0xa5a5a5a5a5a5a5a5ULL);
    struct stat st;
    if (cfg->ckpt_path && stat(cfg->ckpt_path, &st) == 0 &&
        dist_is_root() && load_state(cfg->ckpt_path, m, &r->s, cfg, err, errlen))
        return -1;
    if (r->fused && run_share_state(r, err, errlen)) return -1;
    if (r->ne) obj->extra_scatter(obj->ctx, r->s.extra); /* a resumed state brings its own values */
    return 0;
}

/* The epoch's order depends on (seed, epoch) only, so a resumed run sees the same one. */
static void shuffle_epoch(int *perm, int n, uint64_t seed, int epoch) {
    rng_t order;
    rng_seed(&order, seed * 1000003ULL + (uint64_t)epoch);
    ds_shuffle(perm, n, &order);
}

/* One step's batch (images idx), forward pass and loss, with the gradient on the logits (and
 * the feature) left in the buffers for the backward pass; a diverged loss is an error. */
static int run_forward_loss(train_run_state *r, const int *idx, float *loss_out,
                            int *use_dfeature, char *err, size_t errlen) {
    model *m = r->m;
    model_dims c_dims = model_get_dims(m), *c = &c_dims;
    const train_config *cfg = r->cfg;
    const train_objective *obj = r->obj;
    int B = r->B, K = r->K;
    int lo;
    dist_shard(r->B, &lo, &B); /* this rank's images of the global batch (alone: all of it) */
    r->nb = B;
    idx += lo;
    ds_augment_skip(&cfg->aug, &r->s.aug_rng, lo); /* the draws of the images before ours */
    ds_batch(r->train, idx, B, r->x, c->mean, c->std, &cfg->aug, &r->s.aug_rng);
    ds_augment_skip(&cfg->aug, &r->s.aug_rng, r->B - lo - B); /* and of those after */
    for (int b = 0; b < B; b++) r->labels[b] = r->train->labels[idx[b]];
    if (model_forward(m, r->x, B, err, errlen)) return -1;
    memset(r->dlogits, 0, sizeof(float) * B * K);
    float loss;
    *use_dfeature = 0;
    if (obj) {
        memset(r->dfeature, 0, sizeof(float) * B * c->feature_dim);
        if (obj->loss(obj->ctx, m, r->x, r->labels, B, r->dlogits, r->dfeature, use_dfeature,
                      &loss, r->p.terms, err, errlen))
            return -1;
    } else {
        loss = crossentropy_forward_backward(r->probs, r->dlogits, model_logits(m), r->labels, B, K,
                                             cfg->label_smoothing, 1.0f);
    }
    if (!(loss == loss) || loss > 1e6f) {
        snprintf(err, errlen, "training diverged at step %" PRId64 " (loss %g); lower "
                 "the learning rate", r->s.step, loss);
        return -1;
    }
    *loss_out = loss;
    return 0;
}

/* The step's backward pass, gradient clipping and AdamW updates of the weights and the
 * objective's extra parameters, at the schedule's learning rate (into *lr_out). */
static int run_backward_update(train_run_state *r, int use_dfeature, float *loss, float *lr_out,
                               char *err, size_t errlen) {
    model *m = r->m;
    const train_config *cfg = r->cfg;
    const train_objective *obj = r->obj;
    train_state *s = &r->s;
    model_zero_grad(m);
    if (r->ne) obj->extra_zero_grad(obj->ctx);
    if (model_backward(m, r->dlogits, use_dfeature ? r->dfeature : NULL, NULL, err, errlen))
        return -1;
    if (r->fused && run_reduce(r, loss, err, errlen)) return -1; /* clipping sees the sum */
    if (cfg->clip_grad > 0) adamw_clip_grad_norm(model_grads(m), model_num_params(m), cfg->clip_grad);
    float lr = adamw_lr_schedule(s->step, r->total, r->warmup, cfg->lr, cfg->min_lr);
    adamw_step(&s->opt, model_params(m), model_grads(m), r->mask, &r->h, lr);
    if (r->ne) {
        adamw_hparams he = r->h;
        he.weight_decay = 0;
        if (!r->fused) obj->extra_gather(obj->ctx, s->extra_grad, 1); /* else: reduced above */
        adamw_step(&s->opt_extra, s->extra, s->extra_grad, NULL, &he, lr);
        obj->extra_scatter(obj->ctx, s->extra);
        obj->extra_gather(obj->ctx, s->extra, 0); /* scatter may have clamped */
    }
    r->p.extra_grad = r->ne ? s->extra_grad : NULL;
    *lr_out = lr;
    return 0;
}

/* The progress report after a step of the given epoch. Returns 1 when the callback asks to
 * stop. */
static int run_report_step(train_run_state *r, int epoch, float loss, float lr) {
    train_progress *p = &r->p;
    double el = clock_mono_s() - r->t0;
    p->step = r->s.step;
    p->epoch = epoch;
    p->loss = loss;
    p->lr = lr;
    p->epoch_loss = (float)(r->epoch_loss / r->epoch_steps);
    p->images_per_s = (double)(r->s.step - r->first) * r->B / el;
    p->eta_s = (double)(r->total - r->s.step) * el / (double)(r->s.step - r->first);
    p->evaluated = 0;
    return r->progress && r->progress(r->ctx, p);
}

/* At the end of epoch: the running loss mean starts over, and the test set is evaluated when
 * due (its time left out of the training speed) and reported. Returns -1 on error, 1 when the
 * callback asks to stop, else 0. */
static int run_epoch_end(train_run_state *r, int epoch, char *err, size_t errlen) {
    const train_config *cfg = r->cfg;
    r->epoch_loss = 0;
    r->epoch_steps = 0;
    int last = r->s.step == r->total;
    if (r->test && (last || (cfg->eval_every > 0 && (epoch + 1) % cfg->eval_every == 0))) {
        double top1;
        double te = clock_mono_s();
        if (train_eval_top1_dist(r->m, r->test, 256, &top1, NULL, NULL, err, errlen)) return -1;
        r->t0 += clock_mono_s() - te; /* evaluation time is not training speed */
        r->p.test_top1 = (float)top1;
        r->p.evaluated = 1;
        if (r->progress && dist_any(r->progress(r->ctx, &r->p))) return 1;
    }
    return 0;
}

int train_run(model *m, const train_config *cfg, const ds_set *train, const ds_set *test,
              train_progress_fn progress, void *ctx, char *err, size_t errlen) {
    train_run_state r = {.m = m, .cfg = cfg, .train = train, .test = test,
                         .obj = cfg->objective, .B = cfg->batch, .K = model_get_dims(m).num_classes,
                         .progress = progress, .ctx = ctx};
    int B = r.B;
    err[0] = 0;
    if (run_check(&r, err, errlen)) return -1;
    r.per_epoch = train->n / B;
    r.total = r.per_epoch * cfg->epochs;
    r.warmup = (int64_t)(cfg->warmup_epochs * r.per_epoch);
    r.ne = r.obj && r.obj->extra_gather ? r.obj->nextra : 0;
    int rc = -1;
    if (run_alloc(&r, err, errlen) || run_start_or_resume(&r, err, errlen)) goto out;
    r.h = (adamw_hparams){.lr = cfg->lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .weight_decay = cfg->weight_decay};
    r.p = (train_progress){.total = r.total, .test_top1 = -1};
    r.t0 = clock_mono_s();
    r.first = r.s.step;
    int stopped = 0;
    while (r.s.step < r.total && !stopped) {
        int epoch = (int)(r.s.step / r.per_epoch);
        int64_t pos = r.s.step % r.per_epoch;
        shuffle_epoch(r.perm, train->n, cfg->seed, epoch);
        for (; pos < r.per_epoch && !stopped; pos++) {
            float loss, lr;
            int use_dfeature;
            if (run_forward_loss(&r, r.perm + pos * B, &loss, &use_dfeature, err, errlen) ||
                run_backward_update(&r, use_dfeature, &loss, &lr, err, errlen))
                goto out;
            r.s.step++;
            r.epoch_loss += loss;
            r.epoch_steps++;
            if (dist_any(run_report_step(&r, epoch, loss, lr))) stopped = 1; /* all ranks */
            int epoch_end = pos + 1 == r.per_epoch;
            if (cfg->ckpt_path && dist_is_root() && (stopped || epoch_end ||
                                   (cfg->ckpt_every > 0 && r.s.step % cfg->ckpt_every == 0)))
                if (save_state(cfg->ckpt_path, m, &r.s, cfg, err, errlen)) goto out;
            if (epoch_end) {
                int e = run_epoch_end(&r, epoch, err, errlen);
                if (e < 0) goto out;
                if (e) stopped = 1;
            }
        }
    }
    rc = stopped ? 1 : 0;
out:
    run_free(&r);
    return rc;
}
