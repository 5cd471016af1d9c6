/*
 * api.c: see api.h. The route table and what runs around every handler: routing, the checks
 * before the body (api_precheck), authentication, dispatch; and the response and request
 * helpers the handlers share (api_int.h). The handlers themselves are in one file per
 * resource: uploads.c (models, datasets), jobs.c, artifacts.c, public.c (health, metrics,
 * the OpenAPI document, the dashboard).
 */
#include "api/api_int.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "api/auth.h"
#include "util/jlog.h"
#include "util/sha256.h"

/* ---------------------------------------------------------------- responses */

void api_response_init(api_response *res) {
    memset(res, 0, sizeof *res);
    res->status = 500;
    res->fd = -1;
}

void api_response_free(api_response *res) {
    json_decref(res->body);
    if (res->fd >= 0) close(res->fd);
    free(res->text);
    res->body = NULL;
    res->text = NULL;
    res->static_body = NULL; /* borrowed: nothing to release */
    res->static_len = 0;
    res->fd = -1;
}

int api_response_header(api_response *res, const char *name, const char *fmt, ...) {
    if (res->nheaders >= API_MAX_HEADERS || strlen(name) >= sizeof res->headers[0].name) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(res->headers[res->nheaders].value, sizeof res->headers[0].value, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof res->headers[0].value) return -1;
    strcpy(res->headers[res->nheaders].name, name);
    res->nheaders++;
    return 0;
}

void api_json(api_response *res, int status, json_t *body) {
    json_decref(res->body);
    res->status = status;
    res->body = body;
    res->content_type = body ? "application/json" : NULL;
}

void api_json_text(api_response *res, int status, char *text, size_t n) {
    api_json(res, status, NULL);
    free(res->text);
    res->text = text;
    res->text_len = n;
    res->content_type = "application/json";
}

void api_error(api_response *res, int status, const char *code, const char *field,
               const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code));
    json_object_set_new(err, "message", jlog_str(msg));
    if (field) json_object_set_new(err, "field", jlog_str(field));
    if (res->fd >= 0) close(res->fd);
    res->fd = -1;
    free(res->text);
    res->text = NULL;
    res->static_body = NULL;
    res->static_len = 0;
    res->stream = 0;
    api_json(res, status, json_pack("{s:o}", "error", err));
}

/* A 500: the details go to the log under the request id, the client gets only the id. */
void api__internal(const api_request *req, api_response *res, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jlog("error", req->request_id, "%s", msg);
    api_error(res, 500, "internal", NULL, "internal error (request id %s)",
              req->request_id ? req->request_id : "-");
}

void api_storage_error(api_response *res, int full, int is_upload) {
    if (full && is_upload)
        api_error(res, 507, "insufficient_storage", NULL,
                  "the server's disk is full: the upload was not stored; retry once space is "
                  "freed");
    else if (full)
        api_error(res, 503, "unavailable", NULL,
                  "the server's disk is full: nothing was changed; retry once space is freed");
    else
        api_error(res, 503, "unavailable", NULL,
                  "the server's storage failed (an I/O error): %s; retry later",
                  is_upload ? "the upload was not stored" : "nothing was changed");
    api_response_header(res, "Retry-After", "%d", API_STORAGE_RETRY_S);
}

/* The response to a failed store call about the resource what ("model") with id. */
void api__store_error(api_ctx *ctx, const api_request *req, api_response *res, int rc,
                      const char *what, const char *id) {
    if (rc == STORE_EFULL || rc == STORE_EIO) {
        /* The transaction rolled back: a retry once the fault passes is the whole remedy. */
        jlog("error", req->request_id, "store (%s %s): %s", what, id, store_errmsg(ctx->st));
        api_storage_error(res, rc == STORE_EFULL, 0);
    } else if (rc == STORE_ENOTFOUND)
        api_error(res, 404, "not_found", NULL, "%s '%s' not found", what, id);
    else if (rc == STORE_ECONFLICT)
        api_error(res, 409, "conflict", NULL, "%s", store_errmsg(ctx->st));
    else if (rc == STORE_EINVAL)
        api_error(res, 400, "bad_request", NULL, "%s", store_errmsg(ctx->st));
    else
        api__internal(req, res, "store (%s %s): %s", what, id, store_errmsg(ctx->st));
}

/* The owner recorded on what this request creates. */
const char *api__creator(const api_ctx *ctx) {
    return ctx->creator ? ctx->creator : ctx->owner ? ctx->owner : "";
}

/* ---------------------------------------------------------------- requests */

const char *api_header(const api_request *req, const char *name) {
    for (int i = 0; i < req->nheaders; i++)
        if (!strcasecmp(req->headers[i].key, name)) return req->headers[i].value;
    return NULL;
}

const char *api_query(const api_request *req, const char *key) {
    for (int i = 0; i < req->nquery; i++)
        if (!strcmp(req->query[i].key, key)) return req->query[i].value;
    return NULL;
}

/* Refuses query arguments the route does not know (a typo should not be silently ignored).
 * known: NULL-terminated. Returns 0, or -1 with res set. */
int api__query_known(const api_request *req, api_response *res, const char *const *known) {
    for (int i = 0; i < req->nquery; i++) {
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++) ok = !strcmp(req->query[i].key, *k);
        if (!ok) {
            api_error(res, 400, "bad_request", req->query[i].key, "unknown query parameter '%s'",
                      req->query[i].key);
            return -1;
        }
    }
    return 0;
}

int api__query_int(const api_request *req, api_response *res, const char *key, long min,
                   long max, long def, long *out) {
    const char *v = api_query(req, key);
    *out = def;
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno) {
        api_error(res, 400, "bad_request", key, "%s: '%s' is not an integer", key, v);
        return -1;
    }
    if (x < min || x > max) {
        api_error(res, 400, "bad_request", key, "%s %ld is out of range [%ld, %ld]", key, x, min,
                  max);
        return -1;
    }
    *out = x;
    return 0;
}

int api__query_float(const api_request *req, api_response *res, const char *key, double min,
                     double max, double def, double *out) {
    const char *v = api_query(req, key);
    *out = def;
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) {
        api_error(res, 400, "bad_request", key, "%s: '%s' is not a number", key, v);
        return -1;
    }
    if (x < min || x > max) {
        api_error(res, 400, "bad_request", key, "%s %g is out of range [%g, %g]", key, x, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

/* Ids that go into file paths (jobs/<id>/) must be plain: letters, digits, '_' and '-'. */
int api__id_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
    return 1;
}

/* The body of a JSON route as an object (new reference), or NULL with res set. */
json_t *api__body_object(const api_request *req, api_response *res) {
    if (!req->body || req->body_len == 0) {
        api_error(res, 400, "bad_request", NULL, "the body must be a JSON object");
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        api_error(res, 400, "bad_request", NULL, "the body is not valid JSON: %s (line %d, column %d)",
                  je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        api_error(res, 400, "bad_request", NULL, "the body must be a JSON object");
        return NULL;
    }
    return v;
}

void api__set_location(api_response *res, const char *collection, json_t *obj) {
    const char *id = json_string_value(json_object_get(obj, "id"));
    if (id) api_response_header(res, "Location", "/v1/%s/%s", collection, id);
}

/* ---------------------------------------------------------------- routing */

const api_route api_routes[] = {
    {"GET", "/v1/health", "health", api__health, API_PUBLIC},
    {"GET", "/metrics", "metrics", api__metrics, API_PUBLIC},
    {"GET", "/v1/openapi.json", "openapi", api__openapi, API_PUBLIC},
    {"POST", "/v1/models", "models.create", api__model_create, API_UPLOAD_MODEL},
    {"GET", "/v1/models", "models.list", api__model_list, 0},
    {"GET", "/v1/models/{id}", "models.get", api__model_get, 0},
    {"DELETE", "/v1/models/{id}", "models.delete", api__model_delete, 0},
    {"POST", "/v1/datasets", "datasets.create", api__dataset_create, API_UPLOAD_DATASET},
    {"GET", "/v1/datasets", "datasets.list", api__dataset_list, 0},
    {"GET", "/v1/datasets/{id}", "datasets.get", api__dataset_get, 0},
    {"DELETE", "/v1/datasets/{id}", "datasets.delete", api__dataset_delete, 0},
    {"POST", "/v1/jobs", "jobs.create", api__job_create, API_JSON_BODY},
    {"GET", "/v1/jobs", "jobs.list", api__job_list, 0},
    {"GET", "/v1/jobs/{id}", "jobs.get", api__job_get, 0},
    {"DELETE", "/v1/jobs/{id}", "jobs.delete", api__job_delete, 0},
    {"POST", "/v1/jobs/{id}/cancel", "jobs.cancel", api__job_cancel, 0},
    {"GET", "/v1/jobs/{id}/events", "jobs.events", api__job_events, 0},
    {"GET", "/v1/jobs/{id}/webhooks", "jobs.webhooks", api__job_webhooks, 0},
    {"GET", "/v1/jobs/{id}/artifacts", "artifacts.list", api__artifact_list, 0},
    {"GET", "/v1/jobs/{id}/artifacts/{name}", "artifacts.get", api__artifact_get, API_LINK},
    {"POST", "/v1/jobs/{id}/artifacts/{name}/link", "artifacts.link", api__artifact_link, 0},
    {"GET", "/", "web.index", api__web_index, API_PUBLIC | API_WEB},
    {"GET", "/web/{name}", "web.asset", api__web_asset, API_PUBLIC | API_WEB},
};
const int api_nroutes = sizeof api_routes / sizeof *api_routes;

/* Matches path against pattern segment by segment; {x} takes one non-empty segment. */
static int match(const char *pattern, const char *path, api_params *p) {
    p->n = 0;
    const char *a = pattern, *b = path;
    while (*a && *b) {
        if (*a == '{') {
            const char *end = strchr(b, '/');
            size_t n = end ? (size_t)(end - b) : strlen(b);
            if (n == 0 || n >= API_PARAM_MAX || p->n >= API_MAX_PARAMS) return 0;
            memcpy(p->v[p->n], b, n);
            p->v[p->n++][n] = '\0';
            a = strchr(a, '}') + 1;
            b += n;
        } else {
            if (*a != *b) return 0;
            a++, b++;
        }
    }
    return !*a && !*b;
}

const api_route *api_route_find(const char *method, const char *path, api_params *p, char *allow,
                                size_t allowlen) {
    api_params scratch;
    if (allowlen) allow[0] = '\0';
    /* HEAD is GET without the body (the glue's library drops it). */
    const char *m = !strcmp(method, "HEAD") ? "GET" : method;
    for (int i = 0; i < api_nroutes; i++)
        if (!strcmp(api_routes[i].method, m) && match(api_routes[i].pattern, path, p))
            return &api_routes[i];
    for (int i = 0; i < api_nroutes; i++) {
        if (!match(api_routes[i].pattern, path, &scratch)) continue;
        const char *am = api_routes[i].method;
        size_t used = strlen(allow);
        if (!strstr(allow, am))
            snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", am);
        used = strlen(allow);
        if (!strcmp(am, "GET") && !strstr(allow, "HEAD"))
            snprintf(allow + used, allowlen - used, ", HEAD");
    }
    return NULL;
}

int64_t api_upload_limit(const api_ctx *ctx, const api_route *route) {
    if (route->flags & API_UPLOAD_MODEL) return ctx->limits.max_model_bytes;
    if (route->flags & API_UPLOAD_DATASET) return ctx->limits.max_dataset_bytes;
    return 0;
}

static int is_multipart(const api_request *req) {
    const char *ct = api_header(req, "Content-Type");
    return ct && !strncasecmp(ct, "multipart/", 10);
}

int api_precheck(api_ctx *ctx, const api_route *route, const api_request *req,
                 int64_t content_length, api_response *res) {
    if (route->flags & API_UPLOAD) {
        int is_model = (route->flags & API_UPLOAD_MODEL) != 0;
        int64_t limit = api_upload_limit(ctx, route);
        if (limit > 0 && content_length > limit) {
            api_error(res, 413, "too_large", NULL, "the %s is %lld bytes; the limit is %lld bytes",
                      is_model ? "model" : "dataset", (long long)content_length, (long long)limit);
            return 1;
        }
        if (is_multipart(req)) {
            api_error(res, 415, "unsupported_media_type", "Content-Type",
                      "send the file itself as the body (curl --data-binary @FILE), not a "
                      "multipart form");
            return 1;
        }
        api__upload_opts o;
        if (api__upload_query(req, is_model, &o, res)) return 1;
        if (api__upload_quota(ctx, req, content_length, 0, res)) return 1;
        char msg[256];
        if (ctx->inspect_busy && ctx->inspect_busy(ctx->inspect_arg, msg, sizeof msg)) {
            api__inspect_busy(res, msg); /* now, not after a body it would have to drop */
            return 1;
        }
        return 0;
    }
    if (ctx->limits.max_json_bytes > 0 && content_length > ctx->limits.max_json_bytes) {
        api_error(res, 413, "too_large", NULL, "the body is %lld bytes; the limit is %lld bytes",
                  (long long)content_length, (long long)ctx->limits.max_json_bytes);
        return 1;
    }
    if ((route->flags & API_JSON_BODY) && is_multipart(req)) {
        api_error(res, 415, "unsupported_media_type", "Content-Type", "the body must be JSON");
        return 1;
    }
    return 0;
}

/* RFC 6750: a 401 names the scheme, and says "invalid_token" when a token was sent. */
static int unauthorized(api_response *res, int sent, const char *msg) {
    api_error(res, 401, "unauthorized", NULL, "%s", msg);
    api_response_header(res, "WWW-Authenticate", "Bearer realm=\"gplq\"%s",
                        sent ? ", error=\"invalid_token\"" : "");
    return 1;
}

int api_authenticate(api_ctx *ctx, const api_request *req, api_principal *who,
                     api_response *res) {
    memset(who, 0, sizeof *who);
    const char *h = api_header(req, "Authorization");
    if (!h || !*h)
        return unauthorized(res, 0, "this route needs a token: send \"Authorization: Bearer "
                                    "TOKEN\" (gplqd token create --name NAME makes one)");
    while (*h == ' ') h++;
    if (strncasecmp(h, "Bearer ", 7))
        return unauthorized(res, 1, "the Authorization header must be \"Bearer TOKEN\"");
    h += 7;
    while (*h == ' ') h++;
    char token[AUTH_TOKEN_LEN + 1], id[AUTH_ID_LEN + 1], hash[65], stored[65];
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ') n--;
    if (n != AUTH_TOKEN_LEN) return unauthorized(res, 1, "this token is not valid");
    memcpy(token, h, n);
    token[n] = '\0';
    if (auth_token_parse(token, id, hash)) return unauthorized(res, 1, "this token is not valid");
    if (!ctx->st) {
        api_error(res, 503, "unavailable", NULL, "the database cannot be opened");
        return 1;
    }
    int rc = store_token_find(ctx->st, id, stored, who->owner, sizeof who->owner, &who->admin);
    if (rc == STORE_ENOTFOUND)
        return unauthorized(res, 1, "this token is not valid (unknown or revoked)");
    if (rc) {
        jlog("error", req->request_id, "token lookup: %s", store_errmsg(ctx->st));
        api_error(res, 503, "unavailable", NULL, "tokens cannot be checked now (request id %s)",
                  req->request_id ? req->request_id : "-");
        return 1;
    }
    /* The id found the row; the hashes decide, compared in constant time. */
    if (!sha256_equal(hash, stored, 64))
        return unauthorized(res, 1, "this token is not valid (unknown or revoked)");
    snprintf(who->token_id, sizeof who->token_id, "%s", id);
    return 0;
}

int api_authorize(api_ctx *ctx, const api_route *route, const api_request *req,
                  api_principal *who, api_response *res) {
    const char *h = api_header(req, "Authorization");
    if (!(route->flags & API_LINK) || (h && *h) || !api_query(req, "sig"))
        return api_authenticate(ctx, req, who, res);
    memset(who, 0, sizeof *who);
    const char *why = "this server makes no links";
    if (!ctx->link_key || auth_link_check(ctx->link_key, req->path, api_query(req, "expires"),
                                          api_query(req, "sig"), (long long)time(NULL), &why)) {
        char msg[600];
        snprintf(msg, sizeof msg, "this download link is not valid: %s; ask for a new one (POST "
                 "%.400s/link) or send a token", why, req->path);
        return unauthorized(res, 1, msg);
    }
    who->admin = 1;
    snprintf(who->token_id, sizeof who->token_id, "link");
    return 0;
}

void api_ctx_apply(api_ctx *ctx, const api_principal *who) {
    ctx->owner = who->admin ? NULL : who->owner;
    ctx->creator = who->owner;
}

void api_dispatch(api_ctx *ctx, const api_request *req, api_response *res) {
    api_response_init(res);
    api_params p;
    char allow[64];
    const api_route *r = api_route_find(req->method, req->path, &p, allow, sizeof allow);
    /* The handler sees the owner of the token, on a copy: ctx may serve other requests. */
    api_ctx c = *ctx;
    api_principal local;
    int answered = 0;
    if (r && ctx->auth && !(r->flags & API_PUBLIC)) {
        const api_principal *who = req->who;
        if (!who && !(answered = api_authorize(ctx, r, req, &local, res))) who = &local;
        if (who) api_ctx_apply(&c, who);
    }
    if (answered) {
        /* a 401 or 503 from api_authorize */
    } else if (!r && allow[0]) {
        api_response_header(res, "Allow", "%s", allow);
        api_error(res, 405, "method_not_allowed", NULL, "%s is not allowed on %s (allowed: %s)",
                  req->method, req->path, allow);
    } else if (!r) {
        api_error(res, 404, "not_found", NULL, "no such route: %s %s", req->method, req->path);
    } else {
        r->handler(&c, req, &p, res);
    }
    /* The writer must end closed whatever happened (the contract in api.h); a route that does
     * not take uploads never looked at it. */
    if (req->upload && req->upload->fd >= 0) blob_abort(req->upload);
}
