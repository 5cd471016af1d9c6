/*
 * ops_ref.h: reference versions of the ops in ops.h: plain loops, double accumulators, no BLAS.
 * They define what the fast versions must compute; only tests and benchmarks call them.
 * Same signatures and conventions as ops.h.
 */
#ifndef GPLQ_OPS_REF_H
#define GPLQ_OPS_REF_H

#include <stddef.h>

void matmul_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int C, int OC);
void matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int C, int OC);
void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int N, int C, float eps);
void layernorm_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int N, int C);
void gelu_forward_ref(float *out, const float *inp, size_t n);
void gelu_backward_ref(float *dinp, const float *inp, const float *dout, size_t n);
void attention_softmax_forward_ref(float *att, const float *qkv, int B, int T, int C, int NH);
void attention_softmax_backward_ref(float *dqkv, const float *datt, const float *att,
                                    const float *qkv, int B, int T, int C, int NH);
void attention_value_forward_ref(float *out, const float *att, const float *qkv, int B, int T,
                                 int C, int NH);
void attention_value_backward_ref(float *datt, float *dqkv, const float *dout, const float *att,
                                  const float *qkv, int B, int T, int C, int NH);

#endif
