/*
 * actq.h: the activation quantizers GPLQ places in a model (a ViT or a Swin), plugged into
 * the engine's hooks.
 *
 * Placement (GPLQ-METHOD.md): the input of every linear layer per channel (qkv, proj, fc1, fc2,
 * head, and a Swin's PatchMerging reduction), q, k and v per tensor (three steps over the q|k|v
 * buffer), the softmax output per tensor and unsigned, the patch embedding's input (the image)
 * per tensor at 8 bits. LayerNorm, GELU, softmax and the residual stream stay in FP32. One
 * quantizer per place the engine calls the hooks (model_qpoints), in its order.
 *
 * Modes: OFF passes activations through; OBSERVE passes them through while observers collect
 * the statistics that initialize the steps (per-channel absmax, per-tensor 1st/99th
 * percentiles); QUANT fake-quantizes, and its backward gives the straight-through input
 * gradient and accumulates each step's LSQ gradient.
 */
#ifndef GPLQ_ACTQ_H
#define GPLQ_ACTQ_H

#include <stddef.h>

#include "engine/model.h"
#include "gplq/quant.h"

typedef enum { ACTQ_OFF, ACTQ_OBSERVE, ACTQ_QUANT } actq_mode;

/* Quantizer slots: the per-block points, then the model-level ones (model_qpoints' order). */
#define ACTQ_BLOCK_POINTS 6 /* QKV_IN, QKV_OUT, ATTN, PROJ_IN, FC1_IN, FC2_IN */

typedef struct {
    int depth;                /* blocks */
    int abits, patch_bits;
    actq_mode mode;
    int minmax;               /* 1: every step from absmax (the naive min-max baseline) */
    int nq;                   /* depth * ACTQ_BLOCK_POINTS + 2, + merging stages */
    model_qpoint *where;      /* (nq) owned: the point of each quantizer */
    lsq_quantizer *q;         /* (nq) owned */
    lsq_observer *obs;        /* (nq) owned while observing, else NULL */
    model_hooks hooks;        /* ctx = this set; install with model_set_hooks(m, &set->hooks) */
    char err[256];            /* what failed inside a hook (hooks cannot return messages) */
} actq_set;

/* Quantizers for model m (its architecture; m is not kept): abits for every point but the patch input (patch_bits).
 * Steps start at 1; observe calibration data to initialize them. Free with actq_free. */
int actq_init(actq_set *s, const model *m, int abits, int patch_bits, char *err,
              size_t errlen);
void actq_free(actq_set *s);

/* The quantizer at a point (layer -1 for QP_PATCH_IN and QP_HEAD_IN, the stage for
 * QP_MERGE_IN), or NULL. */
lsq_quantizer *actq_get(actq_set *s, int layer, qpoint p);
/* The name of quantizer i in files: "blocks.N.qkv_in" (N counts blocks over the whole model),
 * "patch_in", "head_in", "layers.S.merge_in". */
void actq_slot_name(const actq_set *s, int i, char *out, size_t n);

/* Starts collecting statistics (mode OBSERVE); forward passes of the model with s->hooks
 * installed feed the observers. seed fixes the percentile reservoirs. */
int actq_observe_begin(actq_set *s, uint64_t seed, char *err, size_t errlen);
/* Sets every step from what was observed, frees the observers, switches to QUANT. */
int actq_observe_end(actq_set *s, char *err, size_t errlen);

/* Total steps over all quantizers, and copies between them and a flat array (for optimizers
 * and checkpoints): gather copies steps (or, with grads, dsteps) out; scatter copies steps in
 * and clamps them to stay positive. */
size_t actq_num_steps(const actq_set *s);
void actq_gather(const actq_set *s, float *flat, int grads);
void actq_scatter(actq_set *s, const float *flat);
void actq_zero_grad(actq_set *s);

#endif
