/*
 * qweights.h: the integer codes and per-row steps of the quantized matrices of a gplq-q-1 file
 * (model.q.safetensors, see gplq/export.h), as the ONNX builders need them: gplq's own codes,
 * not values re-derived from dequantized floats, so that the INT4 initializers of model.onnx
 * and the 4-bit blocks of model.w4.onnx hold exactly what gplq measured.
 */
#ifndef GPLQ_ONNX_QWEIGHTS_H
#define GPLQ_ONNX_QWEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

typedef struct {
    const st_file *f; /* borrowed: the open model.q.safetensors, until the builder is done */
    const char *path; /* borrowed, for messages */
    int wbits;        /* the file's weight bits, and the patch embedding's */
    int patch_wbits;
} onnx_qweights;

/* Reads the bit widths from f's metadata. 0, or -1 with a message if they are missing or out
 * of 2..8. qw borrows f and path. */
int onnx_qweights_open(onnx_qweights *qw, const st_file *f, const char *path, char *err,
                       size_t errlen);

/* The matrix name (timm's, e.g. "blocks.0.attn.qkv.weight") of rows x cols: codes (rows, cols)
 * and steps (rows), caller-owned, from "<name>.qweight" and "<name>.wscale"; *bits its width.
 * -1 with a message if the tensors are missing or do not match rows x cols at that width. */
int onnx_qweights_get(const onnx_qweights *qw, const char *name, int rows, int cols,
                      int8_t *codes, float *steps, int *bits, char *err, size_t errlen);

#endif
