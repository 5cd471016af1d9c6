/*
 * graph.h: building an ONNX model (a graph of nodes over named tensors, its initializers, one
 * input and one output) and writing it as a .onnx file, through protobuf-c's code for the
 * onnx.proto Debian's libonnx-dev installs (generated at build time, see the Makefile). The
 * architecture builders (onnx/vit.c, onnx/swin.c) are written on this API only and
 * never see protobuf types.
 *
 * That onnx.proto is ONNX 1.12's: it predates IR version 10 and the INT4/UINT4 element types.
 * The writer sets those as numbers (ONNX_IR_VERSION, ONNX_INT4, ONNX_UINT4 below), which the
 * wire format carries as plain int64/int32 fields, as the ONNX spec (onnx/onnx.proto of 1.16+)
 * numbers them.
 *
 * Errors are sticky: a builder call that fails (out of memory) records the first message in
 * the graph and makes every later call a no-op, so that a builder can add hundreds of nodes
 * without checking each one; onnx_graph_save (and onnx_graph_error) report it.
 */
#ifndef GPLQ_ONNX_GRAPH_H
#define GPLQ_ONNX_GRAPH_H

#include <stddef.h>
#include <stdint.h>

/* onnx.proto (ONNX 1.16+): IR_VERSION = 0x000000000000000A, "IR VERSION 10 published on
 * March 25, 2024", the first with INT4/UINT4; opset 21 is the first default-domain opset whose
 * QuantizeLinear/DequantizeLinear accept them. */
#define ONNX_IR_VERSION 10
#define ONNX_OPSET 21

/* TensorProto.DataType values (onnx.proto); INT4 = 22 and UINT4 = 21 are not in Debian's 1.12
 * file. */
typedef enum {
    ONNX_FLOAT = 1,
    ONNX_UINT8 = 2,
    ONNX_INT8 = 3,
    ONNX_INT64 = 7,
    ONNX_FLOAT16 = 10,
    ONNX_UINT4 = 21,
    ONNX_INT4 = 22,
} onnx_dtype;

#define ONNX_MAX_DIMS 8

typedef struct onnx_graph onnx_graph; /* private to graph.c */

/* A new, empty graph; NULL when out of memory. Free with onnx_graph_free. */
onnx_graph *onnx_graph_new(const char *name);
void onnx_graph_free(onnx_graph *g);

/* The first error of a builder call, or NULL if none so far. Borrowed from g. */
const char *onnx_graph_error(const onnx_graph *g);

/* A fresh tensor name made from a printf format, unique in g if the format makes it so.
 * Borrowed: valid until onnx_graph_free. Never NULL (an empty string after an error). */
const char *onnx_name(onnx_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The graph's input and output: a FLOAT tensor of ndim dims; a dim < 0 is symbolic, named by
 * sym (e.g. "batch"). */
void onnx_graph_input(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const char *sym);
void onnx_graph_output(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const char *sym);

/* Initializers (constant tensors); data is copied, names must be unique.
 *   onnx_init_f32   FLOAT from n = prod(dims) floats
 *   onnx_init_f16   FLOAT16 from floats, each rounded to the nearest half (util/half.h)
 *   onnx_init_i64   INT64
 *   onnx_init_raw   any type from its raw little-endian bytes (INT4/UINT4: two per byte, see
 *                   onnx_pack_int4), nbytes as the type needs for prod(dims) elements */
void onnx_init_f32(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const float *data);
void onnx_init_f16(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const float *data);
void onnx_init_i64(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const int64_t *data);
void onnx_init_raw(onnx_graph *g, const char *name, onnx_dtype t, int ndim, const int64_t *dims,
                   const void *raw, size_t nbytes);
/* A one-element FLOAT or INT64 initializer of shape () or (1) (ndim 0 or 1). */
void onnx_init_scalar_f32(onnx_graph *g, const char *name, int ndim, float v);
void onnx_init_ints(onnx_graph *g, const char *name, int n, ...); /* INT64 (n) */

/* ONNX's INT4/UINT4 packing (onnx.proto, "INT4 and UINT4 are packed two per byte"): element 2i
 * in the low nibble of byte i, element 2i + 1 in its high nibble, over the flattened tensor; an
 * odd count leaves the last high nibble 0. dst holds (n + 1) / 2 bytes; codes are taken mod 16
 * (two's complement for INT4). */
void onnx_pack_int4(uint8_t *dst, const int8_t *codes, size_t n);

/* A node of op_type (in domain, NULL for the default one) with nin inputs and nout outputs
 * ("" for an omitted optional input). Returns the node's index for onnx_attr_*, -1 after an
 * error. */
int onnx_node(onnx_graph *g, const char *op_type, const char *domain, int nin,
              const char *const *inputs, int nout, const char *const *outputs);
/* Attributes of node (its index). */
void onnx_attr_int(onnx_graph *g, int node, const char *name, int64_t v);
void onnx_attr_float(onnx_graph *g, int node, const char *name, float v);
void onnx_attr_string(onnx_graph *g, int node, const char *name, const char *v);
void onnx_attr_ints(onnx_graph *g, int node, const char *name, int n, const int64_t *v);

/* Shorthands for the common arities: one output named out, returned (borrowed, as onnx_name). */
const char *onnx_op1(onnx_graph *g, const char *op, const char *out, const char *a);
const char *onnx_op2(onnx_graph *g, const char *op, const char *out, const char *a, const char *b);
const char *onnx_op3(onnx_graph *g, const char *op, const char *out, const char *a, const char *b,
                     const char *c);

/* Writes g as a model (IR ONNX_IR_VERSION, opset ONNX_OPSET, plus com.microsoft version 1 if a
 * node uses it) with nmeta metadata_props pairs, to path whole or not at all (written beside
 * and renamed: a failure never leaves a partial file under path). 0, or -1 with a message in
 * err (the graph's own error first). g stays usable. */
int onnx_graph_save(onnx_graph *g, const char *path, const char *producer_version,
                    const char *const *meta_keys, const char *const *meta_vals, int nmeta,
                    char *err, size_t errlen);

#endif
