/*
 * fuzz_api.c: libFuzzer harness of gplqd's REST API below the socket (api/api.h): the router
 * (api_route_find, path parameters, 404 and 405), the checks before the body (api_authorize
 * with tokens and download links, api_precheck), and api_dispatch into every handler with its
 * query arguments, headers and JSON or upload body, against the fixture's database
 * (fixture.h: the same state at every run).
 *
 * The input is an HTTP/1.1 request as it comes on the wire, "\n" or "\r\n" line ends:
 *
 *     POST /v1/jobs?x=1 HTTP/1.1
 *     Authorization: Bearer @T
 *     Content-Type: application/json
 *
 *     {"model_id": "@M", "dataset_id": "@D"}
 *
 * with the fixture's placeholders (@T, @M, ...) replaced first. The harness does what
 * server/http.c and libmicrohttpd do before the API sees a request: the target is cut at '?',
 * the path and each query key and value are URL-decoded as the glue's unescape_keep_nul does
 * (after '+' became ' ' in the query, as libmicrohttpd does), a request that keeps a %00 or
 * has ambiguous framing is dropped (the glue answers 400 itself), at most 64 query arguments
 * and 64 headers are kept; then api_authorize and api_precheck on the headers, the body
 * streamed into a blob writer for the upload routes, and api_dispatch.
 *
 * The contract checked: the status is an HTTP status; a body serializes; a file response's
 * range lies inside the file; a stream's events can be read (sse_fill); a 404 from POST /v1/jobs
 * names the model_id or the dataset_id that was not found (the handler's only two; any other
 * 404 there is a store code that means something else coming back as "not found").
 */
#include <ftw.h>
#include <strings.h>
#include <sys/stat.h>

#include "api/sse.h"
#include "storage/blob.h"
#include "tests/fuzz/fixture.h"
#include "tests/fuzz/fuzz.h"

#define MAX_KV 64 /* HTTP_MAX_KV of server/http.c */

static fuzz_fx fx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_fx_init(&fx);
    return 0;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* server/http.c's unescape_keep_nul: %XX decoded, invalid escapes and %00 kept. */
static void unescape(char *s) {
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
}

static void plus_to_space(char *s) {
    for (; *s; s++)
        if (*s == '+') *s = ' ';
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = '\0';
    return s;
}

/* The next line of [*p, end): NUL-terminated in place, "\r\n" or "\n" removed; NULL at the end
 * of the head (an empty line) or of the input. */
static char *next_line(char **p, char *end) {
    if (*p >= end) return NULL;
    char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) {
        *p = end;
        return s; /* the last line, with no body after it */
    }
    *nl = '\0';
    *p = nl + 1;
    if (nl > s && nl[-1] == '\r') nl[-1] = '\0';
    return s[0] ? s : NULL;
}

static int header_count(const api_kv *h, int n, const char *name) {
    int c = 0;
    for (int i = 0; i < n; i++) c += !strcasecmp(h[i].key, name);
    return c;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)st;
    (void)f;
    if (flag != FTW_DP) unlink(path);
    return 0;
}

static void check_response(const api_route *route, const api_response *res) {
    if (res->status < 100 || res->status > 599) abort();
    if (res->body) {
        char *s = json_dumps(res->body, JSON_COMPACT | JSON_REAL_PRECISION(API_REAL_PRECISION));
        if (!s) abort();
        if (fuzz_verbose()) fprintf(stderr, "fuzz: %d %.300s\n", res->status, s);
        const char *field = json_string_value(
            json_object_get(json_object_get(res->body, "error"), "field"));
        if (route && !strcmp(route->name, "jobs.create") && res->status == 404 &&
            (!field || (strcmp(field, "model_id") && strcmp(field, "dataset_id")))) {
            fprintf(stderr, "fuzz: POST /v1/jobs answered 404 about no model or dataset: %s\n", s);
            abort();
        }
        free(s);
    } else if (res->text && res->content_type && !strcmp(res->content_type, "application/json")) {
        /* written as text (api_json_text): it must still be JSON */
        json_t *v = json_loadb(res->text, res->text_len, 0, NULL);
        if (!v) {
            fprintf(stderr, "fuzz: a JSON answer that does not parse: %.300s\n", res->text);
            abort();
        }
        json_decref(v);
    } else if (fuzz_verbose()) {
        fprintf(stderr, "fuzz: %d (no JSON body)\n", res->status);
    }
    if (res->fd >= 0) {
        struct stat st;
        if (fstat(res->fd, &st)) abort();
        if (res->offset < 0 || res->length < 0 || res->offset + res->length > st.st_size) abort();
    }
    if (res->stream) {
        sse_stream s;
        if (sse_init(&s, res->stream_job, res->stream_after, 1000)) abort();
        for (int i = 0; i < 4 && !s.ended; i++)
            if (sse_fill(&s, fx.st) < 0) break;
        sse_free(&s);
    }
}

static void run(char *req_text, size_t len) {
    char *p = req_text, *end = req_text + len;
    char *line = next_line(&p, end);
    if (!line) return;
    /* request line: METHOD SP TARGET [SP VERSION] */
    char *method = line, *target = strchr(line, ' ');
    if (!target) return;
    *target++ = '\0';
    char *sp = strchr(target, ' ');
    if (sp) *sp = '\0';
    if (!*method || !*target) return;

    api_kv query[MAX_KV], headers[MAX_KV];
    int nquery = 0, nheaders = 0;
    char *q = strchr(target, '?');
    if (q) {
        *q++ = '\0';
        for (char *arg = q; arg && nquery < MAX_KV;) {
            char *amp = strchr(arg, '&');
            if (amp) *amp++ = '\0';
            if (*arg) {
                char *eq = strchr(arg, '=');
                if (eq) *eq++ = '\0';
                plus_to_space(arg);
                unescape(arg);
                if (eq) plus_to_space(eq), unescape(eq);
                query[nquery++] = (api_kv){arg, eq ? eq : ""};
            }
            arg = amp;
        }
    }
    char *path = target;
    unescape(path);
    while ((line = next_line(&p, end))) {
        char *colon = strchr(line, ':');
        if (!colon || colon == line || nheaders >= MAX_KV) continue;
        *colon = '\0';
        headers[nheaders++] = (api_kv){line, trim(colon + 1)};
    }
    const char *body = p < end ? p : NULL;
    size_t body_len = p < end ? (size_t)(end - p) : 0;

    /* What the glue refuses before the API sees it. */
    if (strstr(path, "%00")) return;
    for (int i = 0; i < nquery; i++)
        if (strstr(query[i].key, "%00") || strstr(query[i].value, "%00")) return;
    int ncl = header_count(headers, nheaders, "Content-Length");
    if (ncl > 1 || (ncl && header_count(headers, nheaders, "Transfer-Encoding"))) return;

    api_request req = {.method = method, .path = path, .query = query, .nquery = nquery,
                       .headers = headers, .nheaders = nheaders, .request_id = "fuzz"};
    api_response res;
    api_response_init(&res);
    api_params params;
    char allow[64];
    const api_route *route = api_route_find(method, path, &params, allow, sizeof allow);
    api_principal who;
    if (route && !(route->flags & API_PUBLIC)) {
        if (api_authorize(&fx.ctx, route, &req, &who, &res)) goto done;
        req.who = &who;
    }
    if (route) {
        api_ctx ctx = fx.ctx;
        if (req.who) api_ctx_apply(&ctx, req.who);
        if (api_precheck(&ctx, route, &req, (int64_t)body_len, &res)) goto done;
    }
    api_response_free(&res);
    blob_writer w = {.fd = -1};
    if (route && (route->flags & API_UPLOAD)) {
        char err[512];
        if (blob_begin(&w, fx.dir, err, sizeof err)) return;
        if (body_len && blob_write(&w, body, body_len, err, sizeof err)) {
            blob_abort(&w);
            return;
        }
        req.upload = &w;
    } else {
        req.body = body;
        req.body_len = body_len;
    }
    api_dispatch(&fx.ctx, &req, &res);
    if (w.fd >= 0) abort(); /* the handler leaves the upload closed (api.h) */
    if (req.upload) {
        /* an accepted upload's blob: the next run starts without it, as its row */
        char blobs[300];
        snprintf(blobs, sizeof blobs, "%s/blobs", fx.dir);
        nftw(blobs, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        blob_init(fx.dir, (char[8]){0}, 8);
    }
done:
    check_response(route, &res);
    api_response_free(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 17) return 0;
    size_t len;
    char *text = fuzz_fx_expand(&fx, (const char *)data, size, &len);
    if (!text) return 0;
    if (fuzz_fx_begin(&fx) == 0) {
        run(text, len);
        fuzz_fx_end(&fx);
    }
    free(text);
    return 0;
}
