/*
 * half.h: IEEE 754 binary16 (FP16) to and from float, for the files that store tensors in half
 * precision (QwT's terms in model.q.safetensors and the ONNX files). half_from_float rounds to
 * nearest, ties to even, as numpy's astype(float16) and torch's .half() do; every half is exactly
 * a float, so half_round(x) is the float a stored half gives back.
 */
#ifndef GPLQ_HALF_H
#define GPLQ_HALF_H

#include <stdint.h>

uint16_t half_from_float(float f);
float half_to_float(uint16_t h);
/* half_to_float(half_from_float(f)) */
float half_round(float f);

#endif
