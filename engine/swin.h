/*
 * swin.h: a Swin Transformer that computes exactly what timm's (>= 0.9) SwinTransformer
 * computes, forward and backward, in the conventions of vit.h.
 *
 * The model: patch embedding (a conv as a GEMM) then LayerNorm; stages of blocks with window
 * attention (cyclic shift by window/2 on odd blocks, window partition, qkv, scaled q k^T plus
 * the relative position bias gathered from a ((2w-1)^2, heads) table plus the shift mask, -100
 * between regions, softmax, times v, proj, window reverse, shift back), an MLP with exact GELU;
 * PatchMerging at the start of stages 1..n-1 (the 2x2 neighbourhood concatenated in timm's
 * order x(0,0), x(1,0), x(0,1), x(1,1), LayerNorm(4C), Linear(4C, 2C) without bias); the final
 * LayerNorm on every token, the mean over tokens, the head. Where a stage's resolution is not
 * larger than the window, the window shrinks to it and the shift is 0, as in timm.
 *
 * Tokens between blocks are (B, H, W, C) row-major, i.e. (B, N, C) in raster order; windows
 * exist only inside a block. Blocks are numbered over the whole model (0 .. total depth - 1);
 * parameters are stacked per stage (a stage's blocks share a shape, stages do not).
 *
 * Layout in the llm.c manner, as vit.h: one parameter allocation with named pointers
 * (swin_params), the gradients mirroring it, the activations of a batch in a second allocation
 * kept for the backward pass. Quantization hooks (engine/hooks.h) at the ViT's points of every
 * block plus QP_MERGE_IN; QwT (a linear map of each block's input added to its output) as a
 * forward-only option; the penultimate feature is the pooled final-norm token mean.
 */
#ifndef GPLQ_SWIN_H
#define GPLQ_SWIN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/hooks.h"

#define SWIN_MAX_STAGES 4

typedef struct {
    int img_size;     /* square input, pixels */
    int patch;        /* patch size; img_size % patch == 0 */
    int in_chans;
    int embed_dim;    /* C of stage 0; stage s has embed_dim << s */
    int stages;       /* 1 .. SWIN_MAX_STAGES */
    int depths[SWIN_MAX_STAGES];
    int heads[SWIN_MAX_STAGES];
    int window;       /* as configured (timm window_size); a stage uses min(window, resolution) */
    int mlp_ratio;    /* hidden = mlp_ratio * C of the stage (timm: 4) */
    int num_classes;
    float ln_eps;     /* 1e-5: timm's nn.LayerNorm and HuggingFace's layer_norm_eps */
    float mean[3], std[3]; /* input normalization the model was trained with, per channel */
} swin_config;

/* 0 if c is usable (every stage's resolution divisible by its window and by 2 before a
 * merge, dims divisible by heads), else -1 with a message. */
int swin_config_check(const swin_config *c, char *err, size_t errlen);
int swin_num_blocks(const swin_config *c);        /* sum of depths */
int swin_block_stage(const swin_config *c, int l); /* the stage of block l */
int swin_stage_dim(const swin_config *c, int s);   /* embed_dim << s */
int swin_stage_res(const swin_config *c, int s);   /* side of the token map of stage s */
int swin_stage_window(const swin_config *c, int s);/* min(window, resolution) */
/* The cyclic shift of block l: window/2 on odd blocks of a stage, 0 on even ones and where the
 * window covers the whole map. */
int swin_block_shift(const swin_config *c, int l);

/* Parameter tensors, per stage s (C = stage dim, Cp = the previous stage's, H = mlp hidden,
 * D = the stage's depth, NH = heads, w = the stage's window): in storage order. */
typedef struct {
    float *merge_norm_w, *merge_norm_b; /* (4Cp) layers.s.downsample.norm, s >= 1 only */
    float *merge_w;                     /* (C, 4Cp) layers.s.downsample.reduction.weight */
    float *ln1_w, *ln1_b;               /* (D, C) */
    float *bias_table;                  /* (D, (2w-1)^2, NH) attn.relative_position_bias_table */
    float *qkv_w, *qkv_b;               /* (D, 3C, C), (D, 3C) */
    float *proj_w, *proj_b;             /* (D, C, C), (D, C) */
    float *ln2_w, *ln2_b;               /* (D, C) */
    float *fc1_w, *fc1_b;               /* (D, H, C), (D, H) */
    float *fc2_w, *fc2_b;               /* (D, C, H), (D, C) */
} swin_stage_params;

typedef struct {
    float *patch_w, *patch_b;           /* (C0, Cin*P*P), (C0) patch_embed.proj */
    float *patch_norm_w, *patch_norm_b; /* (C0) patch_embed.norm */
    swin_stage_params stage[SWIN_MAX_STAGES];
    float *norm_w, *norm_b;             /* (Clast) norm */
    float *head_w, *head_b;             /* (K, Clast), (K) head.fc */
} swin_params;

typedef struct swin_acts swin_acts; /* private to swin.c */

typedef struct {
    swin_config cfg;
    swin_params params;   /* pointers into param_mem */
    swin_params grads;    /* pointers into grad_mem, NULL until swin_alloc_grads */
    float *param_mem;     /* owned, num_params floats */
    float *grad_mem;      /* owned, num_params floats, or NULL */
    size_t num_params;
    param_info *info;     /* owned, ninfo entries, storage order, timm >= 0.9 names */
    int ninfo;

    const model_hooks *hooks;   /* borrowed; NULL = no quantization */
    int recompute;              /* 1: the backward recomputes each block's norm and GELU
                                   outputs instead of keeping them (swin_set_recompute) */
    const float *const *qwt_w;  /* borrowed; NULL, or one pointer per block to (C, C) (NULL = none) */
    const float *const *qwt_b;  /* borrowed; one pointer per block to (C) */

    swin_acts *acts;            /* owned */
    int acts_batch;
    float *logits;              /* (B, K), in acts, valid after swin_forward */
} swin_model;

/* Same contracts as the vit_ functions of the same names (vit.h). */
int swin_init(swin_model *m, const swin_config *cfg, char *err, size_t errlen);
void swin_free(swin_model *m);
int swin_clone(swin_model *dst, const swin_model *src, char *err, size_t errlen);
int swin_alloc_grads(swin_model *m, char *err, size_t errlen);
void swin_zero_grad(swin_model *m);
/* timm's initialization: trunc_normal(std .02) for linear weights and bias tables, zero
 * biases, unit norms, the patch conv as vit_init_weights does it; deterministic for seed. */
void swin_init_weights(swin_model *m, uint64_t seed);
/* Index into m->info of the tensor whose timm >= 0.9 name is name, -1 if none; *layer gets
 * the block index within its stage for per-layer tensors. */
int swin_param_lookup(const swin_model *m, const char *name, int *layer);
void swin_set_hooks(swin_model *m, const model_hooks *hooks);
/* vit_set_recompute's contract (ln1, ln2 and fchg of one block kept; norm1's recomputed output
 * is gathered into windows again). */
void swin_set_recompute(swin_model *m, int on);
void swin_release_acts(swin_model *m);

int swin_forward(swin_model *m, const float *images, int B, char *err, size_t errlen);
int swin_forward_infer(swin_model *m, const float *images, int B, char *err, size_t errlen);
/* The pooled final-norm feature of image b of the last forward, (Clast), borrowed. */
const float *swin_feature(const swin_model *m, int b);
int swin_backward(swin_model *m, const float *dlogits, const float *dfeature, float *dimages,
                  char *err, size_t errlen);

/* Block-level access for stage 2 (tokens (B, N, C) in raster order, N and C those of the
 * block's stage): the embedding (patch conv and its norm) into x (B, N0, C0); stage s's
 * PatchMerging (s >= 1) from the previous stage's tokens; block l with its QwT term if set; the
 * final norm, the pool and the head from the last stage's tokens. */
int swin_embed_forward(swin_model *m, float *x, const float *images, int B, char *err,
                       size_t errlen);
int swin_merge_forward(swin_model *m, int s, float *y, const float *x, int B, char *err,
                       size_t errlen);
int swin_block_forward(swin_model *m, int l, float *y, const float *x, int B, char *err,
                       size_t errlen);
int swin_head_forward(swin_model *m, float *logits, const float *x, int B, char *err,
                      size_t errlen);

/* FLOPs of one forward pass of one image (matrix products only, 2 per multiply-add). */
double swin_forward_flops(const swin_config *c);

#endif
