/*
 * export.h: gplq's models as ONNX files that ONNX Runtime (and any ONNX consumer) runs.
 *
 *   ONNX_KIND_QDQ   model.onnx: what gplq's evaluation computes. Weights as INT4 (INT8 above 4
 *                   bits) initializers with their per-output-channel steps feeding
 *                   DequantizeLinear; every activation quantizer as a QuantizeLinear /
 *                   DequantizeLinear pair with gplq's learned steps, per tensor or per axis as
 *                   gplq quantizes; QwT as the MatMul and Add it is.
 *   ONNX_KIND_W4    model.w4.onnx: the same 4-bit weight codes as com.microsoft MatMulNBits
 *                   (ORT's fast CPU kernels), activations in float: W4A32, not the W4A4 model.
 *   ONNX_KIND_FP32  model.fp32.onnx: an FP32 checkpoint as it is, the baseline.
 *
 * Every file has input pixel_values (batch, C, H, W), normalized as the model expects (mean
 * and std in metadata_props), dynamic batch, and output logits (batch, classes).
 *
 * One builder per architecture (onnx/vit.c, onnx/swin.c, both on the layers of onnx/nn.c) turns
 * an engine model into an onnx_graph; this module opens the input file, picks the builder by the
 * model's architecture and writes the file.
 */
#ifndef GPLQ_ONNX_EXPORT_H
#define GPLQ_ONNX_EXPORT_H

#include <stddef.h>

typedef enum { ONNX_KIND_QDQ, ONNX_KIND_W4, ONNX_KIND_FP32 } onnx_kind;

/* The block size of model.w4.onnx's MatMulNBits: what ORT's own 4-bit quantizer
 * (MatMul4BitsQuantizer, DefaultWeightOnlyQuantConfig) writes by default. gplq's steps are per
 * output channel, so every block of a row has the row's step and the size only trades scale
 * copies against padding: by default a matrix whose K is not a multiple of 128 takes the largest
 * of 64, 32, 16 that divides K (the demo model's K = 192: 64, no padding), else 128 padded. */
#define ONNX_W4_BLOCK 128

typedef struct {
    int qwt_fp16;   /* 1: QwT's weights and biases stored in FP16 (cast to float in the graph);
                       0: FP16 only where that is lossless (the values are halves already, as
                       gplq's pipeline makes them), else FP32 */
    int w4_block;   /* MatMulNBits block size, a power of two >= 16; 0 = the default above */
} onnx_opts;

/* The kind's name in metadata and messages: "w4a4-qdq"-like strings built from the bits. */
const char *onnx_kind_name(onnx_kind k);

/*
 * Writes out_path (whole or not at all) from in_path: a gplq-q-1 model.q.safetensors for
 * ONNX_KIND_QDQ and ONNX_KIND_W4, an FP32 checkpoint (timm, HuggingFace or torchvision names)
 * for ONNX_KIND_FP32. opts may be NULL (defaults). 0, or -1 with a message: a malformed or
 * truncated input is reported as such and leaves nothing at out_path.
 */
int onnx_export(const char *in_path, const char *out_path, onnx_kind kind, const onnx_opts *opts,
                char *err, size_t errlen);

#endif
