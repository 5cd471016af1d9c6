/*
 * sha256.h: SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), incremental.
 *
 * Content addressing of uploads and artifacts, and (issue 5) token hashes and webhook
 * signatures: storage/, api/, worker/ and the client in cli/ all use it, so it lives in util/.
 * sha256_* are the fast ones (libcrypto), sha256_ref_* the plain C definition they are tested
 * against (see sha256.c).
 */
#ifndef GPLQ_SHA256_H
#define GPLQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* The fast one (OpenSSL's libcrypto inside; no allocation, nothing to free). */
typedef struct {
    _Alignas(16) unsigned char opaque[128];
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);

/* The reference: plain C, the definition the fast one is tested against. */
typedef struct {
    uint32_t h[8];
    uint64_t len;       /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} sha256_ref_ctx;

void sha256_ref_init(sha256_ref_ctx *c);
void sha256_ref_update(sha256_ref_ctx *c, const void *data, size_t n);
void sha256_ref_final(sha256_ref_ctx *c, uint8_t out[32]);
/* One call: out = SHA-256(data). */
void sha256(const void *data, size_t n, uint8_t out[32]);
/* 64 lowercase hex digits and a NUL into hex (65 bytes). */
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* HMAC-SHA256(key, data) into out. */
void sha256_hmac(const void *key, size_t keylen, const void *data, size_t n, uint8_t out[32]);
/* Constant-time comparison of n bytes: 1 if equal (for token hashes and signatures). */
int sha256_equal(const void *a, const void *b, size_t n);

#endif
