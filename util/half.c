/*
 * half.c: see half.h.
 */
#include "util/half.h"

#include <string.h>

uint16_t half_from_float(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)(x >> 16 & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0); /* inf, NaN */
    if (ax >= 0x477ff000) return sign | 0x7c00; /* rounds past 65504: inf */
    if (ax < 0x38800000) {
        /* subnormal half (or zero): value / 2^-24, rounded to nearest even */
        if (ax < 0x33000000) return sign; /* below half the smallest subnormal */
        uint32_t m = (ax & 0x7fffff) | 0x800000; /* value = m 2^(e - 150) */
        int shift = 126 - (int)(ax >> 23);         /* value 2^24 = m 2^-shift, shift 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    /* normal: rebias the exponent (127 -> 15), keep 10 mantissa bits, round to nearest even;
     * a carry out of the mantissa correctly bumps the exponent */
    uint32_t h = ((ax >> 23) - 112) << 10 | (ax >> 13 & 0x3ff);
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

/* Exact: every half (subnormals included) is a float. NaN payloads are kept, shifted into
 * place, so that a file's bits survive a round trip through float. */
float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13); /* inf (mant 0) or NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    } else {
        /* zero or subnormal: mant * 2^-24; the product is exact in float */
        float v = (float)mant * 0x1p-24f;
        memcpy(&bits, &v, 4);
        bits |= sign; /* keeps -0 */
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float half_round(float f) { return half_to_float(half_from_float(f)); }
