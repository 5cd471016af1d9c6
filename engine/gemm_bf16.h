/*
 * gemm_bf16.h: matrix products in BF16 with FP32 sums, on CPUs with AVX512-BF16.
 *
 * Issue 16 asks for 2.5x PyTorch's stage-1 step on an AMD EPYC, where PyTorch's FP32 step is
 * already within 60-70% of the same-run sgemm rate: no FP32 path can get there. A BF16 product
 * (vdpbf16ps: two multiply-adds per FP32 lane) does twice the work of an FP32 FMA per
 * instruction. Debian's OpenBLAS 0.3.21 is built without its sbgemm, hence this kernel.
 *
 * The arguments are cblas_sgemm's in row-major order, floats in and out: each element of A and
 * B is rounded to BF16 (to nearest even) as it is packed, the products of two BF16 are exact in
 * FP32, and they are summed in FP32. So the result is the exact product of the rounded inputs up
 * to the order of FP32 sums, which is what gemm_bf16_ref defines and the tests hold it to.
 */
#ifndef GPLQ_GEMM_BF16_H
#define GPLQ_GEMM_BF16_H

#include "util/half.h" /* bf16_round, the rounding this product does */

/* 1 if this CPU runs gemm_bf16 (AVX512F, AVX512BW and AVX512-BF16), else 0. */
int gemm_bf16_available(void);

/* C (M x N, ldc) = alpha * op(A) op(B) + beta * C, op(A) M x K, op(B) K x N, row-major as
 * cblas_sgemm(CblasRowMajor, ...): transa 0 reads A[i * lda + k], 1 reads A[k * lda + i];
 * transb 0 reads B[k * ldb + j], 1 reads B[j * ldb + k]. beta 0 never reads C. Runs on the
 * OpenMP threads. Where gemm_bf16_available(), with its own kernel (and packing buffers of
 * (M + N) x min(K, 256) halfwords); elsewhere it rounds copies of A and B to BF16 and calls
 * sgemm, the same numerics up to the order of FP32 sums (and slower than sgemm alone); where
 * that memory cannot be had either, gemm_bf16_ref. */
void gemm_bf16(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* The same product in FP32: cblas_sgemm with these arguments. The one mapping of them to
 * CBLAS's, for the FP32 route beside gemm_bf16 (engine/ops.c), its emulation here and the
 * bench that times the two. */
void gemm_fp32(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* The definition: each input rounded by bf16_round, the products summed in double, in order. */
void gemm_bf16_ref(int transa, int transb, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc);

#endif
