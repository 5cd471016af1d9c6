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

#endif
