/*
 * secretbox.h: secrets sealed at rest. A webhook secret is kept in the database sealed with
 * AES-256-GCM (libcrypto) under a key that lives in a file outside it, so a copied database,
 * a backup or a stray dump does not leak the secrets: whoever has only the database cannot
 * sign webhooks. The additional data binds a sealed value to its row (the job id), so a sealed
 * secret copied onto another row does not open.
 *
 * Sealed form: "sb1:" then hex of nonce (12 bytes) | ciphertext | tag (16 bytes).
 * Key file: 64 hex characters (32 bytes) and a newline, mode 0600.
 */
#ifndef GPLQ_SECRETBOX_H
#define GPLQ_SECRETBOX_H

#include <stddef.h>
#include <stdint.h>

#define SECRETBOX_KEY_BYTES 32

/* Reads the key at path into key; if the file does not exist and create is nonzero, draws a
 * new key and writes it there first (0600, written beside and renamed, so no reader sees half
 * a key). 0, or -1 with a message in err (a key file of the wrong size or mode 0077 bits set is
 * refused: a key others can read protects nothing). */
int secretbox_key_load(const char *path, int create, uint8_t key[SECRETBOX_KEY_BYTES], char *err,
                       size_t errlen);
/* plain sealed under key, bound to aad (may be ""): a new string (free), NULL if out of memory
 * or libcrypto failed. */
char *secretbox_seal(const uint8_t key[SECRETBOX_KEY_BYTES], const char *plain, const char *aad);
/* The plaintext of sealed: a new string (free), or NULL with a message in err if it is not a
 * sealed value, or was sealed under another key or for another aad, or was changed. */
char *secretbox_open(const uint8_t key[SECRETBOX_KEY_BYTES], const char *sealed, const char *aad,
                     char *err, size_t errlen);
/* 1 if s has the sealed form's prefix (a value written before sealing existed does not). */
int secretbox_is_sealed(const char *s);

#endif
