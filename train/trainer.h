/*
 * trainer.h: supervised training of a model (engine/model.h) on a dataset (AdamW, warmup + cosine schedule,
 * label-smoothed cross-entropy, crop/flip augmentation), deterministic for a seed, with
 * checkpoints that resume bit-exactly; and top-1 evaluation.
 *
 * Determinism: the epoch's order is a permutation drawn from (seed, epoch) alone and the
 * augmentation draws from one stream whose state is saved in the checkpoint with the step, the
 * optimizer moments and the weights, so a resumed run takes exactly the steps an uninterrupted
 * one would have (same thread count, same BLAS kernel).
 */
#ifndef GPLQ_TRAINER_H
#define GPLQ_TRAINER_H

#include <stdint.h>

#include "engine/model.h"
#include "io/dataset.h"

/*
 * What training minimizes, when it is not plain label-smoothed cross-entropy (GPLQ's stage 1:
 * cross-entropy plus a feature-mimicking term, with quantizer steps trained beside the weights).
 */
#define TRAIN_MAX_TERMS 4
typedef struct {
    void *ctx;
    /* After the model's forward pass on images x (B, ...) with labels: the loss into *loss,
     * its parts into terms (up to TRAIN_MAX_TERMS, named by term_names), the gradient on the
     * logits into dlogits (B, K, zeroed by the caller) and, if the loss involves the feature,
     * into dfeature (B, C, zeroed) with *use_dfeature = 1. Returns 0 or -1 with a message. */
    int (*loss)(void *ctx, model *m, const float *x, const int *labels, int B,
                float *dlogits, float *dfeature, int *use_dfeature, float *loss,
                float *terms, char *err, size_t errlen);
    const char *term_names[TRAIN_MAX_TERMS]; /* NULL-terminated if fewer */
    /* Extra trainable parameters (NULL gather = none): nextra floats, updated by their own
     * AdamW state at the same learning rate, without weight decay. gather copies the values
     * (grads = 0) or their gradients (grads = 1) out, scatter copies values in (and may clamp
     * them), zero_grad clears the gradients before each backward pass. */
    size_t nextra;
    void (*extra_gather)(void *ctx, float *flat, int grads);
    void (*extra_scatter)(void *ctx, const float *flat);
    void (*extra_zero_grad)(void *ctx);
    /* Data-parallel runs (train/dist.h): how the extra gradients of a batch of b images scale
     * beyond the mean over the batch, as b^-extra_batch_power (LSQ's step gradient carries
     * 1/sqrt(elements per step): 0.5). A rank's shard of b of the B images is weighted by
     * (b/B)^(1 + power) in the sum so that the result is the single process's. 0: none. */
    float extra_batch_power;
} train_objective;

typedef struct {
    int epochs;
    int batch;
    float lr, min_lr;           /* peak and final learning rate of the cosine schedule */
    float warmup_epochs;        /* linear warmup, in epochs (fractions allowed) */
    float weight_decay;         /* AdamW, on matrices only */
    float label_smoothing;
    float clip_grad;            /* global L2 norm; 0 = off */
    ds_augment aug;
    uint64_t seed;
    int eval_every;             /* evaluate on the test set every this many epochs; 0 = only at the end */
    int ckpt_every;             /* steps between checkpoints (and one at each epoch end); 0 = epoch ends only */
    const char *ckpt_path;      /* training state file (weights + optimizer + position); NULL = none */
    const train_objective *objective; /* NULL: label-smoothed cross-entropy */
} train_config;

typedef struct {
    int64_t step, total;        /* steps done, of total */
    int epoch;                  /* 0-based epoch of the step */
    float loss, lr;             /* this step's, and a running mean over the epoch */
    float epoch_loss;
    double images_per_s, eta_s;
    float test_top1;            /* after an evaluation, else < 0 */
    int evaluated;              /* 1 on the call right after an evaluation */
    float terms[TRAIN_MAX_TERMS]; /* this step's loss parts (custom objectives) */
    const float *extra_grad;    /* (nextra) this step's gradient of the objective's extra
                                   parameters (over all ranks), or NULL; borrowed until the
                                   next step */
} train_progress;

/* Called after every step and after each evaluation; a non-zero return stops training (the
 * state is checkpointed first). Under MPI (train/dist.h) it is called on every rank, and
 * training stops on all of them at the same step when it returns non-zero on any. */
typedef int (*train_progress_fn)(void *ctx, const train_progress *p);

/* Trains m (initialized, weights set) on train. If cfg->ckpt_path names an existing state file,
 * resumes from it (its weights replace m's). test (optional) is evaluated as configured.
 * Returns 0 when all epochs are done, 1 when stopped by the callback, -1 on error.
 * Under MPI with N ranks (train/dist.h), every rank calls it with the same arguments: each
 * computes the gradient of its share of every global batch (same batches, order and
 * augmentation as one process), one allreduce sums them, and every replica takes the same
 * AdamW step. Rank 0 alone reads and writes the state file and sends what it read to the
 * others, so a state written by N ranks resumes on any number (it is the replicas' state). */
int train_run(model *m, const train_config *cfg, const ds_set *train, const ds_set *test,
              train_progress_fn progress, void *ctx, char *err, size_t errlen);

/* Top-1 accuracy of m on d (a fraction in [0, 1]), batch images at a time, with m's own
 * normalization and no augmentation. */
int train_eval_top1(model *m, const ds_set *d, int batch, double *top1, char *err,
                    size_t errlen);
/* A unit of long work done: done of total. Returns nonzero to ask the work to stop. */
typedef int (*train_tick_fn)(void *ctx, int64_t done, int64_t total);
/* train_eval_top1 with tick called after every batch; returns 1 (and no *top1) if tick
 * stopped it. */
int train_eval_top1_tick(model *m, const ds_set *d, int batch, double *top1, train_tick_fn tick,
                   void *ctx, char *err, size_t errlen);
/* train_eval_top1_tick called by every rank of an MPI job together: each evaluates its share of
 * every batch, the counts are summed, and the ranks stop together if tick asks any to. With one
 * process, train_eval_top1_tick. */
int train_eval_top1_dist(model *m, const ds_set *d, int batch, double *top1,
                         train_tick_fn tick, void *ctx, char *err, size_t errlen);

#endif
