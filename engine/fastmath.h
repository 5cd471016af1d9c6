/*
 * fastmath.h: the inline elementwise math the engine's ops share (ops.c, swin_ops.c), in a
 * header so that each loop calling it is inlined and vectorized by gcc; one definition, so the
 * ViT's and the Swin's softmax round alike.
 */
#ifndef GPLQ_FASTMATH_H
#define GPLQ_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* e^x for x in [-87, 88], max relative error ~2 ulp: Cephes' expf polynomial on the reduced
 * argument, with the power of two assembled in the exponent bits. Branch-free so that loops
 * calling it vectorize. */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln2) with the 1.5 * 2^23 trick, exact for |n| < 2^22 */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float z = r * r;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
