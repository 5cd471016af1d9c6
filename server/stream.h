/*
 * stream.h: the live streams of gplqd, GET /v1/jobs/{id}/events as Server-Sent Events over
 * libmicrohttpd, without holding an HTTP thread while a stream waits.
 *
 * How: the response is a content reader (MHD_create_response_from_callback, chunked). When the
 * reader has sent everything it has, it reads the job's newer events (api/sse.h) on the calling
 * HTTP thread's own database connection; if there are none it suspends the connection
 * (MHD_suspend_connection, the pattern microhttpd.h prescribes for "no data yet" under a thread
 * pool: returning 0 without it would spin) and returns 0. One poller thread, with its own
 * connection, looks every poll_ms at the newest event id of the whole database (one indexed
 * read, however many streams; on PostgreSQL also at once when the database notifies an event
 * written by any node of the cluster) and resumes the suspended streams when it moved, or when one has
 * been silent for heartbeat_ms (it then gets a comment line, which keeps proxies and idle
 * timeouts from closing it and lets a vanished client be noticed). So a waiting stream costs a
 * list entry, and an HTTP thread serves others meanwhile.
 *
 * The number of streams is bounded (max_streams): past it a stream is refused (503); and so is
 * each owner's (max_per_owner), so that one owner cannot take them all (a 429). Before
 * MHD_stop_daemon every suspended stream must be resumed (an API rule of libmicrohttpd):
 * stream_hub_stop does that and ends them.
 */
#ifndef GPLQ_STREAM_H
#define GPLQ_STREAM_H

#include <stdint.h>

#include <microhttpd.h>

#include "storage/store.h"

typedef struct stream_hub stream_hub;

typedef struct {
    const char *db_path;   /* the poller's own connection */
    int busy_ms;
    int max_streams;
    int max_per_owner;     /* streams one owner may hold; 0: no limit */
    int heartbeat_ms;      /* silence before a keep-alive comment */
    int poll_ms;           /* how often the poller looks for new events */
    /* The calling HTTP thread's store (borrowed), for the readers; NULL if it cannot open. */
    store *(*thread_store)(void *arg);
    void *thread_store_arg;
} stream_options;

/* Starts the poller. o's strings and arg are borrowed and must outlive the hub. *out is new
 * (stream_hub_free). 0, or -1 with err. */
int stream_hub_start(stream_hub **out, const stream_options *o, char *err, size_t errlen);

/* Why stream_response refused a stream. */
enum { STREAM_BUSY = 1, STREAM_OWNER_BUSY = 2 };

/* A new response streaming job_id's events after after_id on connection c (MHD_queue_response
 * it, then MHD_destroy_response), counted as owner's (borrowed; NULL: counted only in the
 * total, as an admin's). NULL with *busy = STREAM_BUSY when max_streams are open,
 * STREAM_OWNER_BUSY when owner holds max_per_owner, 0 when out of memory. Call from the access
 * handler of c. */
struct MHD_Response *stream_response(stream_hub *hub, struct MHD_Connection *c,
                                     const char *job_id, int64_t after_id, const char *owner,
                                     int *busy);

/* Streams open now. Thread-safe. */
int stream_count(stream_hub *hub);

/* Stops the poller, resumes and ends every stream, and waits up to wait_ms for their
 * responses to finish. Call before MHD_stop_daemon. */
void stream_hub_stop(stream_hub *hub, int wait_ms);
/* After MHD_stop_daemon (no stream is left then). */
void stream_hub_free(stream_hub *hub);

#endif
