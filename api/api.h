/*
 * api.h: gplqd's REST API as pure functions from a parsed request to a response.
 *
 * The HTTP glue (server/http.c) parses a request into an api_request, calls api_dispatch and
 * turns the api_response into bytes on the wire; the tests (tests/test_api.c) call api_dispatch
 * directly, with no socket. Everything a handler needs from outside (the database connection of
 * the calling thread, the data directory, the limits, waking the workers, running the upload
 * inspector, the workers' health) comes in the api_ctx, so a test can supply all of it.
 *
 * The route table (api_routes) is the one list of routes: the glue reads it to know which
 * bodies are streamed uploads and which need no token, /metrics counts requests by its names,
 * and the tests walk it, one of them against the OpenAPI document (api/openapi.h) both ways
 * (the API_WEB routes aside: the dashboard is not part of the REST API).
 *
 * Auth: every route but the API_PUBLIC ones (/v1/health, /v1/openapi.json, /metrics, and the
 * dashboard's page and files at / and /web/{name}, which hold no data: the page sends the
 * user's token on its API calls) needs a live token (api/auth.h); the token's name is the owner
 * the handlers filter by.
 *
 * Errors are always {"error": {"code": "...", "message": "..."}} (plus "field" when one field of
 * the request is to blame) with a fitting status; a 500 says "internal error" and the details go
 * to the log only, under the request id.
 */
#ifndef GPLQ_API_H
#define GPLQ_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "storage/blob.h"
#include "storage/store.h"

#define API_MAX_PARAMS 4   /* path parameters in a pattern ("{id}", "{name}") */
#define API_PARAM_MAX 256  /* bytes of one path parameter, NUL included */
#define API_MAX_HEADERS 8  /* extra response headers */

/* Who a request comes from, as its token says (api_authenticate). */
typedef struct {
    char owner[72];          /* the token's name: the owner of what the request creates */
    char token_id[32];       /* "t_..." */
    int admin;               /* sees every owner's resources */
} api_principal;

/* A name and a value, both borrowed (valid for the life of the request). */
typedef struct {
    const char *key;
    const char *value;
} api_kv;

/* One request. Everything is borrowed from the caller and valid until api_dispatch returns. */
typedef struct {
    const char *method;      /* "GET", "HEAD", "POST", "DELETE", ... */
    const char *path;        /* percent-decoded, without the query: "/v1/jobs/j_0123" */
    const api_kv *query;     /* decoded query arguments, in order; a key without '=' has value "" */
    int nquery;
    const api_kv *headers;   /* request headers; names compare case-insensitively */
    int nheaders;
    const char *body;        /* API_JSON_BODY routes: the body bytes (not NUL-terminated) */
    size_t body_len;
    /* API_UPLOAD_* routes: the body, streamed by the glue into an open blob writer (bytes and
     * hash so far in it, the file at upload->tmp_path). The handler always leaves it closed:
     * committed into blobs/ when the upload is accepted, aborted (temp file removed) when not,
     * so a refused upload never reaches blobs/. NULL on an upload route is a 400. */
    blob_writer *upload;
    const char *request_id;  /* for log lines about this request (may be NULL) */
    /* Who sent it, when the glue has already checked the token (it does so before the body
     * arrives); NULL: api_dispatch checks the Authorization header itself (tests). */
    const api_principal *who;
} api_request;

/* The response. Initialized by api_dispatch; released with api_response_free. */
typedef struct {
    int status;
    json_t *body;            /* owned (new reference), NULL for no body (204, 304, HEAD) */
    /* A file to send instead of body: owned descriptor (api_response_free closes it; the glue
     * may take it over by setting fd to -1), the byte range to send, the whole file's size. */
    int fd;
    int64_t offset, length;
    const char *content_type; /* static string; "application/json" for JSON bodies */
    /* A body that is not a JSON object (owned, free()d by api_response_free): the Prometheus
     * text of /metrics, the OpenAPI document. Sent as is when body is NULL. */
    char *text;
    size_t text_len;
    /* A body of static bytes, sent as is when body and text are NULL: borrowed, and it must
     * outlive the response (the dashboard's files embedded in the binary, api/web.h). The glue
     * hands the pointer to libmicrohttpd, so a page load copies nothing; text would cost a
     * malloc and a copy of every file on every request for bytes that never change. */
    const char *static_body;
    size_t static_len;
    /* stream 1: instead of a body, the glue streams the Server-Sent Events of job stream_job
     * after event id stream_after (api/sse.h), for as long as the job has events to come. */
    int stream;
    char stream_job[API_PARAM_MAX];
    int64_t stream_after;
    int nheaders;             /* extra headers: Location, Retry-After, ETag, Content-Range, Allow... */
    struct {
        char name[32];
        char value[512];
    } headers[API_MAX_HEADERS];
} api_response;

/* Limits from the daemon's configuration. */
typedef struct {
    int64_t max_model_bytes;    /* POST /v1/models body */
    int64_t max_dataset_bytes;  /* POST /v1/datasets body */
    int64_t max_json_bytes;     /* every JSON body */
    int max_attempts;           /* a job's attempts when its spec does not say */
    /* Per owner (admins are exempt: they run the service): queued jobs (a 429 with Retry-After
     * past it) and bytes of models and datasets held (a 413 past it). 0 = no limit. */
    int max_queued_jobs;
    int64_t max_owner_upload_bytes;
} api_limits;

/* What a handler may use from outside. Borrowed for the call; the callbacks are called from the
 * HTTP threads and must be thread-safe. */
typedef struct {
    const char *data_dir;       /* DATA: gplq.db, blobs/, tmp/, jobs/<id>/artifacts/<name> */
    api_limits limits;
    store *st;                  /* the calling thread's connection */
    /* auth 1: every route but the API_PUBLIC ones needs a live token ("Authorization: Bearer
     * ..."), and api_dispatch sets owner and creator from it for the handler. auth 0 (tests of
     * one owner): owner and creator are used as given. */
    int auth;
    const char *owner;          /* whose resources the request sees: NULL = every owner (admin) */
    const char *creator;        /* the owner recorded on what it creates; NULL: owner, or "" */
    const char *version;        /* reported by /v1/health */
    /* Signs and checks download links (AUTH_LINK_KEY_LEN bytes, api/auth.h); NULL: links are
     * neither made (503) nor accepted. */
    const unsigned char *link_key;
    /* Hosts a job's webhook may name, comma-separated ("" or NULL: any public address; see
     * api/webhook.h). */
    const char *webhook_allow_hosts;
    /* Wakes the workers: a job was queued or a cancel requested. May be NULL (tests). */
    void (*wake)(void *arg);
    void *wake_arg;
    /* Runs the upload inspector with args such as {"inspect-model", PATH, "--num-heads", "6",
     * NULL} and returns an INSPECT_* code (api/inspect.h) with *out a new object on INSPECT_OK.
     * NULL: every upload is refused with 500. */
    int (*inspect)(void *arg, const char *const *args, json_t **out, char *err, size_t errlen);
    /* 1 with the message if inspect would answer INSPECT_EBUSY now (inspect_busy), so that an
     * upload is refused at its headers, before its body is sent. NULL: never. */
    int (*inspect_busy)(void *arg, char *err, size_t errlen);
    void *inspect_arg;
    /* The workers for /v1/health: a new array of {name, pid, alive, blas_core, threads,
     * restarts, ...}. May be NULL (no supervisor: an empty list). */
    json_t *(*workers)(void *arg);
    void *workers_arg;
} api_ctx;

/* Path parameters of the matched route, in pattern order. */
typedef struct {
    int n;
    char v[API_MAX_PARAMS][API_PARAM_MAX];
} api_params;

typedef void (*api_handler)(api_ctx *ctx, const api_request *req, const api_params *p,
                            api_response *res);

/* Route flags. */
enum {
    API_JSON_BODY = 1 << 0,      /* the body is JSON, buffered up to limits.max_json_bytes */
    API_UPLOAD_MODEL = 1 << 1,   /* the body is a model file, streamed (limits.max_model_bytes) */
    API_UPLOAD_DATASET = 1 << 2, /* the body is a dataset archive, streamed (max_dataset_bytes) */
    API_PUBLIC = 1 << 3,         /* needs no token: health, the OpenAPI document, metrics */
    /* Not part of the REST API: the browser dashboard's page and files (api/web.h). Left out
     * of the OpenAPI document, which stays about the REST API (tests/test_api.c holds the
     * document to the other routes both ways). */
    API_WEB = 1 << 4,
    /* A download link (?expires=&sig=, api/auth.h) may stand in for the token. */
    API_LINK = 1 << 5,
};
#define API_UPLOAD (API_UPLOAD_MODEL | API_UPLOAD_DATASET)

typedef struct {
    const char *method;      /* "GET" (also answers HEAD), "POST", "DELETE" */
    const char *pattern;     /* "/v1/jobs/{id}": a {name} segment matches one non-empty segment */
    const char *name;        /* stable name for logs and metrics: "jobs.get" */
    api_handler handler;
    int flags;
} api_route;

/* The route table, and its length. Static data. */
extern const api_route api_routes[];
extern const int api_nroutes;

/* Finds the route of method and path. On a match returns it (borrowed, static) and fills p.
 * Otherwise returns NULL, and allow receives the methods the path does answer ("GET, DELETE":
 * a 405), or "" when no route has this path (a 404). */
const api_route *api_route_find(const char *method, const char *path, api_params *p, char *allow,
                                size_t allowlen);

/* Checks made before the body arrives, so a request that will be refused is refused before
 * megabytes are read: content_length (-1 if unknown) against the route's limit (413), a
 * multipart form instead of the raw file (415), the query of an upload (400). Returns 1 when res
 * holds the answer (send it and drop the body), 0 to go on. res must be initialized
 * (api_response_init). */
int api_precheck(api_ctx *ctx, const api_route *route, const api_request *req,
                 int64_t content_length, api_response *res);

/* Checks the request's "Authorization: Bearer TOKEN" against the live tokens in ctx->st.
 * Returns 0 with *who filled, or 1 with res holding the answer: 401 with WWW-Authenticate
 * (no token, a malformed, unknown or revoked one), or 503 when the database does not answer.
 * res must be initialized. */
int api_authenticate(api_ctx *ctx, const api_request *req, api_principal *who,
                     api_response *res);

/* api_authenticate, or for an API_LINK route asked without an Authorization header and with a
 * "sig" query, the link's check: a valid link is a principal that sees every owner's resources
 * (the signature pins the one path it can reach), token_id "link". 0, or 1 with res set (401). */
int api_authorize(api_ctx *ctx, const api_route *route, const api_request *req,
                  api_principal *who, api_response *res);

/* Sets ctx->owner and ctx->creator for a request from who: an admin sees every owner. */
void api_ctx_apply(api_ctx *ctx, const api_principal *who);

/* Routes req and runs its handler (404, 405 with Allow, 400 for a body that is not JSON, ...).
 * res is initialized here; the caller releases it with api_response_free. Never fails: every
 * error is a response. */
void api_dispatch(api_ctx *ctx, const api_request *req, api_response *res);

/* The upload limit of a route (0 if it takes no upload). */
int64_t api_upload_limit(const api_ctx *ctx, const api_route *route);

/* ---- helpers shared with the glue ---- */

void api_response_init(api_response *res);
/* Releases the body and closes the file; res can be initialized again. */
void api_response_free(api_response *res);
/* Adds a header (copied); -1 when full or too long. */
int api_response_header(api_response *res, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The significant digits of reals in every JSON answer and event: 0.6, not
 * 0.59999999999999998. */
#define API_REAL_PRECISION 15
/* Sets res to a JSON body (takes the reference). */
void api_json(api_response *res, int status, json_t *body);
/* Sets res to a JSON body already written as text (n bytes, taken), sent as it is: a job
 * written with util/jtext.h at API_REAL_PRECISION and a newline, as the glue writes a json_t
 * body; the OpenAPI document. */
void api_json_text(api_response *res, int status, char *text, size_t n);
/* Sets res to an error {"error": {"code", "message"[, "field"]}}; field may be NULL. Any body
 * already in res is released. */
void api_error(api_response *res, int status, const char *code, const char *field,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Seconds a client is asked to wait (Retry-After) after a storage fault. */
#define API_STORAGE_RETRY_S 30
/* Sets res to the answer to a storage fault: full (the disk, or a quota on it, has no room)
 * or else an I/O error. An upload that did not fit is a 507 insufficient_storage; anything
 * else is a 503 unavailable; both with Retry-After, since both faults may pass. The message
 * says what happened and that nothing was stored or changed, and names no path (the caller
 * logs the details under the request id). */
void api_storage_error(api_response *res, int full, int is_upload);
/* The value of header name (case-insensitive) or of query argument key; borrowed, NULL if
 * absent. */
const char *api_header(const api_request *req, const char *name);
const char *api_query(const api_request *req, const char *key);

#endif
