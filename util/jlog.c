/*
 * jlog.c: see jlog.h.
 */
#include "util/jlog.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/utf8.h"

json_t *jlog_str(const char *s) {
    if (!s) return json_null();
    json_t *v = json_string(s);
    if (v) return v;
    /* Not UTF-8 (a client's raw bytes): keep the ASCII, mark the rest, so that the line is
     * still written and still says something. */
    char *copy = utf8_ascii_copy(s);
    if (!copy) return json_string("?");
    v = json_string(copy);
    free(copy);
    return v;
}

void jlog_json(const char *level, json_t *obj) { jlog_json_fd(2, level, obj); }

/* Reals in a line: enough for milliseconds and rates, short enough to read. */
#define JLOG_REAL_PRECISION 9

/* Writes n bytes of text on fd in as many write(2)s as it takes (one, but for a full pipe). */
static void write_line(int fd, const char *text, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue; /* the worker's SIGTERM, on a full pipe */
        if (w <= 0) break;
        off += (size_t)w;
    }
}

void jlog_json_fd(int fd, const char *level, json_t *obj) {
    char ts[CLOCK_ISO_MAX];
    clock_iso_ms(clock_wall_ms(), ts);
    /* ts and level first, so a human reading the log sees them first. */
    json_t *line = json_pack("{s:s, s:s}", "ts", ts, "level", level);
    json_object_update_missing(line, obj);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                      JSON_REAL_PRECISION(JLOG_REAL_PRECISION));
    json_decref(line);
    if (!text) return;
    size_t n = strlen(text);
    text[n++] = '\n'; /* json_dumps's NUL becomes the newline: one buffer, one write */
    write_line(fd, text, n);
    free(text);
}

void jlog_begin(jtext *t, const char *level) {
    char ts[CLOCK_ISO_MAX];
    clock_iso_ms(clock_wall_ms(), ts);
    jtext_begin(t, JLOG_REAL_PRECISION);
    jtext_str(t, "ts", ts);
    jtext_str(t, "level", level);
}

void jlog_end(jtext *t) {
    size_t n = 0;
    char *text = jtext_end(t, 1, &n);
    if (!text) return;
    write_line(2, text, n);
    free(text);
}

void jlog(const char *level, const char *request_id, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *obj = json_object();
    if (request_id) json_object_set_new(obj, "request_id", jlog_str(request_id));
    json_object_set_new(obj, "msg", jlog_str(msg));
    jlog_json(level, obj);
    json_decref(obj);
}
