/*
 * swin.h: the ONNX graph of a Swin Transformer (engine/swin.h), node for node the computation
 * of swin_forward_infer with GPLQ's quantizers at the places actq.h puts them:
 *
 *   pixel_values -> [Q/DQ patch_in] -> Conv (P x P, stride P; weight DQ) -> tokens (N, T, C)
 *   -> LayerNormalization (patch_embed.norm)
 *   each stage s >= 1 first: PatchMerging: Reshape/Transpose to the 2x2 neighbourhoods in timm's
 *     order x(0,0), x(1,0), x(0,1), x(1,1) -> LayerNormalization(4C) -> [Q/DQ merge_in]
 *     -> reduction (no bias)
 *   each block: LayerNormalization -> Gather into windows (the cyclic shift folded in, one
 *     constant index, as swin_window_partition_forward does it) -> [Q/DQ qkv_in] -> qkv linear
 *     -> Split q, k, v -> [Q/DQ each] -> (N, windows, heads, w*w, hd) -> MatMul q k^T, Mul
 *     1/sqrt(hd), Add the relative position bias (a constant (NH, N, N) gathered from the
 *     table at build time), Add the shift mask (shifted blocks) -> Softmax -> [Q/DQ attn, UINT]
 *     -> MatMul v -> tokens -> [Q/DQ proj_in] -> proj -> Gather back to raster order (window
 *     reverse and the roll back) -> + input; LayerNormalization -> [Q/DQ fc1_in] -> fc1 -> Gelu
 *     -> [Q/DQ fc2_in] -> fc2, + residual; + QwT (input MatMul W^T, Add b) where it has one
 *   final LayerNormalization -> ReduceMean over tokens -> [Q/DQ head_in] -> head -> logits
 *
 * Linears, quantizers and QwT are onnx/nn.h's, as in the ViT graph (onnx/vit.h).
 */
#ifndef GPLQ_ONNX_SWIN_H
#define GPLQ_ONNX_SWIN_H

#include <stddef.h>

#include "engine/swin.h"
#include "gplq/actq.h"
#include "onnx/export.h"
#include "onnx/graph.h"
#include "onnx/qweights.h"

/* Adds m's graph to g (empty), with the contract of onnx_vit_build (onnx/vit.h): m the FP32
 * model, or for QDQ/W4 the one gplq_load_quantized gave; aq its quantizers (QDQ only, else
 * NULL); qw the codes of its quantized matrices (QDQ and W4, else NULL); all borrowed for the
 * call. 0, or -1 with a message (free the graph then). */
int onnx_swin_build(onnx_graph *g, const swin_model *m, actq_set *aq, const onnx_qweights *qw,
                    onnx_kind kind, const onnx_opts *opts, char *err, size_t errlen);

#endif
