/*
 * pipeline.h: a whole GPLQ job on a model and a dataset: the FP32 accuracy, stage 1 (W32A4),
 * stage 2 without and with QwT (W4A4), and the baselines users judge the gain by (PTQ alone:
 * the same activation calibration, no training, the stage-2 weight quantizer and QwT; naive
 * min-max W4A4). The offline `gplq quantize` and the service's workers both call gplq_run.
 */
#ifndef GPLQ_PIPELINE_H
#define GPLQ_PIPELINE_H

#include "config/jobspec.h"
#include "engine/model.h"
#include "gplq/actq.h"
#include "gplq/stage1.h"
#include "gplq/stage2.h"
#include "io/dataset.h"

typedef struct {
    int wbits, abits;
    stage1_config s1;
    stage2_config s2;
    int baselines;      /* 1: also PTQ alone and min-max */
    int percentile_init;/* per-tensor activation steps from the 1st/99th percentiles (paper);
                           0 (default): from min-max, like per-channel ones. Measured on the
                           demo model (W4A4, 10k test images): PTQ alone 82.12% with
                           percentiles against 88.40% with min-max, and stage 1 ends as
                           high or higher (89.88% against 89.84%): the 99th percentile of a
                           softmax output clips exactly the large attention weights */
    int eval_batch;
    int bf16;           /* every pass's linear layers in BF16 (matmul_set_precision) */
    /* forward passes of work the caller does after the run, counted in the run's progress so
     * its fraction leaves room for them: gplq_artifacts_passes (gplq/report.h) when it writes
     * the artifacts, else 0 */
    double after_passes;
} gplq_config;

/* Images per evaluation batch: a fixed choice of ours, not an option (it changes no result). */
#define GPLQ_EVAL_BATCH 256

/* The configuration a job spec asks for (config/jobspec.h): every option of js in its place in
 * the stages' configurations, which have no defaults of their own. No state file (stage 1's
 * ckpt_path is the caller's), no tick. */
void gplq_config_from_spec(gplq_config *c, const jobspec *js);
/* gplq_config_from_spec of the job spec's defaults (the option table's). */
void gplq_defaults(gplq_config *c);

typedef struct {
    const char *stage;  /* "calibrate", "stage1", "stage2", "evaluate"; "export" from
                           gplq_write_artifacts (parts "artifacts", "onnx") */
    const char *part;   /* what the stage works on: "stage1", or the accuracy being measured
                           ("fp32", "ptq_baseline", ...: the report's keys) */
    int64_t step, total;/* within the part */
    double fraction;    /* of the whole run, in [0, 1] */
    float ce, pca;      /* stage 1's loss terms */
    double images_per_s, eta_s; /* stage 1's */
    const char *metric; /* non-NULL once: an accuracy just measured (a report key) ... */
    double value;       /* ... and its top-1 fraction */
} gplq_progress;
typedef int (*gplq_progress_fn)(void *ctx, const gplq_progress *p);

typedef struct {
    /* top-1 fractions; -1 when not measured */
    double fp32, stage1, stage2_noqwt, gplq, ptq_baseline, minmax_baseline;
    int pca_k;
    double pca_explained;
    double lr;          /* the stage-1 learning rate used (after "auto") */
    int depth;
    double r2[64], mse_before[64], mse_after[64]; /* per block, GPLQ's stage 2 */
    double seconds_stage1, seconds_stage2, seconds_total;
    /* where the seconds went, phase by phase in the order they ran (report.json's timings_s):
     * eval_fp32, minmax_baseline, ptq_baseline, stage1_prep, stage1_train, eval_stage1,
     * stage2, eval_stage2_noqwt, eval_gplq; and the process's resident peak in each
     * (peak_rss_mb_by_phase), when the kernel lets the mark restart (peaks) */
    struct {
        const char *name; /* static */
        double seconds;
        long peak_kb;
    } phases[12];
    int nphases;
    int peaks;
    double passes, after_passes; /* the progress's whole, and the caller's share of it */
    int bf16;           /* the run's products were BF16 (gplq_config.bf16): the reload proof
                           of gplq_write_artifacts measures the same way */
} gplq_report;

/* Installs aq's hooks on m and sets its steps from n calibration images of train (a seeded
 * choice, the same images stage 1 starts from), with no training: the start of stage 1, and all
 * that the PTQ and min-max baselines get. Leaves aq in QUANT mode. */
int gplq_calibrate(model *m, actq_set *aq, const ds_set *train, int n, uint64_t seed,
                   char *err, size_t errlen);

/* The stage-1 learning rate for c on model m: c->s1.lr, or when it is "auto", 1e-4 for
 * models under 10M parameters (the best of 5e-6, 2e-5 and 1e-4 on the demo model) and the
 * paper's 5e-6 (set for ImageNet-size models) above. */
float gplq_resolve_lr(const gplq_config *c, const model *m);

/* Runs the job on fp (unchanged), training on train, measuring on test. On success, *out (if
 * not NULL) receives the final W4A4 model (dequantized weights, aq's hooks and QwT installed),
 * *aq_out its quantizers and *s2_out the stage-2 result that owns the QwT terms: the caller
 * frees them (model_free, actq_free, stage2_result_free). Returns 0, 1 if stopped, -1 on error.
 * Under MPI (train/dist.h) every rank calls it with the same arguments: stage 1 is data-parallel
 * and the evaluations split the test images; stage 2 runs on every rank alike. progress is
 * called on every rank (print from rank 0 only), and the run stops on every rank when it asks
 * to on any. */
int gplq_run(const model *fp, const ds_set *train, const ds_set *test, const gplq_config *c,
             gplq_progress_fn progress, void *ctx, gplq_report *rep, model *out,
             actq_set *aq_out, stage2_result *s2_out, char *err, size_t errlen);

#endif
