/*
 * http.c: see http.h.
 *
 * One request's life in on_request, which MHD calls several times per request:
 *   1. headers in (*con_cls NULL): the state is made, the route found, the pre-body checks run
 *      (a refused request is answered now, before its body is read), an upload's blob begun;
 *   2. body chunks (*upload_data_size > 0): appended to the JSON buffer or written to the blob;
 *   3. body done (*upload_data_size == 0): the handler runs and the response is queued; for an
 *      upload the connection is suspended, a thread runs the handler and resumes it, and MHD
 *      calls again (3) to queue the response the thread left.
 * on_completed ends every request, completed or cut off: it aborts a blob still open, writes
 * the log line and frees the state.
 */
#include "server/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api/metrics.h"
#include "server/guard.h"
#include "server/stream.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/jlog.h"

#define HTTP_MAX_KV 64 /* query arguments and headers a request can show the handlers */
#define HTTP_MAX_DISCARD ((int64_t)64 << 20) /* bytes dropped past a limit before cutting off */

struct http_server {
    struct MHD_Daemon *d;
    http_options o;
    pthread_key_t store_key;
    char url[200];
    unsigned boot;                 /* random prefix of generated request ids */
    atomic_ulong counter;          /* their suffix */
    atomic_int uploads;            /* upload handlers running on their own threads */
    int listen_fd;                 /* ours: the acceptor takes connections from it (-1: closed) */
    int stop_pipe[2];              /* a byte on [1] ends the acceptor */
    pthread_t acceptor;
    int accepting;                 /* the acceptor runs (loop thread only) */
    stream_hub *streams;           /* the live event streams */
    guard *guard;                  /* the connections' head deadlines and cap */
    pthread_mutex_t log_mu;        /* mhd_log's count of libmicrohttpd's messages */
    double log_window_ms;
    int log_n, log_dropped;
};

enum { ASYNC_NONE, ASYNC_RUNNING, ASYNC_DONE };

typedef struct {
    http_server *h;
    struct MHD_Connection *conn;
    guard_conn *gc;                /* the guard's record of the connection (may be NULL) */
    int timed_body;                /* a body is coming, under the guard's body deadline */
    const api_route *route;
    char request_id[72];
    char method[16];
    char *path;
    double t0;
    int64_t content_length;        /* -1: not given (chunked) */
    int64_t received;
    int64_t counted_bytes;         /* of received, already in the upload metric */
    char *body;                    /* JSON routes: the body so far */
    size_t len, cap;
    blob_writer bw;                /* upload routes */
    int upload_open;               /* bw holds a temp file not yet committed or aborted */
    int too_large, failed;
    int failed_errno;              /* why the upload could not be stored (errno of blob.h) */
    int64_t too_large_at;          /* bytes received when the limit was passed */
    int responded;
    atomic_int async;
    api_response res;              /* the upload thread's answer */
    api_kv query[HTTP_MAX_KV], headers[HTTP_MAX_KV];
    int nquery, nheaders;
    api_request req;
    api_principal who;             /* the token's, once checked (req.who points here) */
    int status;
    int64_t out_bytes;
} http_req;

/* ---------------------------------------------------------------- per-thread store */

static void store_destroy(void *p) {
    store_close(p);
}

/* The calling thread's database connection, opened on first use. NULL if it cannot open. */
static store *thread_store(http_server *h) {
    store *s = pthread_getspecific(h->store_key);
    if (s) return s;
    char err[512];
    if (store_open(&s, h->o.db_path, h->o.busy_ms, err, sizeof err)) {
        jlog("error", NULL, "opening the database for an HTTP thread: %s", err);
        return NULL;
    }
    if (h->o.secret_key) store_set_secret_key(s, h->o.secret_key);
    pthread_setspecific(h->store_key, s);
    return s;
}

static store *thread_store_cb(void *arg) {
    return thread_store(arg);
}

/* ---------------------------------------------------------------- responses */

/* Upload bytes received since the last count, so each byte is counted once. */
static void count_upload_bytes(http_req *r) {
    if (!r->route || !(r->route->flags & API_UPLOAD) || r->received <= r->counted_bytes) return;
    metrics_upload_bytes((r->route->flags & API_UPLOAD_MODEL) != 0, r->received - r->counted_bytes);
    r->counted_bytes = r->received;
}

static void count_request(http_req *r) {
    metrics_http(r->route ? (int)(r->route - api_routes) : -1, r->status);
    count_upload_bytes(r);
}

static enum MHD_Result respond(http_req *r, api_response *res) {
    struct MHD_Response *resp = NULL;
    int64_t bytes = 0;
    if (res->stream && strcmp(r->method, "HEAD")) {
        int busy = 0;
        /* An admin's streams count only in the total, as admins are exempt from the other
         * per-owner limits (api.h). */
        const char *owner = r->req.who && !r->who.admin ? r->who.owner : NULL;
        resp = stream_response(r->h->streams, r->conn, res->stream_job, res->stream_after, owner,
                               &busy);
        if (!resp && busy == STREAM_OWNER_BUSY) {
            api_response_header(res, "Retry-After", "5");
            api_error(res, 429, "too_many_streams", NULL,
                      "owner '%s' has as many event streams open as it may (the limit is %d per "
                      "owner); close one, or poll GET /v1/jobs/{id}", owner,
                      r->h->o.max_owner_streams);
        } else if (!resp && busy) {
            api_response_header(res, "Retry-After", "5");
            api_error(res, 503, "busy", NULL,
                      "too many event streams are open (the limit is %d); retry shortly, or poll "
                      "GET /v1/jobs/{id}", r->h->o.max_streams);
        } else if (!resp) {
            api_response_free(res);
            return MHD_NO;
        }
    }
    if (resp) {
        /* streamed: the headers below, then the events */
    } else if (res->fd >= 0) {
        resp = MHD_create_response_from_fd_at_offset64((uint64_t)res->length, res->fd,
                                                       (uint64_t)res->offset);
        if (resp) res->fd = -1; /* MHD owns it now and closes it with the response */
        bytes = res->length;
    } else if (res->body) {
        char *s = json_dumps(res->body, JSON_COMPACT | JSON_REAL_PRECISION(API_REAL_PRECISION));
        size_t n = s ? strlen(s) : 0;
        char *t = s ? realloc(s, n + 2) : NULL;
        if (!t) {
            free(s);
        } else {
            /* a newline, so `curl` output ends its line */
            t[n++] = '\n';
            t[n] = '\0';
            resp = MHD_create_response_from_buffer(n, t, MHD_RESPMEM_MUST_FREE);
            if (!resp) free(t);
            bytes = (int64_t)n;
        }
    } else if (res->text) {
        resp = MHD_create_response_from_buffer(res->text_len, res->text, MHD_RESPMEM_MUST_FREE);
        if (resp) res->text = NULL; /* MHD frees it */
        bytes = (int64_t)res->text_len;
    } else if (res->static_body) {
        /* static for the life of the process (api.h): MHD sends it in place */
        resp = MHD_create_response_from_buffer(res->static_len, (void *)res->static_body,
                                               MHD_RESPMEM_PERSISTENT);
        bytes = (int64_t)res->static_len;
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!resp) {
        api_response_free(res);
        return MHD_NO; /* out of memory: MHD closes the connection */
    }
    if (res->content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    for (int i = 0; i < res->nheaders; i++)
        MHD_add_response_header(resp, res->headers[i].name, res->headers[i].value);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)res->status, resp);
    MHD_destroy_response(resp);
    if (rc == MHD_YES) {
        r->status = res->status;
        r->out_bytes = strcmp(r->method, "HEAD") ? bytes : 0;
        r->responded = 1;
        /* Counted now, not in on_completed: that runs after the client has its answer, so a
         * scrape it sends next could otherwise miss this request. */
        count_request(r);
    }
    api_response_free(res);
    return rc;
}

static enum MHD_Result respond_error(http_req *r, int status, const char *code, const char *msg) {
    api_response res;
    api_response_init(&res);
    api_error(&res, status, code, NULL, "%s", msg);
    return respond(r, &res);
}

/* An upload that could not be stored (errno e of blob.h): a full disk is a 507, an I/O error
 * a 503, both worth a retry (api_storage_error); anything else is ours, a 500. The details
 * (with paths) were logged by the caller. */
static enum MHD_Result respond_upload_failed(http_req *r, int e) {
    if (!fs_is_full(e) && e != EIO)
        return respond_error(r, 500, "internal", "the upload could not be stored");
    api_response res;
    api_response_init(&res);
    api_storage_error(&res, fs_is_full(e), 1);
    return respond(r, &res);
}

static enum MHD_Result respond_too_large(http_req *r) {
    int upload = r->route && (r->route->flags & API_UPLOAD);
    int64_t limit = upload ? api_upload_limit(&r->h->o.base, r->route)
                           : r->h->o.base.limits.max_json_bytes;
    api_response res;
    api_response_init(&res);
    api_error(&res, 413, "too_large", NULL, "the body is larger than the limit of %lld bytes",
              (long long)limit);
    return respond(r, &res);
}

/* ---------------------------------------------------------------- connections */

/* The guard's record of connection c (its MHD socket context). */
static guard_conn *conn_record(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* MHD's accept policy: the guard's decision (server/guard.h). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addr;
    (void)addrlen;
    http_server *h = cls;
    return guard_admit(h->guard) ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = guard_opened(h->guard, ci ? ci->connect_fd : MHD_INVALID_SOCKET);
    } else {
        guard_closed(h->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* ---------------------------------------------------------------- requests */

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
    http_req *r = cls;
    api_kv *arr = kind == MHD_GET_ARGUMENT_KIND ? r->query : r->headers;
    int *n = kind == MHD_GET_ARGUMENT_KIND ? &r->nquery : &r->nheaders;
    if (*n < HTTP_MAX_KV && key) arr[(*n)++] = (api_kv){key, value ? value : ""};
    return MHD_YES;
}

/* Counts a header's occurrences (MHD keeps each line; lookups see only the first). */
struct header_count {
    const char *name;
    int n;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    (void)kind;
    (void)value;
    struct header_count *c = cls;
    if (key && !strcasecmp(key, c->name)) c->n++;
    return MHD_YES;
}

static int header_lines(struct MHD_Connection *c, const char *name) {
    struct header_count n = {name, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &n);
    return n.n;
}

/* The framing of a request must be unambiguous: behind a proxy that reads it another way, two
 * Content-Length headers, or one with Transfer-Encoding, smuggle a second request in the body.
 * NULL if it is, else why not. */
static const char *framing_problem(struct MHD_Connection *c) {
    int cl = header_lines(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl > 1) return "a request may have one Content-Length header, not several";
    if (cl && header_lines(c, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return "a request may have Content-Length or Transfer-Encoding, not both";
    return NULL;
}

/* 1 if a body follows r's head: a Content-Length above 0, or none and a Transfer-Encoding (an
 * unreadable Content-Length counts as a body, which libmicrohttpd then refuses). */
static int expects_body(struct MHD_Connection *c, const http_req *r) {
    if (r->content_length >= 0) return r->content_length > 0;
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) ||
           MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* URL decoding as libmicrohttpd's own (%XX, invalid escapes kept), except that %00 stays as it
 * is: decoded, it would end the path early (/v1/jobs/ID%00/artifacts served as the job), and
 * on_request refuses any URL that still holds it. */
static size_t unescape_keep_nul(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static int url_has_nul(const http_req *r) {
    if (strstr(r->path, "%00")) return 1;
    for (int i = 0; i < r->nquery; i++)
        if (strstr(r->query[i].key, "%00") || strstr(r->query[i].value, "%00")) return 1;
    return 0;
}

/* A client's request id is echoed if it is short and plain (it goes into logs and headers). */
static int request_id_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.' || *s == ':'))
            return 0;
    return 1;
}

static http_req *req_new(http_server *h, struct MHD_Connection *c, const char *url,
                         const char *method) {
    http_req *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(url))) {
        free(r);
        return NULL;
    }
    r->h = h;
    r->conn = c;
    r->t0 = clock_mono_ms();
    r->bw.fd = -1;
    api_response_init(&r->res); /* fd -1: a zeroed response would own descriptor 0 */
    r->content_length = -1;
    snprintf(r->method, sizeof r->method, "%s", method);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_kv, r);
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_kv, r);
    const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (request_id_ok(rid))
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    else
        snprintf(r->request_id, sizeof r->request_id, "%08x%08lx", h->boot,
                 (unsigned long)atomic_fetch_add(&h->counter, 1) & 0xffffffffUL);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        long long v = strtoll(cl, &end, 10);
        if (end != cl && !*end && v >= 0) r->content_length = v;
    }
    r->req = (api_request){.method = r->method, .path = r->path, .query = r->query,
                           .nquery = r->nquery, .headers = r->headers, .nheaders = r->nheaders,
                           .request_id = r->request_id};
    return r;
}

/* The handlers' context for r: the thread's store, and the token's owner once checked. */
static api_ctx ctx_for(http_server *h, store *st, const http_req *r) {
    api_ctx ctx = h->o.base;
    ctx.st = st;
    if (r && r->req.who) api_ctx_apply(&ctx, r->req.who);
    return ctx;
}

/* The upload's handler, on a thread of its own while the connection is suspended. */
static void *upload_task(void *arg) {
    http_req *r = arg;
    http_server *h = r->h;
    store *st = thread_store(h);
    if (st) {
        api_ctx ctx = ctx_for(h, st, NULL);
        api_dispatch(&ctx, &r->req, &r->res);
    } else {
        blob_abort(&r->bw);
        api_response_init(&r->res);
        api_error(&r->res, 503, "unavailable", NULL, "the database cannot be opened");
    }
    r->upload_open = 0;
    atomic_store(&r->async, ASYNC_DONE);
    /* After the resume MHD may finish and free r at once: r is not touched again. */
    MHD_resume_connection(r->conn);
    atomic_fetch_sub(&h->uploads, 1);
    return NULL;
}

static enum MHD_Result start_upload_task(http_req *r) {
    r->req.upload = &r->bw;
    atomic_store(&r->async, ASYNC_RUNNING);
    atomic_fetch_add(&r->h->uploads, 1);
    MHD_suspend_connection(r->conn);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &at, upload_task, r);
    pthread_attr_destroy(&at);
    if (rc) upload_task(r); /* no thread to be had: do it here, slower but correct */
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    http_server *h = cls;
    http_req *r = *con_cls;

    if (!r) {
        guard_conn *gc = conn_record(c);
        r = req_new(h, c, url, method);
        /* the head's deadline is met; a body's begins if one is coming */
        int body = r && expects_body(c, r);
        guard_head_done(h->guard, gc, body);
        if (!r) return MHD_NO;
        r->gc = gc;
        r->timed_body = body;
        *con_cls = r;
        const char *bad = framing_problem(c);
        if (bad) return respond_error(r, 400, "bad_request", bad);
        if (url_has_nul(r))
            return respond_error(r, 400, "bad_request", "a NUL byte (%00) in the URL is refused");
        api_params p;
        char allow[64];
        r->route = api_route_find(method, url, &p, allow, sizeof allow);
        if (r->route) {
            api_response res;
            api_response_init(&res);
            /* The token is checked on the headers, so a request without one is refused before
             * a byte of its body is read or stored. */
            store *st = NULL;
            if (h->o.base.auth && !(r->route->flags & API_PUBLIC)) {
                st = thread_store(h);
                api_ctx actx = ctx_for(h, st, NULL);
                if (api_authorize(&actx, r->route, &r->req, &r->who, &res)) return respond(r, &res);
                r->req.who = &r->who;
            }
            api_ctx ctx = ctx_for(h, st, r);
            if (api_precheck(&ctx, r->route, &r->req, r->content_length, &res)) return respond(r, &res);
            api_response_free(&res);
            if (r->route->flags & API_UPLOAD) {
                char err[512];
                if (blob_begin(&r->bw, h->o.base.data_dir, err, sizeof err)) {
                    int e = errno;
                    jlog("error", r->request_id, "starting an upload: %s", err);
                    if (fs_is_full(e) || e == EIO) return respond_upload_failed(r, e);
                    return respond_error(r, 500, "internal", "cannot store the upload now");
                }
                r->upload_open = 1;
            }
        }
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        r->received += (int64_t)n;
        guard_body(h->guard, r->gc, r->received);
        /* libmicrohttpd (0.9.75) cannot answer in the middle of a body, so a chunked body past
         * its limit is read and dropped, and the 413 goes out at its end; a client that goes on
         * and on past HTTP_MAX_DISCARD is cut off instead. */
        if (r->too_large && r->received - r->too_large_at > HTTP_MAX_DISCARD) return MHD_NO;
        if (r->responded || r->too_large || r->failed) return MHD_YES; /* dropped */
        int upload = r->route && (r->route->flags & API_UPLOAD);
        int64_t limit = upload ? api_upload_limit(&h->o.base, r->route) : h->o.base.limits.max_json_bytes;
        if (r->received > limit) {
            /* A body without Content-Length (chunked) grew past the limit: stop storing it. */
            r->too_large = 1;
            r->too_large_at = r->received;
            if (r->upload_open) blob_abort(&r->bw), r->upload_open = 0;
            free(r->body), r->body = NULL;
            return MHD_YES;
        }
        if (upload) {
            char err[512];
            if (blob_write(&r->bw, upload_data, n, err, sizeof err)) {
                /* The rest of the body is read and dropped (MHD cannot answer before its
                 * end); the temp file goes now, so a full disk gets its space back at once. */
                r->failed_errno = errno;
                jlog("error", r->request_id, "writing an upload: %s", err);
                r->failed = 1;
                blob_abort(&r->bw);
                r->upload_open = 0;
            }
            return MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        return MHD_YES;
    }

    /* The whole request is in. */
    if (r->timed_body) {
        guard_body_done(h->guard, r->gc);
        r->timed_body = 0;
    }
    if (r->responded) return MHD_YES;
    int async = atomic_load(&r->async);
    if (async == ASYNC_DONE) return respond(r, &r->res);
    if (async == ASYNC_RUNNING) return MHD_YES;
    if (r->too_large) return respond_too_large(r);
    if (r->failed) return respond_upload_failed(r, r->failed_errno);
    if (r->route && (r->route->flags & API_UPLOAD)) return start_upload_task(r);

    api_response res;
    store *st = thread_store(h);
    /* The page itself needs no database: it loads, and shows this 503 from its first call. */
    if (!st && r->route && !(r->route->flags & API_WEB)) {
        api_response_init(&res);
        api_error(&res, 503, "unavailable", NULL, "the database cannot be opened");
        return respond(r, &res);
    }
    api_ctx ctx = ctx_for(h, st, NULL);
    r->req.body = r->body;
    r->req.body_len = r->len;
    api_dispatch(&ctx, &r->req, &res);
    return respond(r, &res);
}

static const char *termination_name(enum MHD_RequestTerminationCode toe) {
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "completed";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client_abort";
    }
    return "unknown";
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    http_server *h = cls;
    /* Answered: a kept-alive connection now waits for its next head, under a new deadline. */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) guard_request_done(h->guard, conn_record(c));
    http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    /* Cut off mid-upload (or refused before the end): the temp file goes, nothing is left. */
    if (r->upload_open) blob_abort(&r->bw);
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (!r->responded) count_request(r); /* cut off before an answer */
    else count_upload_bytes(r);          /* what a refused upload sent after its answer */
    /* The access log line, written as text: one per request, it cost 8% of a GET as a tree. */
    jtext l;
    jlog_begin(&l, !ok || r->status >= 500 ? (r->status >= 500 ? "error" : "warn") : "info");
    jtext_str(&l, "request_id", r->request_id);
    jtext_str(&l, "method", r->method);
    jtext_str(&l, "path", r->path);
    jtext_str(&l, "route", r->route ? r->route->name : NULL);
    jtext_int(&l, "status", r->status);
    jtext_int(&l, "bytes", r->out_bytes);
    jtext_int(&l, "in", r->received);
    jtext_real(&l, "ms", (double)(long)((clock_mono_ms() - r->t0) * 1000) / 1000);
    if (r->req.who) jtext_str(&l, "token", r->who.token_id);
    if (!ok) jtext_str(&l, "aborted", termination_name(toe));
    jlog_end(&l);
    api_response_free(&r->res);
    free(r->body);
    free(r->path);
    free(r);
}

/* libmicrohttpd's messages, at most HTTP_MHD_LOG_MAX per HTTP_MHD_LOG_MS: it writes one per
 * connection closed with a head unfinished, and an attack the guard holds off would otherwise
 * fill the log (the guard's own summary line counts them). */
#define HTTP_MHD_LOG_MAX 20
#define HTTP_MHD_LOG_MS 10000.0

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    http_server *h = cls;
    double now = clock_mono_ms();
    pthread_mutex_lock(&h->log_mu);
    int was_dropped = 0;
    if (now - h->log_window_ms >= HTTP_MHD_LOG_MS) {
        h->log_window_ms = now;
        was_dropped = h->log_dropped;
        h->log_n = h->log_dropped = 0;
    }
    int log = h->log_n < HTTP_MHD_LOG_MAX;
    if (log) h->log_n++;
    else h->log_dropped++;
    pthread_mutex_unlock(&h->log_mu);
    if (was_dropped)
        jlog("warn", NULL, "libmicrohttpd: %d messages were not logged (at most %d per %.0f s)",
             was_dropped, HTTP_MHD_LOG_MAX, HTTP_MHD_LOG_MS / 1000);
    if (!log) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    jlog("warn", NULL, "libmicrohttpd: %s", msg);
}

/* ---------------------------------------------------------------- accepting */

/* Connections are accepted on a thread of this file's own and handed to libmicrohttpd's
 * threads (MHD_add_connection runs the accept policy and the per-IP limit as MHD's accept
 * would). MHD's own listener in poll mode (0.9.75) takes one connection per round of its
 * loop, and a round first serves every busy connection: under load a burst of new clients
 * waited in the listen queue for seconds (1000 keep-alive clients: up to 20 s;
 * tests/integration/test_chaos.py). Here all that wait are taken at once. */
static void *acceptor_main(void *arg) {
    http_server *h = arg;
    struct pollfd p[2] = {{.fd = h->listen_fd, .events = POLLIN},
                          {.fd = h->stop_pipe[0], .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof ss;
            int fd = accept4(h->listen_fd, (struct sockaddr *)&ss, &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                MHD_add_connection(h->d, fd, (struct sockaddr *)&ss, len); /* closes fd if refused */
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED) continue;
            /* Out of descriptors or memory: the client waits in the queue meanwhile, and this
             * thread must not spin on a listener that stays readable. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                usleep(50000);
            break; /* EAGAIN: all taken */
        }
    }
    return NULL;
}

/* Ends the acceptor and closes the listener: new clients are refused from now on. */
static void acceptor_stop(http_server *h) {
    if (h->accepting) {
        ssize_t n = write(h->stop_pipe[1], "x", 1);
        (void)n;
        pthread_join(h->acceptor, NULL);
        h->accepting = 0;
    }
    if (h->listen_fd >= 0) close(h->listen_fd);
    h->listen_fd = -1;
}

/* The listening socket: as MHD made it (SO_REUSEADDR and SO_REUSEPORT, IPv6 only for a v6
 * address), non-blocking for the acceptor. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t sslen, const char *name,
                     char *err, size_t errlen) {
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0) {
        snprintf(err, errlen, "cannot serve on %s: socket: %s", name, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (bind(fd, (const struct sockaddr *)ss, sslen) || listen(fd, SOMAXCONN)) {
        snprintf(err, errlen, "cannot serve on %s (address in use, or not ours?): %s", name,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---------------------------------------------------------------- start and stop */

/* "HOST:PORT", "[V6]:PORT" or ":PORT" into an address. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                        size_t errlen) {
    char host[256], port[16];
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1] || strlen(colon + 1) >= sizeof port) {
        snprintf(err, errlen, "--listen '%s': expected ADDR:PORT", s);
        return -1;
    }
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc || !ai) {
        snprintf(err, errlen, "--listen '%s': %s", s, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *sslen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int http_start(http_server **out, const http_options *o, char *err, size_t errlen) {
    *out = NULL;
    /* No defaults here: they are the option table's (server/cfg.c), which gplqd passes on. */
    if (o->max_connections < 1 || o->max_streams < 1 || o->head_timeout_s < 1 ||
        o->body_timeout_s < 1) {
        snprintf(err, errlen, "max_connections, max_streams, head_timeout_s and body_timeout_s "
                 "must be at least 1");
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(o->listen, &ss, &sslen, err, errlen)) return -1;
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->o = *o;
    h->listen_fd = h->stop_pipe[0] = h->stop_pipe[1] = -1;
    if (getrandom(&h->boot, sizeof h->boot, 0) != sizeof h->boot) h->boot = (unsigned)getpid();
    pthread_key_create(&h->store_key, store_destroy);
    pthread_mutex_init(&h->log_mu, NULL);

    /* No listener of MHD's: the acceptor hands it the connections (see acceptor_main); the
     * inter-thread channel wakes its threads for them. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    /* poll by default: libmicrohttpd 0.9.75 under epoll (edge-triggered) misses the FIN of a
     * client that closes right after a burst of body bytes, so a cut-off upload would hold its
     * connection and temp file until the idle timeout; poll sees the close at once. */
    flags |= o->epoll && MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                                                : MHD_USE_POLL;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    stream_options so = {.db_path = o->db_path, .busy_ms = o->busy_ms,
                         .max_streams = o->max_streams,
                         .max_per_owner = o->max_owner_streams,
                         .heartbeat_ms = o->heartbeat_ms, .thread_store = thread_store_cb,
                         .thread_store_arg = h};
    guard_options go = {.max_connections = o->max_connections,
                        .head_timeout_ms = o->head_timeout_s * 1000,
                        .body_timeout_ms = o->body_timeout_s * 1000,
                        .idle_ms = o->timeout_s * 1000};
    if (stream_hub_start(&h->streams, &so, err, errlen)) {
        pthread_key_delete(h->store_key);
        pthread_mutex_destroy(&h->log_mu);
        free(h);
        return -1;
    }
    if (guard_start(&h->guard, &go, err, errlen)) {
        stream_hub_free(h->streams);
        pthread_key_delete(h->store_key);
        pthread_mutex_destroy(&h->log_mu);
        free(h);
        return -1;
    }
    if ((h->listen_fd = listen_on(&ss, sslen, o->listen, err, errlen)) < 0 ||
        pipe2(h->stop_pipe, O_CLOEXEC)) {
        if (h->listen_fd >= 0) snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    h->d = MHD_start_daemon(
        flags, 0, on_accept, h, on_request, h,
        /* first, or MHD logs the options' own complaints with its default logger */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads,
        /* MHD's own cap, above the guard's (server/guard.h), which refuses first: past it
         * MHD_add_connection closes a newcomer too. */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(go.max_connections + GUARD_SPARE),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(o->max_per_ip > 0 ? o->max_per_ip : 0),
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, h,
        /* Each connection's buffer (default 32 KB) bounds the chunk an upload arrives in: with
         * 256 KB a 97 MB upload takes about an eighth of the recv+poll+write rounds; 1 MB, tried
         * once while developing, added little for uploads and slowed GET /v1/jobs/{id} (its
         * p99 rose from a few ms to tens). bench/service.py measures both. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
        MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot start libmicrohttpd on %s", o->listen);
        goto fail;
    }
    if (pthread_create(&h->acceptor, NULL, acceptor_main, h)) {
        snprintf(err, errlen, "cannot start the accepting thread");
        MHD_stop_daemon(h->d);
        goto fail;
    }
    h->accepting = 1;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    unsigned port = 0;
    if (getsockname(h->listen_fd, (struct sockaddr *)&bound, &blen) == 0)
        port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    char host[128] = "127.0.0.1";
    getnameinfo((struct sockaddr *)&ss, sslen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
    int v6 = ss.ss_family == AF_INET6;
    snprintf(h->url, sizeof h->url, "http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
             port);
    *out = h;
    return 0;
fail:
    if (h->listen_fd >= 0) close(h->listen_fd);
    if (h->stop_pipe[0] >= 0) close(h->stop_pipe[0]);
    if (h->stop_pipe[1] >= 0) close(h->stop_pipe[1]);
    guard_free(h->guard);
    stream_hub_free(h->streams);
    pthread_key_delete(h->store_key);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
    return -1;
}

const char *http_url(const http_server *h) {
    return h->url;
}

void http_quiesce(http_server *h) {
    acceptor_stop(h); /* the listener closes: new clients are refused now, not queued */
}

void http_stop(http_server *h, int wait_s) {
    if (!h) return;
    /* Streams end first: libmicrohttpd must not be stopped with connections suspended. */
    stream_hub_stop(h->streams, 2000);
    for (int i = 0; atomic_load(&h->uploads) > 0 && i < wait_s * 100; i++) usleep(10000);
    if (atomic_load(&h->uploads) > 0) {
        /* Stopping MHD would resume and free connections those threads still use; the process
         * is about to exit, which ends them safely. */
        jlog("warn", NULL, "%d upload(s) still being processed at exit", atomic_load(&h->uploads));
        return;
    }
    acceptor_stop(h);
    MHD_stop_daemon(h->d);
    guard_free(h->guard);
    stream_hub_free(h->streams);
    close(h->stop_pipe[0]);
    close(h->stop_pipe[1]);
    pthread_key_delete(h->store_key);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
}
