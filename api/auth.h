/*
 * auth.h: gplqd's API tokens: minting, the shape of a token, and owner names.
 *
 * A token is "gplq_" + 16 hex digits + 43 base64url characters (32 random bytes), 64
 * characters in all. The hex digits are not secret: they make the token's id ("t_" + them),
 * which finds its row; the whole token's SHA-256 is what the row keeps and what a request's
 * token is compared against, in constant time. So the database never holds a usable token, a
 * lookup never compares secrets with a timing that depends on them, and an operator can tell
 * from a token which row to revoke.
 *
 * The name given at creation is the owner of everything the token's requests create; tokens
 * of one name share their data (create the new token, switch, revoke the old one: a rotation).
 */
#ifndef GPLQ_AUTH_H
#define GPLQ_AUTH_H

#include <stddef.h>

#define AUTH_TOKEN_LEN 64    /* characters of a token */
#define AUTH_ID_LEN 18       /* "t_" + 16 hex digits */
#define AUTH_NAME_MAX 64     /* characters of an owner name */

/* Mints a token: token (AUTH_TOKEN_LEN + 1 bytes), its id (AUTH_ID_LEN + 1) and the hex
 * SHA-256 to store (65). 0, or -1 when the system has no randomness to give (getrandom
 * failed): a token must never come from a guessable source. */
int auth_token_new(char *token, char *id, char *hash_hex);

/* Checks that token has our shape and computes its id and SHA-256 (hex). 0, or -1 when it
 * cannot be one of ours (then nothing needs to be looked up). */
int auth_token_parse(const char *token, char *id, char *hash_hex);

/* 1 when name is a valid owner name: 1 to AUTH_NAME_MAX characters of [A-Za-z0-9._-], starting
 * with a letter or a digit. */
int auth_name_ok(const char *name);

/* Download links. A link is a GET path plus "?expires=UNIX&sig=HEX": HMAC-SHA256 under a key
 * gplqd draws at start, over "PATH\nEXPIRES". It stands in for the token on that one path until
 * it expires, so a browser can save a large artifact straight to disk (a plain link cannot
 * carry an Authorization header) and a pipeline can hand a download to a tool without its
 * token. The key lives only in memory: a restart ends every link. */
#define AUTH_LINK_KEY_LEN 32

/* Draws a new key. 0, or -1 when the system has no randomness to give. */
int auth_link_key_new(unsigned char key[AUTH_LINK_KEY_LEN]);

/* The signature (64 hex digits and a NUL) of path until expires (Unix seconds). */
void auth_link_sign(const unsigned char *key, const char *path, long long expires, char sig[65]);

/* 0 when sig signs path until expires and now is not past it; otherwise -1 and *why says
 * which (a static string). expires and sig are the query's text, NULL when absent. */
int auth_link_check(const unsigned char *key, const char *path, const char *expires,
                    const char *sig, long long now, const char **why);

#endif
