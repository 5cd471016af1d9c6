/*
 * stage2.h: GPLQ's second stage, weight PTQ with QwT compensation (W4A4).
 *
 * With the activation quantizers frozen at their stage-1 steps, every block linear, a Swin's
 * PatchMerging reductions and the head get RepQ-ViT's per-output-channel weight quantizer at
 * wbits (the patch embedding at 8 bits), then, block by block from the first, QwT: on
 * calibration images, X the block's input taken from the already compensated previous block
 * (through the quantized PatchMerging where a Swin stage begins: merges get no compensation,
 * as in the official QwT code), Y the block's output with the FP32 (stage-1) weights and Y_Z
 * with the quantized ones, the ridge regression
 *     [W; b] = ([X,1]^T [X,1] + lambda I)^-1 [X,1]^T (Y - Y_Z)
 * over all tokens of all images, kept only if its R^2 on those rows is > 0; the block becomes
 * block_W4A4(x) + x W + b.
 */
#ifndef GPLQ_STAGE2_H
#define GPLQ_STAGE2_H

#include <stdint.h>

#include "engine/model.h"
#include "gplq/actq.h"
#include "io/dataset.h"

/* The stage's parameters; gplq_config_from_spec fills them from the job spec (no defaults
 * here). */
typedef struct {
    int wbits;          /* block linears and head */
    int patch_wbits;    /* [ours] 8 */
    int calib_images;   /* paper: 512 */
    float lambda;       /* ridge strength, relative to the mean diagonal of [X,1]^T [X,1] */
    int qwt;            /* 0: quantize weights only */
    int minmax;         /* 1: clip at max |w| only (the naive min-max baseline) */
    uint64_t seed;      /* picks the calibration images */
    /* optional: called after each block's fit (done = blocks fitted, total = depth); nonzero
     * stops stage2_run, which then returns 1 */
    int (*tick)(void *ctx, int64_t done, int64_t total);
    void *tick_ctx;
} stage2_config;

/* The patch embedding's weight bits [ours]: its error reaches every token. */
#define STAGE2_PATCH_WBITS 8

/* One quantized weight matrix: what the artifacts store. */
typedef struct {
    int rows, cols, bits;
    float *steps;       /* (rows) owned */
    int8_t *codes;      /* (rows, cols) owned */
} stage2_qweight;

typedef struct {
    int depth;          /* blocks */
    int nlin;           /* the model's linears (model_linears), in its order */
    model_linear *lin;  /* (nlin) owned: which matrix each entry of qw is */
    stage2_qweight *qw; /* (nlin) owned */
    float **qwt_w;      /* (depth) pointers to (C, C) in linear-layer layout (x W^T), or NULL;
                           C is the block's own width */
    float **qwt_b;      /* (depth) pointers to (C) */
    double *r2;         /* (depth) R^2 of each block's fit on the calibration rows */
    double *mse_before, *mse_after; /* (depth) block output MSE against the FP32-weight output */
    double seconds;
} stage2_result;

/* Returns 0, 1 if c->tick stopped it, -1 on error. Quantizes the weights of m in place (its parameters become the dequantized W4 values) and
 * fits QwT. fp holds the stage-1 (FP32-weight) model; both carry aq's hooks in QUANT mode.
 * On success m's QwT terms point into res (valid until stage2_result_free). */
int stage2_run(model *m, model *fp, actq_set *aq, const stage2_config *c,
               const ds_set *calib, stage2_result *res, char *err, size_t errlen);
void stage2_result_free(stage2_result *res);
/* The quantized form of the matrix named name (a timm name, model_linear.name), or NULL. */
const stage2_qweight *stage2_find(const stage2_result *res, const char *name);

#endif
