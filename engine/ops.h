/*
 * ops.h: the ViT's operations, each a forward/backward pair in the llm.c manner.
 *
 * Conventions: outputs first, then inputs, dimensions last. Backward functions ACCUMULATE
 * (+=) into every gradient they are given, so the caller zeroes gradients once per step; any
 * gradient pointer documented as optional may be NULL to skip that work. Shapes are row-major
 * and written as comments: inp (N, C) means N rows of C floats.
 *
 * Every matrix product goes through OpenBLAS sgemm, or the linear layers' through gemm_bf16 where
 * matmul_set_precision asks for it. ops_ref.h has slow, obviously correct
 * versions of the same functions; tests/test_ops.c holds one against the other.
 */
#ifndef GPLQ_OPS_H
#define GPLQ_OPS_H

#include <stddef.h>

/* The precision of matmul_forward's and matmul_backward's products on the calling thread.
 * MATMUL_FP32 (sgemm) is the default and the reference. MATMUL_BF16 rounds both operands to
 * BF16 and sums in FP32 (gemm_bf16.h): up to twice the products per cycle, a relative error
 * of up to 2^-8 per operand; on CPUs without AVX512-BF16 emulated (the same numbers, slower than
 * FP32: gemm_bf16.h). The attention's own products (q k^T, att v) stay FP32. Thread-local, so
 * a run sets it around itself without touching others: matmul_set_precision returns the
 * setting it replaces, for the caller to restore. */
enum matmul_precision { MATMUL_FP32, MATMUL_BF16 };
enum matmul_precision matmul_set_precision(enum matmul_precision p);

/* out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC). bias may be NULL. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC);
/* dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp; dbias (OC) += colsum(dout).
 * dinp, dweight, dbias are optional. */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC);

/* out (N, C) = (inp - mean) * rstd * weight + bias, per row; also saves mean (N), rstd (N). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, float eps);
/* dinp (N, C) +=, dweight (C) +=, dbias (C) += ; dweight and dbias optional. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C);

/* Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), elementwise on n values. */
void gelu_forward(float *out, const float *inp, size_t n);
/* dinp += gelu'(inp) * dout */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/*
 * Multi-head self-attention, split in two so that quantizers can sit on its operands:
 *   att = softmax(q k^T * hd^-0.5)        attention_softmax_*
 *   out = att' v                          attention_value_*   (att' = att, or att quantized)
 * qkv (B, T, 3C) holds q | k | v along its last axis, heads contiguous inside each (timm's
 * reshape(B, T, 3, NH, hd)); att (B, NH, T, T); out (B, T, C) with heads concatenated.
 */
void attention_softmax_forward(float *att, const float *qkv, int B, int T, int C, int NH);
/* dqkv (q and k parts) += from datt (B, NH, T, T) through the softmax and the scores.
 * datt is overwritten (with the gradient of the scores): it is the caller's scratch, and reusing
 * it saves a B*NH*T*T buffer per call on the hot path. */
void attention_softmax_backward(float *dqkv, float *datt, const float *att, const float *qkv,
                                int B, int T, int C, int NH);
void attention_value_forward(float *out, const float *att, const float *qkv, int B, int T, int C,
                             int NH);
/* datt += dout v^T ; dqkv (v part) += att^T dout. */
void attention_value_backward(float *datt, float *dqkv, const float *dout, const float *att,
                              const float *qkv, int B, int T, int C, int NH);

/* Patches of images (B, Cin, H, W) as rows: cols (B * G * G, Cin * P * P), G = H / P, in the
 * order of a Conv2d weight (Cin, P, P) flattened, patches row-major over the grid. */
void im2col_forward(float *cols, const float *img, int B, int Cin, int H, int P);
/* dimg += the gradient of the rows scattered back to their pixels. */
void im2col_backward(float *dimg, const float *dcols, int B, int Cin, int H, int P);

/*
 * Softmax cross-entropy with label smoothing s, as torch's cross_entropy(label_smoothing=s):
 * the target distribution is (1 - s) onehot + s / K. probs (B, K) receives the softmax;
 * returns the mean loss over the batch. dlogits (optional) += (probs - target) * dloss / B.
 */
float crossentropy_forward_backward(float *probs, float *dlogits, const float *logits,
                                    const int *targets, int B, int K, float smoothing,
                                    float dloss);

/* y += a * x on n values (residual adds, gradient sums). */
void axpy(float *y, float a, const float *x, size_t n);

#endif
