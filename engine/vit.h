/*
 * vit.h: a Vision Transformer that computes exactly what timm's VisionTransformer computes
 * (ViT and DeiT, with the DeiT distillation token), forward and backward.
 *
 * Layout in the llm.c manner: every parameter lives in one allocation with named pointers into
 * it (vit_params), the gradients mirror them, and the activations of a batch live in a second
 * allocation (vit_acts) kept for the backward pass.
 *
 * Hooks for quantization-aware training: a model_hooks table, when installed, is called at every
 * place GPLQ fake-quantizes (qpoint), forward and backward; the engine keeps the quantized
 * copy beside the original so both passes see the right tensors (or, with a reforward hook,
 * recomputes a block's copies in its backward instead of keeping them). QwT compensation (a linear map
 * of each block's input added to its output) is a forward-only option. The penultimate feature
 * (the final-norm class token that the head reads) is exposed, and backward accepts a gradient
 * on it, for feature-mimicking losses.
 */
#ifndef GPLQ_VIT_H
#define GPLQ_VIT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/hooks.h"

typedef struct {
    int img_size;     /* square input, pixels */
    int patch;        /* patch size; img_size % patch == 0 */
    int in_chans;
    int dim;          /* C */
    int depth;        /* L */
    int heads;        /* NH; dim % heads == 0 */
    int mlp_hidden;   /* H (timm: mlp_ratio * dim) */
    int num_classes;  /* K */
    int distilled;    /* 1 for DeiT's distillation token and head_dist */
    float ln_eps;     /* 1e-6 for timm and torchvision, 1e-12 for HuggingFace */
    float mean[3], std[3]; /* input normalization the model was trained with, per channel */
} vit_config;

/* Tokens per image: class token, distillation token if any, then the patches. */
int vit_num_prefix(const vit_config *c);
int vit_num_tokens(const vit_config *c);
/* 0 if c is a usable config, else -1 with a message. */
int vit_config_check(const vit_config *c, char *err, size_t errlen);

/* Parameter tensors; shapes in comments with C = dim, L = depth, H = mlp_hidden, K = classes,
 * T = tokens, Pd = in_chans * patch * patch. The order is the storage order. */
typedef struct {
    float *patch_w;    /* (C, Pd)  patch_embed.proj.weight, (C, Cin, P, P) flattened */
    float *patch_b;    /* (C) */
    float *cls_token;  /* (C) */
    float *dist_token; /* (C), distilled only (else a zero-size tensor) */
    float *pos_embed;  /* (T, C) */
    float *ln1_w;      /* (L, C) */
    float *ln1_b;      /* (L, C) */
    float *qkv_w;      /* (L, 3C, C) */
    float *qkv_b;      /* (L, 3C) */
    float *proj_w;     /* (L, C, C) */
    float *proj_b;     /* (L, C) */
    float *ln2_w;      /* (L, C) */
    float *ln2_b;      /* (L, C) */
    float *fc1_w;      /* (L, H, C) */
    float *fc1_b;      /* (L, H) */
    float *fc2_w;      /* (L, C, H) */
    float *fc2_b;      /* (L, C) */
    float *norm_w;     /* (C) */
    float *norm_b;     /* (C) */
    float *head_w;     /* (K, C) */
    float *head_b;     /* (K) */
    float *headd_w;    /* (K, C), distilled only */
    float *headd_b;    /* (K), distilled only */
} vit_params;
#define VIT_NUM_PARAM_TENSORS 23

typedef struct vit_acts vit_acts; /* private to vit.c */

typedef struct {
    vit_config cfg;
    vit_params params;   /* pointers into param_mem */
    vit_params grads;    /* pointers into grad_mem, NULL until vit_alloc_grads */
    float *param_mem;    /* owned, num_params floats */
    float *grad_mem;     /* owned, num_params floats, or NULL */
    size_t num_params;
    param_info info[VIT_NUM_PARAM_TENSORS];

    const model_hooks *hooks;     /* borrowed; NULL = no quantization */
    int recompute;              /* 1: the backward recomputes the norm and GELU outputs of
                                   each block instead of keeping them (vit_set_recompute) */
    const float *const *qwt_w;  /* borrowed; NULL, or L pointers to (C, C) maps (NULL = none) */
    const float *const *qwt_b;  /* borrowed; L pointers to (C) */

    vit_acts *acts;             /* owned; sized for acts_batch images */
    int acts_batch;
    float *logits;              /* (B, K), in acts, valid after vit_forward */
} vit_model;

/* Allocates a model for cfg with zeroed parameters. Returns 0, or -1 with a message.
 * Free with vit_free. */
int vit_init(vit_model *m, const vit_config *cfg, char *err, size_t errlen);
void vit_free(vit_model *m);
/* A new model with src's config and weights (no gradients, hooks or activations). */
int vit_clone(vit_model *dst, const vit_model *src, char *err, size_t errlen);
/* Allocates the gradient mirror (zeroed). */
int vit_alloc_grads(vit_model *m, char *err, size_t errlen);
void vit_zero_grad(vit_model *m);
/* timm's initialization: trunc_normal(std .02) for matrices and pos_embed, 1e-6 normal for the
 * tokens, zero biases, unit norms; deterministic for seed. */
void vit_init_weights(vit_model *m, uint64_t seed);
/* Index of the parameter tensor whose timm name (block index included) is name, -1 if none;
 * *layer receives the block index for per-layer tensors. */
int vit_param_lookup(const vit_model *m, const char *name, int *layer);

/* Installs (or removes, with NULL) the quantization hooks. Activations are reallocated at the
 * next forward, since hooks need room for the quantized copies. */
void vit_set_hooks(vit_model *m, const model_hooks *hooks);
/* With on, a forward the backward can follow keeps each block's LayerNorm and GELU outputs for
 * one block only, and the backward recomputes them block by block from what it does keep
 * (the norms' inputs, fc1's output): 6 of the 16 (tokens x dim)-sized tensors a block keeps,
 * for a LayerNorm and a GELU more per block in the backward. Gradients are bit-identical.
 * Activations are reallocated at the next forward. */
void vit_set_recompute(vit_model *m, int on);
/* Frees the activations kept for the backward pass (m->logits becomes invalid). They grow to
 * the largest batch a forward pass has seen and are kept for the next one; a pass over many
 * images in big chunks (evaluation, PCA features, calibration) calls this when done so that
 * training afterwards holds buffers for its own batch only. */
void vit_release_acts(vit_model *m);

/* Forward pass on images (B, Cin, H, W), already normalized. Keeps the activations for
 * vit_backward. Results: m->logits (B, K). Returns 0, or -1 (out of memory, a hook failed). */
int vit_forward(vit_model *m, const float *images, int B, char *err, size_t errlen);
/* The same forward, for passes no backward follows (evaluation, teachers, features,
 * calibration): every block reuses one block's activation buffers, so it holds about 1/L of
 * the memory. Bit-identical outputs (logits, vit_feature). vit_backward refuses to follow it. */
int vit_forward_infer(vit_model *m, const float *images, int B, char *err, size_t errlen);
/* The penultimate feature of image b of the last forward: the final-norm class token, (C),
 * borrowed until the next forward. */
const float *vit_feature(const vit_model *m, int b);
/* Backward pass of the last forward. dlogits (B, K) is required; dfeature (B, C) optional: a
 * gradient on vit_feature; dimages (B, Cin, H, W) optional, accumulated. Parameter gradients
 * accumulate into m->grads (vit_alloc_grads first). */
int vit_backward(vit_model *m, const float *dlogits, const float *dfeature, float *dimages,
                 char *err, size_t errlen);

/* Block-level access for stage 2 (QwT): runs block l alone on x (B, T, C) into y (B, T, C),
 * with the installed hooks and the block's QwT term if set. Uses the model's activation
 * buffers (B <= the batch of the last allocation, else reallocates). */
int vit_block_forward(vit_model *m, int l, float *y, const float *x, int B, char *err,
                      size_t errlen);
/* The embedding (tokens after positions) and the final norm + head, also for stage 2. */
int vit_embed_forward(vit_model *m, float *x, const float *images, int B, char *err, size_t errlen);
int vit_head_forward(vit_model *m, float *logits, const float *x, int B, char *err, size_t errlen);

/* FLOPs of one forward pass of one image (matrix products only, 2 per multiply-add). */
double vit_forward_flops(const vit_config *c);

#endif
