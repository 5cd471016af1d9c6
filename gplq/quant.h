/*
 * quant.h: GPLQ's quantizers (see GPLQ-METHOD.md, "Quantizers" and "Stage 2").
 *
 *   lsq_*          activation fake quantization with a learned step (LSQ, Esser et al. 2020):
 *                  the quantizer, its forward/backward pair, and the observer that sets its
 *                  initial steps from calibration batches.
 *   quant_weight   the stage-2 weight quantizer (RepQ-ViT's, symmetric): per output channel,
 *                  the clip among |w| percentiles with the lowest reconstruction error.
 *   quant_pack_*   the packed format of quantized weights; the _ref functions define it.
 *   quant_quantile torch.quantile's linear interpolation, bit for bit.
 *
 * A quantizer has `channels` steps; step c covers the cols/channels consecutive columns
 * [c * w, (c + 1) * w) of a (rows, cols) row-major input, w = cols / channels. One code path
 * serves every granularity: per tensor is channels = 1, per channel (one step per input
 * feature of a linear layer) is channels = cols, and the engine's q|k|v buffer (rows, 3C) with
 * one step each for q, k and v is channels = 3.
 *
 * Codes: q = clamp(round(x / s), Qn, Qp) with round half to even (torch.round); signed
 * [Qn, Qp] = [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1]; bits 2..8.
 *
 * quant_ref.h has slow, obviously correct versions of lsq_forward, lsq_backward and
 * quant_weight; tests/test_quant.c holds these against them and against PyTorch
 * (tests/ref/gen_quant_ref.py).
 *
 * Errors: functions returning int give 0 on success and -1 on failure with a message in the
 * caller's err buffer (errlen bytes, always NUL-terminated; err may be NULL).
 */
#ifndef GPLQ_QUANT_H
#define GPLQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/rng.h"

#define QUANT_BITS_MIN 2
#define QUANT_BITS_MAX 8

/* The smallest step anything here sets or accepts. A step of 0 makes x / s infinite or NaN
 * (0 / 0) in both passes, and a NaN step poisons every later update; a column that was exactly
 * zero on the whole calibration set (a dead feature, an all-zero weight row) would otherwise
 * get one. With the floor, zeros still quantize to exactly 0 and anything that appears later
 * saturates at the clamp bound, which LSQ's gradient then pushes the step up from. */
#define QUANT_STEP_MIN 1e-8f

/* Clamp bounds of a code for bits and signedness. */
int quant_qn(int bits, int is_signed);
int quant_qp(int bits, int is_signed);

/* ---------------------------------------------------------------------------------------- */
/* LSQ activation quantizer */

typedef struct {
    int bits;       /* 2..8 */
    int is_signed;  /* 1: [-2^(b-1), 2^(b-1) - 1]; 0: [0, 2^b - 1] (post-softmax) */
    int channels;   /* number of steps; each covers cols / channels consecutive columns */
    float *step;    /* (channels) owned; learned by gradient descent */
    float *dstep;   /* (channels) owned; lsq_backward accumulates here, lsq_zero_grad clears */
} lsq_quantizer;

/* Allocates a quantizer with every step 1 and dstep 0. bits in 2..8, channels >= 1. On
 * success *q owns step and dstep (release with lsq_free); on failure *q is zeroed. */
int lsq_init(lsq_quantizer *q, int bits, int is_signed, int channels, char *err, size_t errlen);
/* Frees what lsq_init allocated and zeroes *q; safe on a zeroed struct. */
void lsq_free(lsq_quantizer *q);
/* -1 with a message unless cols >= 1 is a multiple of q->channels: the precondition of
 * lsq_forward and lsq_backward, for the caller to check once when it wires a layer. */
int lsq_check_shape(const lsq_quantizer *q, int cols, char *err, size_t errlen);
/* dstep = 0. */
void lsq_zero_grad(lsq_quantizer *q);
/* Raises every step below QUANT_STEP_MIN (or NaN) to QUANT_STEP_MIN: call after each
 * optimizer update, since gradient descent can push a step through zero. */
void lsq_clamp_steps(lsq_quantizer *q);
/* 1 / sqrt(numel_per_step * Qp), LSQ's gradient scale, numel_per_step = rows * cols / channels
 * (every element that shares a step). */
float lsq_grad_scale(const lsq_quantizer *q, int rows, int cols);

/* out (rows, cols) = clamp(round(in / s), Qn, Qp) * s with each column's step. out may alias
 * in. Requires cols a multiple of q->channels and steps > 0 (lsq_check_shape, lsq_clamp_steps). */
void lsq_forward(const lsq_quantizer *q, float *out, const float *in, int rows, int cols);

/*
 * Given dout (rows, cols), the gradient of the loss w.r.t. lsq_forward's out, and the same in:
 *   din  (rows, cols) = dout where Qn <= in / s <= Qp, else 0 (the straight-through estimator).
 *        din is WRITTEN, not accumulated: this differs from the ops.h convention, because the
 *        quantizer sits between two ops and its input gradient is the whole gradient there.
 *        din may alias dout (in place).
 *   dstep (channels) += g * sum over the step's elements of dout * t, with
 *        t = round(in / s) - in / s inside the range, Qn or Qp (the bound hit) outside, and
 *        g = lsq_grad_scale(q, rows, cols).
 * Deterministic: rows are split into a fixed number of parts that does not depend on the
 * number of threads, and partial sums are added in a fixed order.
 */
void lsq_backward(lsq_quantizer *q, float *din, const float *dout, const float *in, int rows,
                  int cols);

/* ---------------------------------------------------------------------------------------- */
/* Step initialization from calibration data (quantization off) */

typedef enum {
    LSQ_INIT_ABSMAX,     /* s = max |x| / Qp per step (the per-channel quantizers) */
    LSQ_INIT_PERCENTILE, /* from the 1st and 99th percentiles of the step's values:
                            signed s = max(|p1|, |p99|) / Qp; unsigned s = p99 / Qp */
} lsq_init_kind;

/* Default number of values kept per step for percentiles: the percentiles of a uniform sample
 * of 2^20 are within ~1e-4 in rank of the whole set's, and the sample costs 4 MB per step. */
#define LSQ_OBSERVER_CAP_DEFAULT ((size_t)1 << 20)

/* Accumulates statistics over calibration batches for one quantizer. Percentiles are taken of
 * a sample: every value while fewer than cap have been seen (then exact), after that a uniform
 * reservoir sample (Vitter's algorithm R) drawn with rng, so results depend only on the seed and
 * the order of the values. NaN and infinities are skipped and counted: they say nothing about the
 * range, and a single infinity would make the step infinite. */
typedef struct {
    lsq_init_kind kind;
    int channels;        /* number of steps */
    float *absmax;       /* (channels) owned; ABSMAX: running max |x| */
    float **sample;      /* (channels) owned arrays of up to cap values; PERCENTILE */
    size_t *held;        /* (channels) owned: values in sample[c] */
    size_t *alloc;       /* (channels) owned: allocated length of sample[c] (grows to cap) */
    uint64_t *seen;      /* (channels) owned: finite values offered to step c */
    size_t cap;          /* values kept per step */
    uint64_t nonfinite;  /* NaN / inf values skipped */
    rng_t rng;
} lsq_observer;

/* New observer for a quantizer with `channels` steps; cap = 0 means LSQ_OBSERVER_CAP_DEFAULT
 * (only PERCENTILE uses it; the sample grows as values arrive). Release with
 * lsq_observer_free; on failure *o is zeroed. */
int lsq_observer_init(lsq_observer *o, lsq_init_kind kind, int channels, size_t cap,
                      uint64_t seed, char *err, size_t errlen);
void lsq_observer_free(lsq_observer *o);
/* Adds one batch in (rows, cols), cols a multiple of channels, laid out as for lsq_forward.
 * Fails on a bad shape or out of memory (the observer stays usable and unchanged in the
 * first case). */
int lsq_observer_update(lsq_observer *o, const float *in, int rows, int cols, char *err,
                        size_t errlen);
/* The 1st and 99th percentiles of step c's values so far (PERCENTILE only), as
 * torch.quantile(values, 0.01 / 0.99). Fails if the step saw no values or out of memory. */
int lsq_observer_percentiles(const lsq_observer *o, int c, float *p1, float *p99, char *err,
                             size_t errlen);
/* Sets q->step from the statistics (floored at QUANT_STEP_MIN). q->channels must equal
 * o->channels; fails, leaving q unchanged, if a step saw no values. */
int lsq_observer_steps(const lsq_observer *o, lsq_quantizer *q, char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------- */
/* Stage 2 weight quantizer */

/* Percentile of sorted (n >= 1, ascending) at q in [0, 1], as torch.quantile(x, q) with
 * linear interpolation on float32 data, bit for bit: rank = q * (n - 1) in float32, then
 * torch's lerp, which torch's CPU kernel rounds once (a fused multiply-add). */
float quant_quantile(const float *sorted, size_t n, float q);

/* RepQ-ViT's clipping percentiles of |w|. */
#define QUANT_WEIGHT_NPCT 4
extern const float quant_weight_default_pcts[QUANT_WEIGHT_NPCT]; /* 0.999 0.9999 0.99999 1 */

/*
 * Symmetric signed per-output-channel quantization of w (rows, cols) (a linear layer's
 * (out, in) weight) to `bits` bits. For each row: for each clipping percentile p of pcts,
 * clip = quant_quantile(sorted |w_row|, p), s = max(clip / Qp, QUANT_STEP_MIN), and the
 * reconstruction error sum((w - clamp(round(w / s), Qn, Qp) * s)^2); the row keeps the p with
 * the lowest error, the first on a tie.
 * Outputs (caller-owned): steps (rows); codes (rows, cols); deq (rows, cols) = codes * step,
 * exactly what quant_dequantize_ref gives back from the packed codes, optional (NULL); choice (rows) = index into pcts of each row's percentile, optional.
 * pcts: npct values in [0, 1], or NULL for quant_weight_default_pcts (npct ignored).
 * Fails on bad arguments or out of memory.
 */
int quant_weight(float *steps, int8_t *codes, float *deq, int *choice, const float *w, int rows,
                 int cols, int bits, const float *pcts, int npct, char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------- */
/* Packed quantized weights */

/*
 * A quantized weight is stored as rows of packed codes plus one float step per row; a row
 * starts on a byte boundary. The code type follows the bit width:
 *   QUANT_I4 (bits 2..4): two codes per byte, the first in the low nibble, each nibble the
 *            code in 4-bit two's complement; an odd row ends with a zero high nibble.
 *   QUANT_I8 (bits 5..8): one code per byte, two's complement (int8_t).
 * quant_pack_ref / quant_unpack_ref / quant_dequantize_ref are the definition; any faster
 * variant must agree with them exactly.
 */
typedef enum { QUANT_I4, QUANT_I8, QUANT_NTYPES } quant_type;

typedef struct {
    const char *name;   /* "I4", as an artifact's header would name it */
    int bits_max;       /* widest code the type holds */
    int codes_per_byte;
} quant_type_traits;

extern const quant_type_traits quant_traits[QUANT_NTYPES];

/* The type that stores codes of `bits` bits (2..8). */
quant_type quant_type_for_bits(int bits);
/* Bytes of one packed row of n codes. */
size_t quant_row_bytes(quant_type t, int n);
/* Packs n codes into dst (quant_row_bytes(t, n) bytes). Fails, with the index in the message,
 * if a code does not fit the type. */
int quant_pack_ref(quant_type t, uint8_t *dst, const int8_t *codes, int n, char *err,
                   size_t errlen);
/* codes (n) from a packed row. */
void quant_unpack_ref(quant_type t, int8_t *codes, const uint8_t *src, int n);
/* out (n) = code * step from a packed row. */
void quant_dequantize_ref(quant_type t, float *out, const uint8_t *src, float step, int n);

#endif
