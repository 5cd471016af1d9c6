/*
 * utf8.h: UTF-8 validity, defined once for every part of gplq that must refuse or repair bytes
 * that are not UTF-8 before they reach JSON (jansson refuses such strings) or a message. As
 * strict as jansson: no overlong forms, no surrogates, nothing above U+10FFFF, so a string
 * these accept is one json_string accepts.
 */
#ifndef GPLQ_UTF8_H
#define GPLQ_UTF8_H

#include <stddef.h>

/* Length in bytes (1 to 4) of the valid UTF-8 sequence that starts at s, reading at most the
 * n >= 1 bytes available there (s need not be NUL-terminated), or 0 if they do not start one.
 * s is borrowed for the call. */
int utf8_seq_len(const char *s, size_t n);

/* 1 if the NUL-terminated string s (borrowed for the call) is valid UTF-8 throughout, else 0. */
int utf8_valid(const char *s);

/* What bytes that are not UTF-8 become where they must reach JSON anyway (a client's raw path
 * in a log line): a copy of s (owned by the caller; NULL if out of memory) with every
 * non-ASCII and control byte replaced by '?'. */
char *utf8_ascii_copy(const char *s);

#endif
