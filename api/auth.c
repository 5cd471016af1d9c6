/*
 * auth.c: see auth.h.
 */
#include "api/auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "util/sha256.h"

#define AUTH_PREFIX "gplq_"
#define AUTH_PREFIX_LEN 5
#define AUTH_SECRET_LEN 43   /* 32 bytes in base64url without padding */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int random_bytes(uint8_t *out, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(out + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)k;
    }
    return 0;
}

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void hash_of(const char *token, char *hash_hex) {
    uint8_t d[32];
    sha256(token, strlen(token), d);
    sha256_hex(d, hash_hex);
}

int auth_token_new(char *token, char *id, char *hash_hex) {
    uint8_t sel[8], secret[33];
    if (random_bytes(sel, sizeof sel) || random_bytes(secret, 32)) return -1;
    secret[32] = 0;
    char *o = token;
    memcpy(o, AUTH_PREFIX, AUTH_PREFIX_LEN);
    o += AUTH_PREFIX_LEN;
    for (int i = 0; i < 8; i++) o += sprintf(o, "%02x", sel[i]);
    /* base64url, 3 bytes to 4 characters; 32 bytes give 43 characters (the last group of two
     * bytes gives three), no padding */
    for (int i = 0; i < 32; i += 3) {
        uint32_t v = (uint32_t)secret[i] << 16 | (uint32_t)secret[i + 1] << 8 |
                     (i + 2 < 32 ? secret[i + 2] : 0);
        int chars = i + 2 < 32 ? 4 : 3;
        for (int k = 0; k < chars; k++) *o++ = b64url[(v >> (18 - 6 * k)) & 63];
    }
    *o = '\0';
    snprintf(id, AUTH_ID_LEN + 1, "t_%.16s", token + AUTH_PREFIX_LEN);
    hash_of(token, hash_hex);
    return 0;
}

int auth_token_parse(const char *token, char *id, char *hash_hex) {
    if (!token || strlen(token) != AUTH_TOKEN_LEN || strncmp(token, AUTH_PREFIX, AUTH_PREFIX_LEN))
        return -1;
    for (int i = 0; i < 16; i++)
        if (!is_hex(token[AUTH_PREFIX_LEN + i])) return -1;
    for (const char *p = token + AUTH_PREFIX_LEN + 16; *p; p++)
        if (!strchr(b64url, *p)) return -1;
    snprintf(id, AUTH_ID_LEN + 1, "t_%.16s", token + AUTH_PREFIX_LEN);
    hash_of(token, hash_hex);
    return 0;
}

int auth_name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AUTH_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- download links */

int auth_link_key_new(unsigned char key[AUTH_LINK_KEY_LEN]) {
    return random_bytes(key, AUTH_LINK_KEY_LEN);
}

void auth_link_sign(const unsigned char *key, const char *path, long long expires, char sig[65]) {
    char msg[4200];
    int n = snprintf(msg, sizeof msg, "%s\n%lld", path, expires);
    if (n < 0 || n >= (int)sizeof msg) n = 0; /* no route is that long: an empty message */
    uint8_t d[32];
    sha256_hmac(key, AUTH_LINK_KEY_LEN, msg, (size_t)n, d);
    sha256_hex(d, sig);
}

int auth_link_check(const unsigned char *key, const char *path, const char *expires,
                    const char *sig, long long now, const char **why) {
    *why = "it needs both expires and sig";
    if (!expires || !sig) return -1;
    char *end;
    errno = 0;
    long long e = strtoll(expires, &end, 10);
    *why = "expires is not a time";
    if (!*expires || *end || errno || e < 0) return -1;
    char want[65];
    auth_link_sign(key, path, e, want);
    /* compared in constant time: how far a guess matches must not show in the timing */
    *why = "the signature does not match this path and time";
    if (strlen(sig) != 64 || !sha256_equal(want, sig, 64)) return -1;
    *why = "it has expired";
    if (now > e) return -1;
    *why = NULL;
    return 0;
}
