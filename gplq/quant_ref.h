/*
 * quant_ref.h: reference versions of the quantizer kernels in quant.h: plain loops, double
 * accumulators, libm's nearbyintf for rounding, no threads. They define what the fast versions
 * must compute; only tests and benchmarks call them. Same signatures and conventions as the
 * functions they shadow in quant.h.
 *
 * (The packed weight format's reference functions, quant_pack_ref and friends, are declared
 * in quant.h because production code calls them: they are the only version. They live in
 * quant_ref.c with these.)
 */
#ifndef GPLQ_QUANT_REF_H
#define GPLQ_QUANT_REF_H

#include "gplq/quant.h"

void lsq_forward_ref(const lsq_quantizer *q, float *out, const float *in, int rows, int cols);
void lsq_backward_ref(lsq_quantizer *q, float *din, const float *dout, const float *in, int rows,
                      int cols);
int quant_weight_ref(float *steps, int8_t *codes, float *deq, int *choice, const float *w,
                     int rows, int cols, int bits, const float *pcts, int npct, char *err,
                     size_t errlen);

#endif
