/*
 * public.c: the routes that need no token (API_PUBLIC): the service's health, its Prometheus
 * metrics, the OpenAPI document, and the dashboard's page and files, embedded in the binary
 * (api/web.h). None of them shows an owner's data.
 */
#include "api/api_int.h"

#include <stdlib.h>
#include <string.h>

#include "api/metrics.h"
#include "api/openapi.h"
#include "api/range.h"
#include "api/web.h"
#include "util/jlog.h"

/* ---------------------------------------------------------------- health */

void api__health(api_ctx *ctx, const api_request *req, const api_params *p,
                 api_response *res) {
    (void)p;
    json_t *workers = ctx->workers ? ctx->workers(ctx->workers_arg) : NULL;
    if (!json_is_array(workers)) {
        json_decref(workers);
        workers = json_array();
    }
    int alive = 0;
    const char *blas = NULL;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w) {
        alive += json_is_true(json_object_get(w, "alive"));
        if (!blas) blas = json_string_value(json_object_get(w, "blas_core"));
    }
    json_t *counts = NULL;
    int rc = store_job_counts(ctx->st, &counts);
    if (rc) jlog("error", req->request_id, "health: %s", store_errmsg(ctx->st));
    json_t *queued = rc ? NULL : json_object_get(counts, "queued");
    /* A database that does not answer makes the service unhealthy: 503, so a load balancer or
     * an orchestrator's probe sees it. */
    api_json(res, rc ? 503 : 200,
             json_pack("{s:s, s:s, s:i, s:o, s:I, s:o, s:o}", "status", rc ? "unavailable" : "ok",
                       "version", ctx->version ? ctx->version : "", "workers_alive", alive,
                       "workers", workers, "queue_depth",
                       (json_int_t)(queued ? json_integer_value(queued) : 0), "jobs",
                       counts ? counts : json_object(), "blas_core",
                       blas ? json_string(blas) : json_null()));
}

/* GET /metrics: Prometheus text. Public, like most exporters (it holds counts, never ids,
 * names or owners), so a scraper needs no token. */
void api__metrics(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res) {
    (void)p;
    json_t *workers = ctx->workers ? ctx->workers(ctx->workers_arg) : NULL;
    size_t n = 0;
    char *text = metrics_render(ctx->st, workers, &n);
    json_decref(workers);
    if (!text) {
        api__internal(req, res, "rendering the metrics: out of memory");
        return;
    }
    api_json(res, 200, NULL);
    res->text = text;
    res->text_len = n;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* GET /v1/openapi.json: public, so that tools can read what the API is before holding a
 * token. */
void api__openapi(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res) {
    (void)ctx;
    (void)p;
    size_t n = openapi_json_len();
    char *text = malloc(n + 1);
    if (!text) {
        api__internal(req, res, "out of memory");
        return;
    }
    memcpy(text, openapi_json(), n + 1);
    api_json_text(res, 200, text, n);
}

/* ---------------------------------------------------------------- the dashboard */

/* The dashboard's CSP. The page holds the user's API token in sessionStorage, so nothing but
 * its own files may run or load: no inline script or style, no other origin to send data to,
 * no framing (clickjacking), no <base> or form that could redirect requests elsewhere. Images
 * may also be data: and blob: URLs: those are made by the page itself. */
#define WEB_CSP                                                                                  \
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "     \
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

/* One embedded file (api/web.h), public. Cache-Control: no-cache makes the browser revalidate
 * every time, so a new gplqd build is picked up at once; the strong ETag keeps that to a 304
 * while the bytes are the same. The same headers go with the 304, as RFC 9110 asks. */
static void web_send(const api_request *req, const web_file *f, api_response *res) {
    api_response_header(res, "ETag", "%s", f->etag);
    api_response_header(res, "Cache-Control", "no-cache");
    api_response_header(res, "X-Content-Type-Options", "nosniff");
    api_response_header(res, "Referrer-Policy", "no-referrer");
    if (!strncmp(f->content_type, "text/html", 9))
        api_response_header(res, "Content-Security-Policy", "%s", WEB_CSP);
    if (range_etag_matches(api_header(req, "If-None-Match"), f->etag)) {
        api_json(res, 304, NULL);
        return;
    }
    api_json(res, 200, NULL);
    res->static_body = f->start;
    res->static_len = web_size(f);
    res->content_type = f->content_type;
}

/* GET /: the dashboard's page. */
void api__web_index(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res) {
    (void)ctx;
    (void)p;
    const web_file *f = web_find("index.html");
    if (!f) {
        api__internal(req, res, "index.html is not embedded");
        return;
    }
    web_send(req, f, res);
}

/* GET /web/{name}: the page's scripts and style sheet (a table lookup: no file system path is
 * ever built from the name). */
void api__web_asset(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res) {
    (void)ctx;
    const web_file *f = web_find(p->v[0]);
    if (!f) {
        api_error(res, 404, "not_found", NULL, "no such file: /web/%s", p->v[0]);
        return;
    }
    web_send(req, f, res);
}
