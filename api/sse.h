/*
 * sse.h: a job's events as a Server-Sent Events stream (GET /v1/jobs/{id}/events), the part
 * that knows the format and the store but not the socket: the HTTP glue (server/stream.c)
 * drains the buffer into the connection and decides when to look for more.
 *
 * Each event of the store (store_event_list) is one SSE event:
 *
 *     id: 42                         the event's row id: increasing, never reused
 *     event: state                   its type: "state" or "progress"
 *     data: {"id":42,"type":"state","job_id":"j_..","created_at":"..","data":{...}}
 *
 * where a state event's data holds {state, stage, error, job} (the job object as it was right
 * after the change) and a progress event's data the progress object. A client that reconnects
 * with Last-Event-ID: 42 gets every event after 42 and none before, so it misses nothing and
 * sees nothing twice. The stream ends once the job has ended and its last event is out.
 */
#ifndef GPLQ_SSE_H
#define GPLQ_SSE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "storage/store.h"

#define SSE_BATCH 200 /* events read per query */

typedef struct {
    char job_id[64];
    int64_t last_id;   /* the last event id put in buf (or the client's Last-Event-ID) */
    char *buf;         /* bytes to send: buf[off, len) */
    size_t len, off, cap;
    int ended;         /* the job has ended (or is gone) and its last event is in buf */
} sse_stream;

/* Starts a stream of job_id's events after after_id; buf begins with a "retry:" line (how long
 * a browser waits before reconnecting) and a comment, so the response's headers go out at
 * once. 0, or -1 out of memory. Release with sse_free. */
int sse_init(sse_stream *s, const char *job_id, int64_t after_id, int retry_ms);
void sse_free(sse_stream *s);

/* Appends one event (a store event object, borrowed) to buf and advances last_id. 0 or -1. */
int sse_append_event(sse_stream *s, json_t *event);
/* Appends a comment line (": text"), which clients ignore: a heartbeat through proxies. */
int sse_append_comment(sse_stream *s, const char *text);

/* Reads the job's events after last_id from st (any owner: the caller checked access when the
 * stream began) and appends them; marks the stream ended when the job has ended and nothing
 * is left, or when the job is gone (deleted). Returns the number of events appended, or -1 on a
 * database or memory error (the message is store_errmsg(st)). */
int sse_fill(sse_stream *s, store *st);

/* Bytes waiting in buf. */
static inline size_t sse_pending(const sse_stream *s) { return s->len - s->off; }

#endif
