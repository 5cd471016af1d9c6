/*
 * jtext.c: see jtext.h. The escapes and the printing of reals follow jansson 2.14's dump.c
 * (dump_string, jsonp_dtostr), which is what the text must equal.
 */
#include "util/jtext.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

static int grow(jtext *t, size_t n) {
    if (t->oom) return -1;
    if (t->len + n + 1 <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 512;
    while (cap < t->len + n + 1) cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
        t->oom = 1;
        return -1;
    }
    t->p = p;
    t->cap = cap;
    return 0;
}

static void put(jtext *t, const char *s, size_t n) {
    if (grow(t, n)) return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void put_c(jtext *t, char c) { put(t, &c, 1); }

/* s (n bytes, valid UTF-8) in quotes, escaped as json_dumps escapes it without
 * JSON_ENSURE_ASCII or JSON_ESCAPE_SLASH: the two mandatory escapes and the control bytes. */
static void put_quoted(jtext *t, const char *s, size_t n) {
    put_c(t, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(t, s + run, i - run);
        run = i + 1;
        char seq[8];
        switch (c) {
        case '"': put(t, "\\\"", 2); break;
        case '\\': put(t, "\\\\", 2); break;
        case '\b': put(t, "\\b", 2); break;
        case '\f': put(t, "\\f", 2); break;
        case '\n': put(t, "\\n", 2); break;
        case '\r': put(t, "\\r", 2); break;
        case '\t': put(t, "\\t", 2); break;
        default: put(t, seq, (size_t)snprintf(seq, sizeof seq, "\\u%04X", c));
        }
    }
    put(t, s + run, n - run);
    put_c(t, '"');
}

static void put_string(jtext *t, const char *s) {
    size_t n = strlen(s);
    if (utf8_valid(s)) {
        put_quoted(t, s, n);
        return;
    }
    char *copy = utf8_ascii_copy(s); /* jlog_str's repair */
    if (!copy) {
        t->oom = 1;
        return;
    }
    put_quoted(t, copy, n);
    free(copy);
}

/* The comma before a member, and its key unless it is an array's. */
static void key(jtext *t, const char *k) {
    if (t->members[t->depth]++) put_c(t, ',');
    if (!k) return;
    put_quoted(t, k, strlen(k));
    put_c(t, ':');
}

static void open_nested(jtext *t, const char *k, char open, char close) {
    key(t, k);
    if (t->depth == JTEXT_DEPTH) {
        t->oom = 1;
        return;
    }
    put_c(t, open);
    t->depth++;
    t->members[t->depth] = 0;
    t->close[t->depth] = close;
}

void jtext_object(jtext *t, const char *k) { open_nested(t, k, '{', '}'); }
void jtext_array(jtext *t, const char *k) { open_nested(t, k, '[', ']'); }

void jtext_close(jtext *t) {
    if (t->depth > 0) put_c(t, t->close[t->depth--]);
}

/* The text json_dumps writes for the real v at precision digits (1 to 17), into out (at least
 * JTEXT_REAL_MAX bytes); returns its length. */
#define JTEXT_REAL_MAX 40
static int real_text(double v, int precision, char *out) {
    if (!isfinite(v)) return snprintf(out, JTEXT_REAL_MAX, "null"); /* json_real refuses them */
    int n = snprintf(out, JTEXT_REAL_MAX, "%.*g", precision, v);
    /* a real must read back as a real: "1" would be an integer */
    if (!strchr(out, '.') && !strchr(out, 'e')) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    /* no '+' and no leading zeros in the exponent: "1e-05" is "1e-5", "1e+20" is "1e20" */
    char *e = strchr(out, 'e');
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-') start++;
        while (*end == '0') end++;
        if (end != start) {
            memmove(start, end, (size_t)(out + n - end) + 1);
            n -= (int)(end - start);
        }
    }
    return n;
}

void jtext_begin(jtext *t, int precision) {
    *t = (jtext){.precision = precision};
    put_c(t, '{');
}

void jtext_str(jtext *t, const char *k, const char *v) {
    key(t, k);
    if (v) put_string(t, v);
    else put(t, "null", 4);
}

void jtext_int(jtext *t, const char *k, int64_t v) {
    char buf[24];
    key(t, k);
    put(t, buf, (size_t)snprintf(buf, sizeof buf, "%" PRId64, v));
}

void jtext_real(jtext *t, const char *k, double v) {
    char buf[JTEXT_REAL_MAX];
    key(t, k);
    put(t, buf, (size_t)real_text(v, t->precision, buf));
}

void jtext_json(jtext *t, const char *k, const char *json) {
    key(t, k);
    if (!json) {
        put(t, "null", 4);
        return;
    }
    const char *s = json, *run = json;
    while (*s) {
        if (*s == '"') { /* a string: copied whole, its escapes with it */
            for (s++; *s && *s != '"'; s++)
                if (*s == '\\' && s[1]) s++;
            if (*s) s++;
        } else if (*s == '-' || (*s >= '0' && *s <= '9')) {
            /* a number: an integer stays as it is, a real is printed again */
            const char *e = s;
            int real = 0;
            for (; *e && strchr("+-.0123456789eE", *e); e++)
                real |= *e == '.' || *e == 'e' || *e == 'E';
            if (real) {
                char buf[JTEXT_REAL_MAX];
                put(t, run, (size_t)(s - run));
                put(t, buf, (size_t)real_text(strtod(s, NULL), t->precision, buf));
                run = e;
            }
            s = e;
        } else {
            s++;
        }
    }
    put(t, run, (size_t)(s - run));
}

char *jtext_end(jtext *t, int newline, size_t *len) {
    while (t->depth > 0) jtext_close(t);
    put_c(t, '}');
    if (newline) put_c(t, '\n');
    if (t->oom) {
        free(t->p);
        *t = (jtext){0};
        return NULL;
    }
    t->p[t->len] = '\0'; /* grow left room for it */
    char *p = t->p;
    if (len) *len = t->len;
    *t = (jtext){0};
    return p;
}
