/*
 * adamw.c: see adamw.h. Arithmetic in the order torch uses, so a step matches to rounding.
 */
#include "engine/adamw.h"

#include <math.h>
#include <stdlib.h>

int adamw_init(adamw_state *s, size_t n) {
    s->n = n;
    s->t = 0;
    s->m = calloc(n, sizeof(float));
    s->v = calloc(n, sizeof(float));
    if (!s->m || !s->v) {
        adamw_free(s);
        return -1;
    }
    return 0;
}

void adamw_free(adamw_state *s) {
    free(s->m);
    free(s->v);
    s->m = s->v = NULL;
}

void adamw_step(adamw_state *s, float *params, const float *grads, const uint8_t *decay_mask,
                const adamw_hparams *h, float lr) {
    s->t++;
    float bc1 = 1.0f - powf(h->beta1, (float)s->t), bc2 = 1.0f - powf(h->beta2, (float)s->t);
    float step = lr / bc1, bc2s = sqrtf(bc2);
    float *m = s->m, *v = s->v;
    #pragma omp parallel for simd if (s->n > 65536)
    for (size_t i = 0; i < s->n; i++) {
        float g = grads[i];
        if (!decay_mask || decay_mask[i]) params[i] *= 1.0f - lr * h->weight_decay;
        m[i] = h->beta1 * m[i] + (1.0f - h->beta1) * g;
        v[i] = h->beta2 * v[i] + (1.0f - h->beta2) * g * g;
        params[i] -= step * m[i] / (sqrtf(v[i]) / bc2s + h->eps);
    }
}

float adamw_lr_schedule(int64_t step, int64_t total, int64_t warmup, float base_lr, float min_lr) {
    if (step < warmup) return base_lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup) return base_lr;
    double p = (double)(step - warmup) / (double)(total - warmup);
    if (p > 1) p = 1;
    return (float)(min_lr + 0.5 * (base_lr - min_lr) * (1.0 + cos(M_PI * p)));
}

float adamw_clip_grad_norm(float *grads, size_t n, float max_norm) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)grads[i] * grads[i];
    float norm = (float)sqrt(s);
    if (norm > max_norm) {
        float k = max_norm / (norm + 1e-6f);
        for (size_t i = 0; i < n; i++) grads[i] *= k;
    }
    return norm;
}
