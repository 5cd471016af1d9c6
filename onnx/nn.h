/*
 * nn.h: the pieces every architecture's ONNX graph is made of (onnx/vit.c, onnx/swin.c), so that
 * a linear, a LayerNorm, an activation quantizer or QwT is written one way for all of them:
 *
 *   onnx_nn_qdq        gplq's activation quantizer at a point as QuantizeLinear/DequantizeLinear
 *   onnx_nn_linear     y = x W^T + b: W a float initializer (FP32), DequantizeLinear of gplq's
 *                      INT4/INT8 codes along the output axis (QDQ), or MatMulNBits (W4)
 *   onnx_nn_layernorm  LayerNormalization over the last axis
 *   onnx_nn_patch_embed  the patch convolution, its weight as the linears', tokens (N, T, C)
 *   onnx_nn_gelu       Gelu, exact (erf) form
 *   onnx_nn_qwt        QwT's y + x W^T + b, its terms in FP16 where that is lossless
 *   onnx_nn_mlp_half   a block's second half: its MLP, the residual, QwT (the same in both)
 *
 * A builder keeps one onnx_nn for the graph; failures set c->failed with a message in c->err
 * (the graph's own errors are sticky, see graph.h) and onnx_nn_end reports either.
 */
#ifndef GPLQ_ONNX_NN_H
#define GPLQ_ONNX_NN_H

#include <stddef.h>

#include "gplq/actq.h"
#include "onnx/export.h"
#include "onnx/graph.h"
#include "onnx/qweights.h"

typedef struct {
    onnx_graph *g;            /* borrowed */
    actq_set *aq;             /* borrowed; QDQ only */
    const onnx_qweights *qw;  /* borrowed; QDQ and W4 */
    onnx_kind kind;
    onnx_opts o;
    float ln_eps;             /* the model's LayerNorm epsilon */
    char *err;                /* the caller's message buffer */
    size_t errlen;
    int failed;               /* a message is in err */
} onnx_nn;

/* Starts a builder on g (borrowed, like aq and qw, for the build): checks that the kind has
 * what it needs (QDQ: aq and qw; W4: qw) and the options. 0, or -1 with a message in err. */
int onnx_nn_begin(onnx_nn *c, onnx_graph *g, actq_set *aq, const onnx_qweights *qw,
                  onnx_kind kind, const onnx_opts *opts, float ln_eps, char *err, size_t errlen);
/* 0 if nothing failed, else -1 with the first message in c->err. */
int onnx_nn_end(onnx_nn *c);

/* Returned names are borrowed from the graph (onnx_name). A tag names the tensors made
 * ("b3.fc1" gives "b3.fc1.weight", "b3.fc1.out", ...). */

/* x through QuantizeLinear/DequantizeLinear with n steps (n = 1 per tensor, else along the last
 * axis), codes of bits, signed or not: gplq's lsq_forward. */
const char *onnx_nn_qdq_steps(onnx_nn *c, const char *x, const char *tag, const float *steps,
                              int n, int bits, int is_signed);
/* x through gplq's quantizer at (layer, p) in the QDQ model; x itself in the others. */
const char *onnx_nn_qdq(onnx_nn *c, const char *x, const char *tag, int layer, qpoint p);

/* y = x W^T + b for W (rows = out, cols = in) whose timm name in model.q.safetensors is wname;
 * w the float weights (FP32 kind); b (rows), or NULL for a linear without bias. */
const char *onnx_nn_linear(onnx_nn *c, const char *x, const char *tag, const char *wname,
                           const float *w, const float *b, int rows, int cols);
/* LayerNormalization of x over its last axis (C) with weight w and bias b (C). */
const char *onnx_nn_layernorm(onnx_nn *c, const char *x, const char *tag, const float *w,
                              const float *b, int C);
/* Gelu in its exact (erf) form, as engine/ops.c computes it. */
const char *onnx_nn_gelu(onnx_nn *c, const char *x, const char *out);
/* The patch embedding of x (N, Cin, S, S): Conv P x P, stride P, with gplq's weight
 * "patch_embed.proj.weight" w (C, Cin*P*P) and bias b (C), flattened to tokens (N, (S/P)^2, C)
 * in raster order. */
const char *onnx_nn_patch_embed(onnx_nn *c, const char *x, const float *w, const float *b,
                                int C, int in_chans, int P);
/* Block l's QwT: y + (x W^T + b) for w (C, C), b (C), as the engines add it after the block's
 * residual. Stored in FP16 if opts say so or if every value is a half already. */
const char *onnx_nn_qwt(onnx_nn *c, const char *x, const char *y, int l, const float *w,
                        const float *b, int C);

/* qkv (N, T, 3C) of block l split along its last axis into q, k and v (out[0..2], named
 * b<l>.q/k/v), each through its own per-tensor quantizer (qkv_out) in the QDQ model. */
void onnx_nn_qkv_split(onnx_nn *c, const char *qkv, int l, const char *out[3]);

/* One block's weights for onnx_nn_mlp_half, each at the block's own slice (borrowed). */
typedef struct {
    const float *ln2_w, *ln2_b;    /* (C) */
    const float *fc1_w, *fc1_b;    /* (H, C), (H) */
    const float *fc2_w, *fc2_b;    /* (C, H), (C) */
    const float *qwt_w, *qwt_b;    /* (C, C), (C); NULL: the block has no QwT */
} onnx_nn_mlp_weights;

/* The second half of block l, as engine/vit.c and engine/swin.c both compute it: r1 +
 * fc2(GELU(fc1(LayerNorm(r1)))) with gplq's quantizers before fc1 and fc2, then QwT's term of
 * the block's input x. r1 is the block's first residual sum; wprefix the timm name of the block
 * ("blocks.3", "layers.1.blocks.0") its weights are found under in model.q.safetensors. */
const char *onnx_nn_mlp_half(onnx_nn *c, const char *x, const char *r1, int l,
                             const char *wprefix, const onnx_nn_mlp_weights *p, int C, int H);

#endif
