/*
 * vit.h: the ONNX graph of a ViT/DeiT (engine/vit.h), node for node the computation of
 * vit_forward_infer with GPLQ's quantizers at the places actq.h puts them:
 *
 *   pixel_values -> [Q/DQ patch_in] -> Conv (P x P, stride P; weight DQ) -> tokens
 *   + class (and distillation) token, + pos_embed
 *   each block: LayerNormalization -> [Q/DQ qkv_in, per channel] -> qkv linear -> Split q, k, v
 *     -> [Q/DQ each, per tensor] -> heads -> MatMul, Mul 1/sqrt(hd), Softmax
 *     -> [Q/DQ attn, per tensor, UINT] -> MatMul v -> merge heads -> [Q/DQ proj_in] -> proj,
 *     + input; LayerNormalization -> [Q/DQ fc1_in] -> fc1 -> Gelu -> [Q/DQ fc2_in] -> fc2,
 *     + residual; + QwT (input MatMul W^T, Add b) where the block has one
 *   final LayerNormalization of the prefix token(s) -> [Q/DQ head_in] -> head (DeiT: the mean
 *   of head and head_dist) -> logits
 *
 * A linear is MatMul with the transposed weight then Add of the bias: the weight a float
 * initializer (FP32), DequantizeLinear of an INT4/INT8 initializer along the output axis
 * (QDQ), or MatMulNBits (W4).
 */
#ifndef GPLQ_ONNX_VIT_H
#define GPLQ_ONNX_VIT_H

#include <stddef.h>

#include "engine/vit.h"
#include "gplq/actq.h"
#include "onnx/export.h"
#include "onnx/graph.h"
#include "onnx/qweights.h"

/* Adds m's graph to g (empty). m: the FP32 model, or for QDQ/W4 the one gplq_load_quantized
 * gave (dequantized weights for everything gplq keeps in float, QwT in m->qwt_w/qwt_b); aq its
 * quantizers (QDQ only, else NULL); qw the codes of its quantized matrices (QDQ and W4, else
 * NULL). All borrowed for the call. 0, or -1 with a message (the graph may hold part of the
 * model then: free it). */
int onnx_vit_build(onnx_graph *g, const vit_model *m, actq_set *aq, const onnx_qweights *qw,
                   onnx_kind kind, const onnx_opts *opts, char *err, size_t errlen);

#endif
