/*
 * sse.c: see sse.h.
 */
#include "api/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static int reserve(sse_stream *s, size_t more) {
    if (s->off > 0 && s->off == s->len) s->off = s->len = 0; /* drained: start over */
    if (s->len + more <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + more) cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b) return -1;
    s->buf = b;
    s->cap = cap;
    return 0;
}

static int append(sse_stream *s, const char *text, size_t n) {
    if (reserve(s, n)) return -1;
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    return 0;
}

int sse_init(sse_stream *s, const char *job_id, int64_t after_id, int retry_ms) {
    memset(s, 0, sizeof *s);
    snprintf(s->job_id, sizeof s->job_id, "%s", job_id);
    s->last_id = after_id;
    char head[128];
    int n = snprintf(head, sizeof head, "retry: %d\n: events of job %.40s\n\n", retry_ms, job_id);
    return append(s, head, (size_t)n);
}

void sse_free(sse_stream *s) {
    free(s->buf);
    s->buf = NULL;
    s->len = s->off = s->cap = 0;
}

int sse_append_comment(sse_stream *s, const char *text) {
    char line[256];
    int n = snprintf(line, sizeof line, ": %.200s\n\n", text);
    return append(s, line, (size_t)n);
}

int sse_append_event(sse_stream *s, json_t *event) {
    json_int_t id = json_integer_value(json_object_get(event, "id"));
    const char *type = json_string_value(json_object_get(event, "type"));
    /* Compact JSON has no newline, so the whole object is one data: line. */
    char *data = json_dumps(event, JSON_COMPACT | JSON_REAL_PRECISION(API_REAL_PRECISION));
    if (!data) return -1;
    char head[96];
    int n = snprintf(head, sizeof head, "id: %lld\nevent: %.32s\ndata: ", (long long)id,
                     type ? type : "message");
    int rc = append(s, head, (size_t)n) || append(s, data, strlen(data)) || append(s, "\n\n", 2);
    free(data);
    if (!rc && id > s->last_id) s->last_id = id;
    return rc ? -1 : 0;
}

int sse_fill(sse_stream *s, store *st) {
    if (s->ended) return 0;
    /* The state first, then the events: a job seen ended here has its last event committed
     * (the same transaction), so the read below includes it. */
    json_t *job = NULL;
    int rc = store_job_get(st, NULL, s->job_id, &job);
    if (rc == STORE_ENOTFOUND) {
        s->ended = 1;
        return sse_append_comment(s, "the job was deleted") ? -1 : 0;
    }
    if (rc) return -1;
    const char *state = json_string_value(json_object_get(job, "state"));
    int over = state && (!strcmp(state, "succeeded") || !strcmp(state, "failed") ||
                         !strcmp(state, "canceled"));
    json_decref(job);
    json_t *events = NULL;
    rc = store_event_list(st, NULL, s->job_id, s->last_id, SSE_BATCH, &events);
    if (rc == STORE_ENOTFOUND) {
        s->ended = 1;
        return sse_append_comment(s, "the job was deleted") ? -1 : 0;
    }
    if (rc) return -1;
    size_t i, n = json_array_size(events);
    json_t *e;
    json_array_foreach(events, i, e) {
        if (sse_append_event(s, e)) {
            json_decref(events);
            return -1;
        }
    }
    json_decref(events);
    if (over && n < SSE_BATCH) s->ended = 1;
    return (int)n;
}
