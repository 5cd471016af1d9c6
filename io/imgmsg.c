/*
 * imgmsg.c: the image-folder modules' messages (see imgmsg.h).
 */
#include "io/imgmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/utf8.h"

/* Rewrites s in place: control characters and bytes that are not UTF-8 become '?'. A message
 * cut short by its buffer ends in half a character, which this also repairs. */
static void sanitize(char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int l = utf8_seq_len(s + i, n - i);
        if (!l || c < 0x20 || c == 0x7f) {
            s[i++] = '?';
            continue;
        }
        i += (size_t)l;
    }
}

void imgmsg_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    sanitize(err);
}

/* A hostile name must not crowd the reason out of the message: it is cut at outlen - 4 bytes. */
void imgmsg_name(char *out, size_t outlen, const char *name) {
    size_t n = strlen(name), i = 0, limit = outlen > 4 ? outlen - 4 : 0;
    while (i < n) {
        int l = utf8_seq_len(name + i, n - i);
        if (!l) l = 1; /* imgmsg_err turns it into '?' later */
        if (i + (size_t)l > limit) break;
        i += (size_t)l;
    }
    memcpy(out, name, i);
    strcpy(out + i, i < n ? "..." : "");
}
