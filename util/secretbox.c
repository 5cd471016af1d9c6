/*
 * secretbox.c: see secretbox.h.
 */
#include "util/secretbox.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "sb1:"
#define NONCE 12
#define TAG 16

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* n bytes from 2n hex characters; -1 if any is not hex. */
static int unhex(const char *s, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hi < 0 ? -1 : hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void tohex(const uint8_t *b, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int key_write(const char *path, char *err, size_t errlen) {
    uint8_t key[SECRETBOX_KEY_BYTES];
    char line[2 * SECRETBOX_KEY_BYTES + 2], tmp[4096];
    if (RAND_bytes(key, sizeof key) != 1) {
        snprintf(err, errlen, "cannot draw a key: libcrypto's random source failed");
        return -1;
    }
    tohex(key, sizeof key, line);
    strcat(line, "\n");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create the key file %.900s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(line);
    int ok = write(fd, line, n) == (ssize_t)n && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(tmp, path)) {
        if (ok) e = errno;
        unlink(tmp);
        snprintf(err, errlen, "cannot write the key file %.900s: %s", path, strerror(e));
        return -1;
    }
    return 0;
}

int secretbox_key_load(const char *path, int create, uint8_t key[SECRETBOX_KEY_BYTES], char *err,
                       size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        if (key_write(path, err, errlen)) return -1;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot read the key file %.900s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    char buf[2 * SECRETBOX_KEY_BYTES + 8];
    ssize_t n = fstat(fd, &st) ? -1 : read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read the key file %.900s: %s", path, strerror(errno));
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "the key file %.900s can be read by others (mode %03o): chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    if (n != 2 * SECRETBOX_KEY_BYTES || unhex(buf, key, SECRETBOX_KEY_BYTES)) {
        snprintf(err, errlen, "the key file %.900s is not 64 hex characters", path);
        return -1;
    }
    return 0;
}

int secretbox_is_sealed(const char *s) { return s && !strncmp(s, PREFIX, strlen(PREFIX)); }

char *secretbox_seal(const uint8_t key[SECRETBOX_KEY_BYTES], const char *plain, const char *aad) {
    size_t n = strlen(plain), total = NONCE + n + TAG;
    uint8_t *raw = malloc(total);
    char *out = malloc(strlen(PREFIX) + 2 * total + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len, ok = raw && out && c && RAND_bytes(raw, NONCE) == 1 &&
                  EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, raw) == 1 &&
                  EVP_EncryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                  EVP_EncryptUpdate(c, raw + NONCE, &len, (const uint8_t *)plain, (int)n) == 1 &&
                  EVP_EncryptFinal_ex(c, raw + NONCE + len, &len) == 1 &&
                  EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, raw + NONCE + n) == 1;
    EVP_CIPHER_CTX_free(c);
    if (ok) {
        strcpy(out, PREFIX);
        tohex(raw, total, out + strlen(PREFIX));
    } else {
        free(out);
        out = NULL;
    }
    free(raw);
    return out;
}

char *secretbox_open(const uint8_t key[SECRETBOX_KEY_BYTES], const char *sealed, const char *aad,
                     char *err, size_t errlen) {
    size_t h = sealed ? strlen(sealed) : 0, p = strlen(PREFIX);
    if (!secretbox_is_sealed(sealed) || (h - p) % 2 || (h - p) / 2 < NONCE + TAG) {
        snprintf(err, errlen, "not a sealed secret");
        return NULL;
    }
    size_t total = (h - p) / 2, n = total - NONCE - TAG;
    uint8_t *raw = malloc(total);
    char *plain = malloc(n + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len, ok = raw && plain && c && !unhex(sealed + p, raw, total) &&
                  EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, raw) == 1 &&
                  EVP_DecryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                  EVP_DecryptUpdate(c, (uint8_t *)plain, &len, raw + NONCE, (int)n) == 1 &&
                  EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, raw + NONCE + n) == 1 &&
                  EVP_DecryptFinal_ex(c, (uint8_t *)plain + len, &len) == 1;
    EVP_CIPHER_CTX_free(c);
    free(raw);
    if (!ok) {
        free(plain);
        snprintf(err, errlen, "the sealed secret does not open with this key (another key file, "
                              "or the value was changed)");
        return NULL;
    }
    plain[n] = '\0';
    return plain;
}
