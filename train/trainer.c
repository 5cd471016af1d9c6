/*
 * trainer.c: the training loop, its checkpoints, and evaluation. See trainer.h.
 */
#include "train/trainer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/adamw.h"
#include "engine/ops.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "util/clock.h"

int train_eval_top1(model *m, const ds_set *d, int batch, double *top1, char *err,
                    size_t errlen) {
    return train_eval_top1_tick(m, d, batch, top1, NULL, NULL, err, errlen);
}

int train_eval_top1_tick(model *m, const ds_set *d, int batch, double *top1, train_tick_fn tick,
                   void *ctx, char *err, size_t errlen) {
    model_dims c = model_get_dims(m);
    if (d->channels != c.in_chans || d->height != c.img_size || d->width != c.img_size) {
        snprintf(err, errlen, "dataset images are %dx%dx%d, the model takes %dx%dx%d", d->channels,
                 d->height, d->width, c.in_chans, c.img_size, c.img_size);
        return -1;
    }
    size_t img = (size_t)c.in_chans * c.img_size * c.img_size;
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
        for (int b = 0; b < B; b++) idx[b] = i + b;
        ds_batch(d, idx, B, x, c.mean, c.std, NULL, NULL);
        if ((rc = model_forward_infer(m, x, B, err, errlen))) break;
        for (int b = 0; b < B; b++) {
            const float *l = model_logits(m) + (size_t)b * c.num_classes;
            int best = 0;
            for (int k = 1; k < c.num_classes; k++) best = l[k] > l[best] ? k : best;
            correct += best == d->labels[i + b];
        }
        if (tick && tick(ctx, i + B, d->n)) rc = 1;
    }
    free(x);
    free(idx);
    model_release_acts(m); /* sized for eval batches: training keeps its own */
    if (!rc) *top1 = d->n ? (double)correct / d->n : 0.0;
    return rc;
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
    } else if ((size_t)tm->numel != model_num_params(m) ||
               (size_t)tv->numel != model_num_params(m) ||
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
    model_dims c = model_get_dims(r->m);
    const ds_set *train = r->train;
    int B = r->B, K = r->K;
    if (B <= 0 || r->cfg->epochs <= 0 || train->n < B) {
        snprintf(err, errlen, "need batch > 0, epochs > 0 and at least one batch of data "
                 "(batch %d, epochs %d, %d images)", B, r->cfg->epochs, train->n);
        return -1;
    }
    if (train->channels != c.in_chans || train->height != c.img_size ||
        train->num_classes > K) {
        snprintf(err, errlen, "dataset (%d channels, %dx%d, %d classes) does not fit the model "
                 "(%d channels, %d px, %d classes)", train->channels, train->height, train->width,
                 train->num_classes, c.in_chans, c.img_size, K);
        return -1;
    }
    return 0;
}

/* The buffers, the optimizer states and the model's gradients; run_free frees what this
 * allocated, also after a failure here. */
static int run_alloc(train_run_state *r, char *err, size_t errlen) {
    model *m = r->m;
    model_dims c = model_get_dims(m);
    int B = r->B, K = r->K;
    size_t img = (size_t)c.in_chans * c.img_size * c.img_size, ne = r->ne;
    r->x = malloc(sizeof(float) * img * B);
    r->probs = malloc(sizeof(float) * B * K);
    r->dlogits = malloc(sizeof(float) * B * K);
    r->perm = malloc(sizeof(int) * r->train->n);
    r->labels = malloc(sizeof(int) * B);
    r->mask = malloc(model_num_params(m));
    r->dfeature = r->obj ? malloc(sizeof(float) * B * c.feature_dim) : NULL;
    if (ne) {
        r->s.extra = malloc(sizeof(float) * ne);
        r->s.extra_grad = malloc(sizeof(float) * ne);
    }
    if (!r->x || !r->probs || !r->dlogits || !r->perm || !r->labels || !r->mask ||
        (r->obj && !r->dfeature) ||
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
    free(r->s.extra); free(r->s.extra_grad);
    adamw_free(&r->s.opt);
    adamw_free(&r->s.opt_extra);
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
        load_state(cfg->ckpt_path, m, &r->s, cfg, err, errlen))
        return -1;
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
    model_dims c = model_get_dims(m);
    const train_config *cfg = r->cfg;
    const train_objective *obj = r->obj;
    int B = r->B, K = r->K;
    ds_batch(r->train, idx, B, r->x, c.mean, c.std, &cfg->aug, &r->s.aug_rng);
    for (int b = 0; b < B; b++) r->labels[b] = r->train->labels[idx[b]];
    if (model_forward(m, r->x, B, err, errlen)) return -1;
    memset(r->dlogits, 0, sizeof(float) * B * K);
    float loss;
    *use_dfeature = 0;
    if (obj) {
        memset(r->dfeature, 0, sizeof(float) * B * c.feature_dim);
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
static int run_backward_update(train_run_state *r, int use_dfeature, float *lr_out, char *err,
                               size_t errlen) {
    model *m = r->m;
    const train_config *cfg = r->cfg;
    const train_objective *obj = r->obj;
    train_state *s = &r->s;
    model_zero_grad(m);
    if (r->ne) obj->extra_zero_grad(obj->ctx);
    if (model_backward(m, r->dlogits, use_dfeature ? r->dfeature : NULL, NULL, err, errlen))
        return -1;
    if (cfg->clip_grad > 0) adamw_clip_grad_norm(model_grads(m), model_num_params(m), cfg->clip_grad);
    float lr = adamw_lr_schedule(s->step, r->total, r->warmup, cfg->lr, cfg->min_lr);
    adamw_step(&s->opt, model_params(m), model_grads(m), r->mask, &r->h, lr);
    if (r->ne) {
        adamw_hparams he = r->h;
        he.weight_decay = 0;
        obj->extra_gather(obj->ctx, s->extra_grad, 1);
        adamw_step(&s->opt_extra, s->extra, s->extra_grad, NULL, &he, lr);
        obj->extra_scatter(obj->ctx, s->extra);
        obj->extra_gather(obj->ctx, s->extra, 0); /* scatter may have clamped */
    }
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
        if (train_eval_top1(r->m, r->test, 256, &top1, err, errlen)) return -1;
        r->t0 += clock_mono_s() - te; /* evaluation time is not training speed */
        r->p.test_top1 = (float)top1;
        r->p.evaluated = 1;
        if (r->progress && r->progress(r->ctx, &r->p)) return 1;
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
                run_backward_update(&r, use_dfeature, &lr, err, errlen))
                goto out;
            r.s.step++;
            r.epoch_loss += loss;
            r.epoch_steps++;
            if (run_report_step(&r, epoch, loss, lr)) stopped = 1;
            int epoch_end = pos + 1 == r.per_epoch;
            if (cfg->ckpt_path && (stopped || epoch_end ||
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
