/*
 * half.h: IEEE 754 binary16 (FP16) to and from float, for the files that store tensors in half
 * precision (QwT's terms in model.q.safetensors and the ONNX files). half_from_float rounds to
 * nearest, ties to even, as numpy's astype(float16) and torch's .half() do; every half is exactly
 * a float, so half_round(x) is the float a stored half gives back.
 *
 * And bfloat16 (BF16), the top 16 bits of a float: what checkpoints trained in mixed precision
 * store, and what gemm_bf16 rounds its operands to. Inline, since gemm_bf16 converts every
 * operand it packs.
 */
#ifndef GPLQ_HALF_H
#define GPLQ_HALF_H

#include <stdint.h>

uint16_t half_from_float(float f);
float half_to_float(uint16_t h);
/* half_to_float(half_from_float(f)) */
float half_round(float f);

/* f rounded to the nearest BF16 (ties to even), as its 16 bits; NaN stays a quiet NaN. */
static inline uint16_t bf16_from_float(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);
}
/* Exact: a BF16 is the top half of a float. */
static inline float bf16_to_float(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}
/* bf16_to_float(bf16_from_float(f)) */
static inline float bf16_round(float f) { return bf16_to_float(bf16_from_float(f)); }

#endif
