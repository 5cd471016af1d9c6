/*
 * stage1.h: GPLQ's first stage, activation QAT (W32A4).
 *
 * The student (a copy of the FP32 model) gets fake quantizers on every activation GPLQ
 * quantizes, initialized from calibration statistics, and is trained for a short time with
 * all its weights and all quantizer steps learning (AdamW), on
 *   L = CE(student logits, labels) + alpha * (1/B) sum_i || (f_s_i - f_t_i) V_k ||^2
 * where f are penultimate features and V_k the teacher features' top principal components
 * (60% of the variance, a multiple of 32 components). The teacher is the frozen FP32 model.
 * The loop, its checkpoints and exact resume are the trainer's (train/trainer.h).
 */
#ifndef GPLQ_STAGE1_H
#define GPLQ_STAGE1_H

#include "engine/model.h"
#include "gplq/actq.h"
#include "gplq/pca.h"
#include "io/dataset.h"
#include "train/trainer.h"

/* The stage's parameters. No defaults here: gplq_config_from_spec fills them from the job
 * spec's option table (config/jobspec.c), the one place an option's default is written. */
typedef struct {
    int epochs;            /* paper: 1 */
    int batch;             /* paper: 128 */
    float lr;              /* constant (paper: 5e-6 at batch 128 for ImageNet models); never
                              "auto" here: gplq_resolve_lr decides it before stage1_run */
    float weight_decay;    /* [ours] 0 */
    float alpha;           /* weight of the PCA term, paper: 1 */
    float label_smoothing; /* [ours] 0 */
    int pca_samples;       /* [ours] teacher features for the PCA, default 10000 (or all) */
    float pca_var;         /* paper: 0.6 */
    int pca_multiple;      /* paper: 32 */
    int calib_images;      /* images observed to initialize the steps */
    ds_augment aug;
    uint64_t seed;
    int ckpt_every;
    const char *ckpt_path; /* resumable state, NULL = none */
    /* The feature passes before training (the PCA samples through the teacher, then the
     * calibration images through the student) call tick(tick_ctx, images done, images in the
     * pass) after each batch; nonzero stops the run (stage1_run returns 1). They take a while
     * (10,000 images by default), and a cancel or a shutdown must not wait for them. NULL:
     * no calls. */
    train_tick_fn tick;
    void *tick_ctx;
} stage1_config;

/* PCA components are kept in multiples of this (paper: 32): a constant of the method. */
#define STAGE1_PCA_MULTIPLE 32

typedef struct {
    pca_basis pca;         /* the teacher's principal components (owned) */
    double seconds;        /* all of it; of which before the first training step (the teacher's
                            * features, the PCA, the calibration pass): */
    double seconds_prep;
    long peak_kb_prep;     /* the resident peak of that part (mem_peak_kb), after which the
                            * mark restarts (mem_peak_restart): the rest is the training's */
} stage1_result;

/* Trains student (hooks of aq are installed on it, and aq's steps are initialized here) to
 * mimic teacher. student starts as a copy of teacher; on return it holds the W32A4 weights and
 * aq the learned steps (aq stays installed, in QUANT mode). progress as in train_run.
 * Returns 0, 1 if stopped by the callback (state checkpointed), -1 on error.
 * Under MPI (train/dist.h) every rank calls it alike: the PCA's teacher features are split
 * over the ranks, rank 0 fits the basis and sends it, every rank observes the calibration
 * images and rank 0's steps are sent to all, then training is data-parallel (train_run). The
 * ranks stop together when c->tick asks any of them to. */
int stage1_run(model *student, model *teacher, actq_set *aq, const stage1_config *c,
               const ds_set *train, train_progress_fn progress, void *ctx, stage1_result *res,
               char *err, size_t errlen);
void stage1_result_free(stage1_result *r);

/* Teacher features (n, C) of the first n images of order (or of d if order is NULL), no
 * augmentation, batch images at a time; out is the caller's (n * C floats). After each batch,
 * tick (if not NULL) gets (images done, n); nonzero from it stops: returns 1. 0 when done,
 * -1 on error. */
int stage1_features(model *m, const ds_set *d, const int *order, int n, int batch, float *out,
                    train_tick_fn tick, void *tick_ctx,
                    char *err, size_t errlen);

#endif
