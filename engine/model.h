/*
 * model.h: one type for every architecture the engine has (the ViT/DeiT family of vit.h, the
 * Swin of swin.h), so that training, GPLQ, checkpoints and the tools are written once.
 *
 * A model is a tagged union; each model_ function dispatches to the architecture's own (whose
 * contracts, in vit.h, it keeps). What the architectures differ in and the method needs to
 * know is described here as data rather than asked case by case: the shape of the tokens
 * entering every block (model_block_shape), the PatchMerging that opens a Swin stage
 * (model_block_merge), the matrices that stage 2 quantizes (model_linears) and the places the
 * engine calls the quantization hooks (model_qpoints).
 */
#ifndef GPLQ_MODEL_H
#define GPLQ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/hooks.h"
#include "engine/swin.h"
#include "engine/vit.h"

typedef enum { MODEL_VIT, MODEL_SWIN } model_arch;

typedef struct {
    model_arch arch;
    union {
        vit_config vit;   /* arch MODEL_VIT */
        swin_config swin; /* arch MODEL_SWIN */
    };
} model_config;

/* What every architecture has, read from either config. */
typedef struct {
    int img_size, in_chans, num_classes;
    int feature_dim;     /* the penultimate feature (the head's input) */
    int blocks;          /* transformer blocks over the whole model */
    const float *mean, *std; /* (3) the input normalization, borrowed from the config */
} model_dims;

model_dims model_config_dims(const model_config *c);
/* 0 if c is usable, else -1 with a message. */
int model_config_check(const model_config *c, char *err, size_t errlen);
/* Tokens per image and channels entering (and leaving) block l. */
void model_block_shape(const model_config *c, int l, int *tokens, int *dim);
/* The stage whose PatchMerging runs just before block l (Swin, first block of stages 1..),
 * or 0 when none does. */
int model_block_merge(const model_config *c, int l);
/* A one-line description for people: "ViT: img 28, patch 4, dim 192, depth 6, 3 heads, ..." */
void model_config_describe(const model_config *c, char *out, size_t outlen);
/* "vit" or "swin": the family's name in files, the API and the client. */
const char *model_arch_name(model_arch a);
/* FLOPs of one forward pass of one image (matrix products only, 2 per multiply-add). */
double model_forward_flops(const model_config *c);

typedef struct {
    model_arch arch;
    union {
        vit_model vit;
        swin_model swin;
    };
} model;

/* Lifecycle and parameters: the vit_ functions of the same names, for either architecture. */
int model_init(model *m, const model_config *c, char *err, size_t errlen);
void model_free(model *m);
int model_clone(model *dst, const model *src, char *err, size_t errlen);
int model_alloc_grads(model *m, char *err, size_t errlen);
void model_zero_grad(model *m);
void model_init_weights(model *m, uint64_t seed);
model_config model_get_config(const model *m);
/* 1 if a and b have the same architecture and configuration (so one's weights fit the other). */
int model_same_config(const model *a, const model *b);
model_dims model_get_dims(const model *m);
/* The parameter allocation, its gradient mirror (NULL before model_alloc_grads), its length,
 * and the description of its tensors in storage order (n of them); all owned by m. */
float *model_params(const model *m);
float *model_grads(const model *m);
size_t model_num_params(const model *m);
const param_info *model_param_info(const model *m, int *n);
/* Index into model_param_info of the tensor named name (timm's, block index included), -1 if
 * none; *layer gets the index within the tensor's stack for per-layer tensors. */
int model_param_lookup(const model *m, const char *name, int *layer);

void model_set_hooks(model *m, const model_hooks *hooks);
/* Recompute each block's LayerNorm and GELU outputs in the backward instead of keeping them
 * (vit_set_recompute): less memory for a LayerNorm and a GELU more per block. */
void model_set_recompute(model *m, int on);
/* QwT: w and b (borrowed) hold one (C, C) map and (C) bias per block (NULL entries: none);
 * w NULL removes the compensation. */
void model_set_qwt(model *m, const float *const *w, const float *const *b);
void model_release_acts(model *m);

int model_forward(model *m, const float *images, int B, char *err, size_t errlen);
int model_forward_infer(model *m, const float *images, int B, char *err, size_t errlen);
/* Token rows a forward-only pass is sized for (model_infer_batch). */
#define MODEL_INFER_ROWS 8192
/* Images per forward-only pass of m (evaluation, features, calibration): at most max, and no
 * more than fill `rows` token rows in its first block (at least one), so that such a pass
 * holds about the same memory whatever the image size. With MODEL_INFER_ROWS: 256 DeiT-S
 * images a pass held 1.5 GB of block buffers, 41 hold 250 MB; GEMMs of that many rows run at
 * full rate. */
int model_infer_batch(const model *m, int rows, int max);
/* (B, K) of the last forward, borrowed. */
const float *model_logits(const model *m);
/* The penultimate feature of image b of the last forward, (feature_dim), borrowed. */
const float *model_feature(const model *m, int b);
int model_backward(model *m, const float *dlogits, const float *dfeature, float *dimages,
                   char *err, size_t errlen);

/* Block-level passes for stage 2: tokens (B, tokens, dim) as model_block_shape gives them.
 * model_merge_forward runs the PatchMerging of stage s (model_block_merge). */
int model_embed_forward(model *m, float *x, const float *images, int B, char *err,
                        size_t errlen);
int model_merge_forward(model *m, int s, float *y, const float *x, int B, char *err,
                        size_t errlen);
int model_block_forward(model *m, int l, float *y, const float *x, int B, char *err,
                        size_t errlen);
int model_head_forward(model *m, float *logits, const float *x, int B, char *err,
                       size_t errlen);

/* The weight matrices stage 2 quantizes, in a fixed order: the patch embedding first, then
 * block by block qkv, proj, fc1, fc2 (a Swin stage's PatchMerging reduction before its first
 * block), then the head(s). */
typedef enum { MODEL_LIN_PATCH, MODEL_LIN_BLOCK, MODEL_LIN_MERGE, MODEL_LIN_HEAD } model_lin_kind;
typedef struct {
    char name[80];       /* the tensor's timm name, e.g. "blocks.3.attn.qkv.weight" */
    float *w;            /* (rows, cols), inside the model's parameters */
    int rows, cols;
    model_lin_kind kind;
} model_linear;
/* Writes up to cap entries into out (NULL: only counts); returns how many there are. */
int model_linears(const model *m, model_linear *out, int cap);

/* Every place the engine calls the hooks, with the width of the rows it hands them: block
 * points in block order (QP_QKV_IN .. QP_FC2_IN for each block), then QP_PATCH_IN, QP_HEAD_IN,
 * then QP_MERGE_IN for each merging stage. */
typedef struct {
    int layer;           /* as the hooks receive it */
    qpoint p;
    int cols;
} model_qpoint;
/* Writes up to cap entries (NULL: only counts); returns how many there are. */
int model_qpoints(const model_config *c, model_qpoint *out, int cap);

#endif
