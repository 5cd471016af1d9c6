/*
 * hooks.h: what every architecture of the engine (vit.h, swin.h) shares with the quantizers and
 * the optimizers: where GPLQ fake-quantizes (qpoint), the hook table it plugs in there
 * (model_hooks), and the description of one parameter tensor (param_info).
 */
#ifndef GPLQ_HOOKS_H
#define GPLQ_HOOKS_H

#include <stddef.h>
#include <stdint.h>

/* Where GPLQ fake-quantizes. rows x cols is the shape handed to the hook; T is the tokens a
 * block's linears see (all tokens of the image for a ViT, N = window * window per window for a
 * Swin, rows counting every window of every image). */
typedef enum {
    QP_PATCH_IN,   /* im2col'ed image, (B * num_patches, Pd) */
    QP_QKV_IN,     /* norm1 output, (B * T, C) */
    QP_QKV_OUT,    /* q | k | v, (B * T, 3C): q, k and v each have their own quantizer */
    QP_ATTN,       /* softmax output, (B * windows * NH * N, N) (a ViT: one window of T) */
    QP_PROJ_IN,    /* attention output, (B * T, C) */
    QP_FC1_IN,     /* norm2 output, (B * T, C) */
    QP_FC2_IN,     /* GELU output, (B * T, H) */
    QP_HEAD_IN,    /* what the head reads: a ViT's final-norm prefix tokens (B * prefix, C), a
                      Swin's pooled feature (B, C) */
    QP_MERGE_IN,   /* Swin only: PatchMerging's reduction input, norm(4C) output, (B * T/4, 4C);
                      layer is the stage it starts (1 .. stages - 1) */
    QP_COUNT
} qpoint;

typedef struct {
    void *ctx;
    /* out (rows, cols) = fq(in). layer is the block index (counted over the whole model), -1
     * for the patch and head points, the stage for QP_MERGE_IN. Returns 0, or -1 to abort the
     * pass (e.g. a non-finite step). */
    int (*forward)(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                   int cols);
    /* din (rows, cols) = d fq / d in * dout (din may alias dout); accumulates the gradients of
     * the quantizer's own parameters inside ctx. in is the forward input. */
    void (*backward)(void *ctx, int layer, qpoint p, float *din, const float *dout,
                     const float *in, int64_t rows, int cols);
    /* Optional: out = fq(in) again, during the backward pass, with no side effect (nothing
     * observed or counted) and the same result forward gave. With it, a training pass keeps
     * only one block's quantized copies (the block being run or differentiated) and each
     * block's backward recomputes its own: a block's six copies are about 40% of its
     * activations, for one elementwise pass per copy. NULL: every copy is kept. */
    int (*reforward)(void *ctx, int layer, qpoint p, float *out, const float *in, int64_t rows,
                     int cols);
} model_hooks;

/* One parameter tensor's description, for loaders, savers and optimizers. */
typedef struct {
    const char *name;  /* timm's name with {} for the block index within its stack, e.g.
                          "blocks.{}.attn.qkv.weight" or "layers.2.blocks.{}.attn.qkv.weight" */
    int per_layer;     /* 1 if stacked over blocks (leading axis of `layers` blocks) */
    int layers;        /* blocks in the stack (per_layer), else 1 */
    int ndim;          /* dims of one (per-block) tensor, as timm stores it */
    int64_t shape[4];  /* timm's shape of one (per-block) tensor */
    size_t offset;     /* in floats, from the start of the parameter allocation */
    size_t numel;      /* total floats, all blocks */
    int decay;         /* 1 if weight decay applies (matrices), 0 for biases, norms, tokens */
} param_info;

#endif
