/*
 * range.c: see range.h.
 */
#include "api/range.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* Reads a decimal number of at most 18 digits (no overflow in int64); -1 if none. */
static int64_t read_num(const char **p) {
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    while (isdigit((unsigned char)*s) && n < 18) v = v * 10 + (*s++ - '0'), n++;
    if (n == 0 || isdigit((unsigned char)*s)) return -1;
    *p = s;
    return v;
}

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

int range_etag_matches(const char *inm, const char *etag) {
    if (!inm || !etag) return 0;
    const char *p = skip_ws(inm);
    if (*p == '*') return 1;
    size_t elen = strlen(etag);
    while (*p) {
        p = skip_ws(p);
        if (!strncmp(p, "W/", 2)) p += 2; /* weak comparison: W/"x" matches "x" */
        const char *start = p;
        if (*p != '"') return 0;
        p = strchr(p + 1, '"');
        if (!p) return 0;
        p++;
        if ((size_t)(p - start) == elen && !memcmp(start, etag, elen)) return 1;
        p = skip_ws(p);
        if (*p == ',') p++;
        else if (*p) return 0;
    }
    return 0;
}

range_kind range_parse(const char *range, const char *if_range, const char *etag, int64_t size,
                       int64_t *offset, int64_t *length) {
    *offset = 0;
    *length = size;
    if (!range) return RANGE_FULL;
    /* If-Range names the version the client holds; another version means "send it all". A
     * date there cannot match a tag, so it also gets the whole file (strong comparison). */
    if (if_range && (!etag || strcmp(skip_ws(if_range), etag))) return RANGE_FULL;
    const char *p = skip_ws(range);
    if (strncasecmp(p, "bytes=", 6)) return RANGE_FULL; /* a unit we do not know: ignore */
    p = skip_ws(p + 6);
    int64_t first, last;
    if (*p == '-') {
        p++;
        int64_t n = read_num(&p);
        p = skip_ws(p);
        if (n < 0 || *p) return RANGE_FULL; /* malformed, or several ranges: ignore */
        if (n == 0 || size == 0) return RANGE_UNSATISFIABLE;
        if (n > size) n = size;
        first = size - n;
        last = size - 1;
    } else {
        first = read_num(&p);
        if (first < 0 || *p != '-') return RANGE_FULL;
        p++;
        p = skip_ws(p);
        if (*p == '\0') {
            last = size - 1;
        } else {
            last = read_num(&p);
            p = skip_ws(p);
            if (last < 0 || *p || last < first) return RANGE_FULL;
            if (last > size - 1) last = size - 1;
        }
        if (first >= size) return RANGE_UNSATISFIABLE;
    }
    *offset = first;
    *length = last - first + 1;
    return RANGE_PARTIAL;
}
