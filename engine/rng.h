/*
 * rng.h: the one random number generator of gplq (splitmix64 seeding xoshiro256**), small
 * enough to live in a header. Its whole state is the struct, so a checkpoint that saves the
 * struct resumes the exact same stream.
 */
#ifndef GPLQ_RNG_H
#define GPLQ_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct { uint64_t s[4]; } rng_t;

static inline uint64_t rng_splitmix64_(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64_(&seed);
}

static inline uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s, t = s[1] << 17;
    uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
static inline float rng_uniform(rng_t *r) { return (float)(rng_next(r) >> 40) / 16777216.0f; }

/* Uniform integer in [0, n), n > 0 (Lemire's multiply; the tiny bias is irrelevant here). */
static inline uint32_t rng_below(rng_t *r, uint32_t n) {
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Standard normal (Box-Muller, one value per call). */
static inline float rng_normal(rng_t *r) {
    double u1 = ((rng_next(r) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (rng_next(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Normal(0, std) truncated to [lo, hi] by rejection (timm's trunc_normal_). */
static inline float rng_trunc_normal(rng_t *r, float std, float lo, float hi) {
    for (;;) {
        float x = rng_normal(r) * std;
        if (x >= lo && x <= hi) return x;
    }
}

#endif
