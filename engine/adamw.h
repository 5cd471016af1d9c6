/*
 * adamw.h: AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected moments),
 * over a flat parameter array, and the learning-rate schedule (linear warmup, cosine decay).
 */
#ifndef GPLQ_ADAMW_H
#define GPLQ_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} adamw_hparams;

typedef struct {
    size_t n;
    float *m, *v;     /* (n) first and second moments, owned */
    int64_t t;        /* steps taken, for bias correction */
} adamw_state;

int adamw_init(adamw_state *s, size_t n);  /* zeroed moments; -1 if out of memory */
void adamw_free(adamw_state *s);
/* One step on params (n) with grads (n). decay_mask (n bytes, optional): weight decay only where
 * it is 1 (matrices; not biases, norms, tokens). lr is the scheduled rate for this step. */
void adamw_step(adamw_state *s, float *params, const float *grads, const uint8_t *decay_mask,
                const adamw_hparams *h, float lr);

/* lr at step (0-based) of total: linear warmup from 0 over warmup steps, then cosine from
 * base_lr down to min_lr at total. */
float adamw_lr_schedule(int64_t step, int64_t total, int64_t warmup, float base_lr, float min_lr);

/* Scales grads (n) so that their global L2 norm is at most max_norm (> 0); returns the norm
 * before clipping. */
float adamw_clip_grad_norm(float *grads, size_t n, float max_norm);

#endif
