/*
 * http.h: gplqd's HTTP side, libmicrohttpd glue around api/api.h.
 *
 * Connections are accepted on a thread of their own and handed to a pool of MHD threads (poll,
 * or epoll on request), which parse requests; each thread opens its own SQLite connection on
 * first use (a pthread key closes it when the thread ends).
 * JSON bodies are buffered up to a limit; upload bodies are streamed chunk by chunk into a blob
 * writer (never whole in memory), and the upload's handler (inspection in a child, fsync,
 * rename) runs on a thread of its own while the connection is suspended, so a slow upload never
 * holds an HTTP thread. A connection cut off mid-upload aborts the blob: nothing is left.
 * Files go out with MHD_create_response_from_fd_at_offset64 (sendfile, no copy). A job's live
 * events (SSE) are streamed by server/stream.c on suspended connections, so a waiting stream
 * holds no thread. The token of a request is checked on its headers, before its body is read.
 * Every response carries X-Request-Id (the client's if it sent a sane one), and every request
 * is one JSON log line: ts, level, request_id, method, path, route, status, bytes, ms.
 * Connections are watched by server/guard.h: a deadline for each request head, and at the cap
 * a slow head's slot for a newcomer, or a refusal at once; one address has a connection limit.
 */
#ifndef GPLQ_HTTP_H
#define GPLQ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"

typedef struct http_server http_server;

typedef struct {
    const char *listen;      /* "ADDR:PORT", IPv4, [IPv6] or a host name; port 0 = any free */
    int threads;             /* MHD thread pool size */
    int epoll;               /* epoll instead of poll (see http_start in http.c for why not) */
    int max_connections;     /* past it a newcomer takes a slow head's slot, or is refused */
    int timeout_s;           /* idle connection timeout */
    int head_timeout_s;      /* accept to the end of the request head (server/guard.h) */
    int body_timeout_s;      /* for each GUARD_BODY_STEP bytes of a body (server/guard.h) */
    int max_per_ip;          /* connections from one address; past it refused; 0: no limit */
    const char *db_path;     /* each HTTP thread opens its own connection to it */
    const uint8_t *secret_key; /* webhook secrets' key (store_set_secret_key); borrowed */
    int busy_ms;
    int max_streams;         /* event streams (SSE) open at once; past it a 503 */
    int max_owner_streams;   /* of them, one owner's (admins exempt); past it a 429; 0: no limit */
    int heartbeat_ms;        /* a silent stream gets a keep-alive comment this often */
    api_ctx base;            /* copied; every request gets it with st set to its thread's store */
} http_options;

/* Binds and starts serving. o's strings and callbacks' args are borrowed and must outlive the
 * server. max_connections, max_streams and the two timeouts must be at least 1: the defaults
 * are gplqd's option table's (server/cfg.c), not this function's. *out is new (http_stop). 0,
 * or -1 with err. */
int http_start(http_server **out, const http_options *o, char *err, size_t errlen);
/* The bound URL ("http://127.0.0.1:PORT"), borrowed. */
const char *http_url(const http_server *h);
/* Stops accepting connections; requests in progress go on. */
void http_quiesce(http_server *h);
/* Waits (up to wait_s) for uploads being processed, stops the threads, frees h. */
void http_stop(http_server *h, int wait_s);

#endif
