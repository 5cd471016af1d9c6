/*
 * client.c: see client.h.
 *
 * `gplq submit` does what a pipeline step needs in one command: upload the model (and the
 * dataset, when --data names a file), submit the job with the stage options (the same table
 * as `gplq quantize`, config/jobspec.h), follow it (the server's event stream, or polling if
 * the server has none), download and verify the artifacts, and exit 0 only if the job
 * succeeded. Server and token come from --server/--token or $GPLQ_SERVER/$GPLQ_TOKEN.
 */
#include "cli/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/command.h"
#include "cli/progress.h"
#include "config/jobspec.h"
#include "config/options.h"
#include "util/fs.h"
#include "util/sha256.h"

#define N_OPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- HTTP ---- */

typedef struct {
    const char *server;   /* "http://host:port", no trailing slash */
    const char *token;    /* NULL: none */
    const char *header;   /* one more request header ("Idempotency-Key: ..."), or NULL */
    progress_bar *bar;        /* upload progress, optional */
    const char *what;     /* "uploading model.safetensors" */
    int sent;             /* the whole body has been drawn as sent */
} conn;

typedef struct {
    char *data;
    size_t len, cap;
} buf;

static size_t on_body(char *p, size_t size, size_t n, void *ctx) {
    buf *b = ctx;
    size_t add = size * n;
    if (b->len + add + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + add;
        char *d = realloc(b->data, cap);
        if (!d) return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = 0;
    return add;
}

static int on_xfer(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                   curl_off_t ulnow) {
    (void)dltotal, (void)dlnow;
    conn *c = ctx;
    if (!c->bar || ultotal <= 0 || c->sent) return 0;
    /* the end is drawn once, whatever the throttle says; curl goes on calling with it while
     * the server checks the upload */
    c->sent = ulnow == ultotal;
    progress_update(c->bar, (double)ulnow / ultotal, c->sent, "%s %.1f/%.1f MB", c->what,
                    ulnow / 1048576.0, ultotal / 1048576.0);
    return 0;
}

/* One request. body: JSON text (json != NULL) or a file to stream (path != NULL) or none.
 * Returns the HTTP status (0 when no answer came, with err set); *out receives the parsed JSON
 * answer (new, may be NULL). */
static long request(conn *c, const char *method, const char *path, const char *json,
                    const char *file, json_t **out, char *err, size_t errlen) {
    CURL *h = curl_easy_init();
    if (out) *out = NULL;
    if (!h) {
        snprintf(err, errlen, "cannot start libcurl");
        return 0;
    }
    char url[4096], auth[1024];
    snprintf(url, sizeof url, "%s%s", c->server, path);
    struct curl_slist *hd = NULL;
    if (c->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hd = curl_slist_append(hd, auth);
    }
    if (c->header) hd = curl_slist_append(hd, c->header);
    FILE *f = NULL;
    buf b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (json) {
        hd = curl_slist_append(hd, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    } else if (file) {
        struct stat st;
        if (!(f = fopen(file, "rb")) || fstat(fileno(f), &st)) {
            snprintf(err, errlen, "cannot read %.900s: %s", file, strerror(errno));
            if (f) fclose(f);
            curl_slist_free_all(hd);
            curl_easy_cleanup(h);
            return 0;
        }
        hd = curl_slist_append(hd, "Content-Type: application/octet-stream");
        hd = curl_slist_append(hd, "Expect:"); /* no 100-continue round trip */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READDATA, f);  /* streamed from disk, never whole in memory */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s %.1500s: %s", method, url, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        json_t *j = b.len ? json_loadb(b.data, b.len, 0, NULL) : NULL;
        if (status >= 400) {
            json_t *e = json_object_get(j, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            snprintf(err, errlen, "%s %s: %ld %s", method, path, status,
                     msg ? msg : (b.data ? b.data : ""));
        }
        if (out) *out = j;
        else json_decref(j);
    }
    if (f) fclose(f);
    free(b.data);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

/* Downloads path into file (written beside, then renamed), checking its SHA-256. */
static int download(conn *c, const char *path, const char *file, const char *sha, char *err,
                    size_t errlen) {
    char tmp[4200], url[4096], auth[1024];
    snprintf(tmp, sizeof tmp, "%s.part", file);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %.900s: %s", tmp, strerror(errno));
        return -1;
    }
    CURL *h = curl_easy_init();
    struct curl_slist *hd = NULL;
    if (c->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hd = curl_slist_append(hd, auth);
    }
    snprintf(url, sizeof url, "%s%s", c->server, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(h);
    int bad = fclose(f) != 0 || rc != CURLE_OK;
    if (rc != CURLE_OK) snprintf(err, errlen, "GET %s: %s", path, curl_easy_strerror(rc));
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    if (!bad && sha) {
        /* the server named the bytes: prove that these are they */
        FILE *r = fopen(tmp, "rb");
        sha256_ctx s;
        sha256_init(&s);
        char chunk[65536], hex[65];
        size_t n;
        while (r && (n = fread(chunk, 1, sizeof chunk, r)) > 0) sha256_update(&s, chunk, n);
        if (r) fclose(r);
        uint8_t d[32];
        sha256_final(&s, d);
        sha256_hex(d, hex);
        if (strcmp(hex, sha)) {
            snprintf(err, errlen, "%.900s: SHA-256 %s, the server said %s", file, hex, sha);
            bad = 1;
        }
    }
    if (bad || rename(tmp, file)) {
        if (!bad) snprintf(err, errlen, "cannot write %.900s: %s", file, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- following a job ---- */

static int job_ended(const char *state) {
    return state && (!strcmp(state, "succeeded") || !strcmp(state, "failed") ||
                     !strcmp(state, "canceled"));
}

static void show_progress(progress_bar *bar, json_t *job) {
    json_t *p = json_object_get(job, "progress");
    const char *stage = json_string_value(json_object_get(p, "stage"));
    if (!stage) stage = json_string_value(json_object_get(job, "state"));
    double f = json_number_value(json_object_get(p, "fraction"));
    double eta = json_is_number(json_object_get(p, "eta_s")) ? json_number_value(json_object_get(p, "eta_s")) : -1;
    char etas[40] = "", d[32]; /* " ETA 3m05s", or nothing before there is an estimate */
    if (eta >= 0) {
        progress_fmt_duration(d, sizeof d, eta);
        if (strcmp(d, "?")) snprintf(etas, sizeof etas, " ETA %s", d);
    }
    json_t *l = json_object_get(p, "losses");
    if (l && stage && !strcmp(stage, "stage1"))
        progress_update(bar, f, 0, "stage 1 step %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
                        " ce %.4f pca %.4f%s", json_integer_value(json_object_get(p, "step")),
                        json_integer_value(json_object_get(p, "total")),
                        json_number_value(json_object_get(l, "ce")),
                        json_number_value(json_object_get(l, "pca")), etas);
    else {
        /* "evaluate gplq", "calibrate ptq_baseline"; a part named as its stage ("stage2") once */
        const char *part = json_string_value(json_object_get(p, "part"));
        if (!part || (stage && !strcmp(part, stage))) part = "";
        progress_update(bar, f, 0, "%s%s%s%s", stage ? stage : "queued", *part ? " " : "",
                        part, etas);
    }
}

typedef struct {
    buf line;
    char event[64];
    buf data;
    char last_id[64];
    progress_bar *bar;
    char state[32];       /* the job's state as last seen */
} sse;

/* One Server-Sent Events field line (without its newline). */
static void sse_line(sse *s, const char *l) {
    if (!*l) { /* end of an event: dispatch it */
        /* data: the event row {id, type, data: {...}}: a state event's data carries the job
         * as it was, a progress event's data is the progress object */
        json_t *d = s->data.len ? json_loads(s->data.data, 0, NULL) : NULL;
        json_t *inner = json_object_get(d, "data");
        json_t *job = json_object_get(inner, "job");
        if (job) {
            const char *st = json_string_value(json_object_get(job, "state"));
            if (st) snprintf(s->state, sizeof s->state, "%s", st);
            if (json_object_get(job, "progress")) show_progress(s->bar, job);
        } else if (inner && !strcmp(s->event, "progress")) {
            json_t *wrap = json_pack("{s:O}", "progress", inner);
            show_progress(s->bar, wrap);
            json_decref(wrap);
        }
        json_decref(d);
        s->data.len = 0;
        s->event[0] = 0;
        return;
    }
    if (l[0] == ':') return; /* a comment: the server's keep-alive */
    const char *v = strchr(l, ':');
    size_t klen = v ? (size_t)(v - l) : strlen(l);
    v = v ? v + 1 + (v[1] == ' ') : "";
    if (klen == 2 && !strncmp(l, "id", 2)) snprintf(s->last_id, sizeof s->last_id, "%s", v);
    else if (klen == 5 && !strncmp(l, "event", 5)) snprintf(s->event, sizeof s->event, "%s", v);
    else if (klen == 4 && !strncmp(l, "data", 4)) {
        if (s->data.len) on_body("\n", 1, 1, &s->data);
        on_body((char *)v, 1, strlen(v), &s->data);
    }
}

static size_t on_sse(char *p, size_t size, size_t n, void *ctx) {
    sse *s = ctx;
    for (size_t i = 0; i < size * n; i++) {
        if (p[i] == '\n') {
            if (s->line.len && s->line.data[s->line.len - 1] == '\r') s->line.data[--s->line.len] = 0;
            sse_line(s, s->line.len ? s->line.data : "");
            s->line.len = 0;
        } else {
            on_body(p + i, 1, 1, &s->line);
        }
    }
    return size * n;
}

/* Follows the job until it ends: its event stream (reconnecting with Last-Event-ID when the
 * connection drops), or by polling when the server has no stream. *job_out: the final job. */
static int follow(conn *c, const char *id, progress_bar *bar, json_t **job_out, char *err,
                  size_t errlen) {
    sse s = {.bar = bar};
    char path[512], url[4096], auth[1024], lid[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    int streaming = 1, failures = 0;
    for (;;) {
        if (streaming) {
            CURL *h = curl_easy_init();
            struct curl_slist *hd = NULL;
            if (c->token) {
                snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
                hd = curl_slist_append(hd, auth);
            }
            hd = curl_slist_append(hd, "Accept: text/event-stream");
            if (s.last_id[0]) {
                snprintf(lid, sizeof lid, "Last-Event-ID: %s", s.last_id);
                hd = curl_slist_append(hd, lid);
            }
            snprintf(url, sizeof url, "%s%s", c->server, path);
            curl_easy_setopt(h, CURLOPT_URL, url);
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sse);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
            curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
            CURLcode rc = curl_easy_perform(h);
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            curl_slist_free_all(hd);
            curl_easy_cleanup(h);
            if (rc == CURLE_HTTP_RETURNED_ERROR && (status == 404 || status == 405) && !s.last_id[0])
                streaming = 0; /* a server without the stream: poll instead */
            else if (rc != CURLE_OK && ++failures > 30) {
                snprintf(err, errlen, "lost the server: %s", curl_easy_strerror(rc));
                break;
            }
        }
        /* the stream ended (or we poll): ask the job itself */
        json_t *job = NULL;
        snprintf(path, sizeof path, "/v1/jobs/%s", id);
        long st = request(c, "GET", path, NULL, NULL, &job, err, errlen);
        snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
        if (st == 200 && job_ended(json_string_value(json_object_get(job, "state")))) {
            *job_out = job;
            free(s.line.data);
            free(s.data.data);
            return 0;
        }
        if (st == 200) show_progress(bar, job);
        json_decref(job);
        if (st >= 400 && st < 500) break; /* gone or not ours: say so */
        struct timespec ts = {streaming ? 0 : 1, streaming ? 200000000L : 0};
        nanosleep(&ts, NULL);
    }
    free(s.line.data);
    free(s.data.data);
    return -1;
}

/* ---- the commands ---- */

static struct {
    const char *server, *token, *model, *data, *out, *name, *job, *state, *key, *mean, *std;
    int wait, json, limit, max_attempts, links, img_size;
    jobspec js;
} C;

static void conn_init(conn *c) {
    if (!C.server) C.server = getenv("GPLQ_SERVER");
    if (!C.server) C.server = "http://127.0.0.1:8080";
    if (!C.token) C.token = getenv("GPLQ_TOKEN");
    static char server[1024];
    snprintf(server, sizeof server, "%s", C.server);
    size_t n = strlen(server);
    while (n && server[n - 1] == '/') server[--n] = 0;
    *c = (conn){.server = server, .token = C.token && *C.token ? C.token : NULL};
}

#define CONN_OPTS                                                                                  \
    {"server", OPT_STR, &C.server, NULL, 0, 0, "gplqd's URL (default $GPLQ_SERVER, else http://127.0.0.1:8080)"}, \
    {"token", OPT_STR, &C.token, NULL, 0, 0, "API token (default $GPLQ_TOKEN)"},                                 \
    {"json", OPT_FLAG, &C.json, "0", 0, 0, "print JSON"}

static void print_json(json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
    printf("%s\n", s ? s : "null");
    free(s);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Uploads file to route with query (more "&k=v" of the query, URL-escaped; "" for none); its id
 * into id (64 bytes), and into *config (if not NULL) its "config" (new reference, NULL if the
 * answer has none). */
static int upload(conn *c, const char *route, const char *file, const char *query, char *id,
                  json_t **config, char *err, size_t errlen) {
    char path[2048], *esc;
    CURL *h = curl_easy_init();
    esc = curl_easy_escape(h, base_name(file), 0);
    snprintf(path, sizeof path, "%s?name=%s%s", route, esc ? esc : "upload", query);
    curl_free(esc);
    curl_easy_cleanup(h);
    if (config) *config = NULL;
    progress_bar bar;
    progress_init(&bar, stderr, 5);
    c->bar = C.json ? NULL : &bar;
    c->sent = 0;
    char what[600];
    snprintf(what, sizeof what, "uploading %.500s", base_name(file));
    c->what = what;
    json_t *r;
    long st = request(c, "POST", path, NULL, file, &r, err, errlen);
    progress_done(&bar);
    c->bar = NULL;
    const char *i = json_string_value(json_object_get(r, "id"));
    if ((st != 200 && st != 201) || !i) {
        if (st == 200 || st == 201) snprintf(err, errlen, "POST %s: the answer has no id", route);
        json_decref(r);
        return -1;
    }
    snprintf(id, 64, "%s", i);
    if (config) *config = json_incref(json_object_get(r, "config"));
    json_decref(r);
    return 0;
}

/* The model upload's query beyond its name: what the checkpoint may not say (the server's
 * inspector and the job's worker both load it with these). mean and std go as given; the
 * server checks them, with the same parser as `gplq quantize`. */
static void model_query(char *q, size_t n, int heads, int img_size, const char *mean,
                        const char *std) {
    size_t k = 0;
    q[0] = 0;
    if (heads > 0) k += (size_t)snprintf(q + k, n - k, "&num_heads=%d", heads);
    if (img_size > 0 && k < n) k += (size_t)snprintf(q + k, n - k, "&img_size=%d", img_size);
    const char *keys[] = {"mean", "std"}, *vals[] = {mean, std};
    for (int i = 0; i < 2; i++) {
        if (!vals[i] || k >= n) continue;
        char *e = curl_easy_escape(NULL, vals[i], 0);
        k += (size_t)snprintf(q + k, n - k, "&%s=%s", keys[i], e ? e : "");
        curl_free(e);
    }
}

/* "Swin: img 16, patch 2, ..." of an uploaded model's config (older servers send no
 * description: then the family and the figures every config has). */
static void model_line(json_t *config, char *out, size_t n) {
    const char *desc = json_string_value(json_object_get(config, "description"));
    const char *arch = json_string_value(json_object_get(config, "arch"));
    if (desc) snprintf(out, n, "%s", desc);
    else snprintf(out, n, "%s: img %" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT " classes",
                  arch && !strcmp(arch, "swin") ? "Swin" : "ViT",
                  json_integer_value(json_object_get(config, "img_size")),
                  json_integer_value(json_object_get(config, "num_classes")));
}

static int get_artifacts(conn *c, const char *job, const char *dir, char *err, size_t errlen) {
    char path[512];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts", job);
    json_t *r;
    if (request(c, "GET", path, NULL, NULL, &r, err, errlen) != 200) {
        json_decref(r);
        return -1;
    }
    if (fs_mkdirs(dir)) { /* --out out/demo on a fresh clone: out/ too */
        snprintf(err, errlen, "cannot create %.900s: %s", dir, strerror(errno));
        json_decref(r);
        return -1;
    }
    size_t i;
    json_t *a;
    int rc = 0;
    json_array_foreach(json_object_get(r, "artifacts"), i, a) {
        const char *name = json_string_value(json_object_get(a, "name"));
        if (!name || strchr(name, '/') || name[0] == '.') continue; /* never outside dir */
        char file[4200], p[1024];
        snprintf(file, sizeof file, "%s/%s", dir, name);
        snprintf(p, sizeof p, "/v1/jobs/%s/artifacts/%s", job, name);
        if ((rc = download(c, p, file, json_string_value(json_object_get(a, "sha256")), err, errlen)))
            break;
        if (!C.json) fprintf(stderr, "gplq: %s (%" JSON_INTEGER_FORMAT " bytes)\n", file,
                             json_integer_value(json_object_get(a, "bytes")));
    }
    json_decref(r);
    return rc;
}

static void print_accuracy(json_t *job) {
    json_t *m = json_object_get(job, "metrics"), *spec = json_object_get(job, "spec");
    int w = (int)json_integer_value(json_object_get(spec, "wbits"));
    int a = (int)json_integer_value(json_object_get(spec, "abits"));
    static const char *keys[] = {"fp32", "stage1", "stage2_noqwt", "gplq", "ptq_baseline",
                                 "minmax_baseline", "ort_onnx", "ort_w4"};
    char names[8][64];
    snprintf(names[0], 64, "FP32");
    snprintf(names[1], 64, "W32A%d (stage 1)", a);
    snprintf(names[2], 64, "W%dA%d without QwT", w, a);
    snprintf(names[3], 64, "W%dA%d GPLQ", w, a);
    snprintf(names[4], 64, "PTQ alone (W%dA%d + QwT)", w, a);
    snprintf(names[5], 64, "min-max W%dA%d", w, a);
    snprintf(names[6], 64, "model.onnx in ONNX Runtime");
    snprintf(names[7], 64, "model.w4.onnx (W%dA32), ORT", w);
    printf("%-28s %8s\n", "model", "top-1");
    for (int i = 0; i < 8; i++) {
        json_t *v = json_object_get(m, keys[i]);
        if (json_is_number(v)) printf("%-28s %7.2f%%\n", names[i], 100 * json_number_value(v));
    }
}

int client_submit(int argc, char **argv) {
    opt_spec specs[16 + JOBSPEC_NOPTS] = {
        CONN_OPTS,
        {"model", OPT_STR, &C.model, NULL, 0, 0, "FP32 checkpoint to upload (safetensors)"},
        {"data", OPT_STR, &C.data, "fashion-mnist", 0, 0, "a dataset id on the server, or a .tar/.tar.gz image folder to upload"},
        {"wait", OPT_FLAG, &C.wait, "0", 0, 0, "follow the job to its end; exit 1 unless it succeeded"},
        {"out", OPT_STR, &C.out, NULL, 0, 0, "download the artifacts here when it succeeds (implies --wait)"},
        {"idempotency-key", OPT_STR, &C.key, NULL, 0, 0, "the same key submits once (pipelines that retry)"},
        {"max-attempts", OPT_INT, &C.max_attempts, "0", 0, 100, "attempts before the job fails (0: the server's default)"},
        {"img-size", OPT_INT, &C.img_size, "0", 0, 4096, "the model's input size if its file does not say (a Swin's)"},
        {"mean", OPT_STR, &C.mean, NULL, 0, 0, "the model's input mean if its file does not say: one value or three"},
        {"std", OPT_STR, &C.std, NULL, 0, 0, "the model's input std if its file does not say (with --mean)"},
    };
    int n = 12;
    jobspec_table(&C.js, specs + n);
    n += JOBSPEC_NOPTS;
    int pc = command_parse("submit", "--model FILE [--data ID|FILE] [--wait] [--out DIR] [stage options]",
                   specs, n, argc, argv);
    if (pc >= 0) return pc;
    if (!C.model) {
        fprintf(stderr, "gplq submit: --model is required\n");
        return 2;
    }
    if (C.out) C.wait = 1;
    conn c;
    conn_init(&c);
    char err[2048], mid[64], did[64], query[1024], line[512];
    model_query(query, sizeof query, C.js.num_heads, C.img_size, C.mean, C.std);
    json_t *mconfig;
    if (upload(&c, "/v1/models", C.model, query, mid, &mconfig, err, sizeof err)) goto fail;
    model_line(mconfig, line, sizeof line);
    json_decref(mconfig);
    if (!C.json) fprintf(stderr, "gplq: model %s: %s\n", mid, line);
    struct stat st;
    if (stat(C.data, &st) == 0 && S_ISREG(st.st_mode)) {
        if (upload(&c, "/v1/datasets", C.data, "", did, NULL, err, sizeof err)) goto fail;
    } else {
        snprintf(did, sizeof did, "%s", C.data);
    }
    json_t *spec = jobspec_to_json(&C.js);
    json_object_set_new(spec, "model_id", json_string(mid));
    json_object_set_new(spec, "dataset_id", json_string(did));
    if (C.max_attempts) json_object_set_new(spec, "max_attempts", json_integer(C.max_attempts));
    char *body = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    json_t *job;
    char idem[512];
    if (C.key) {  /* a pipeline that retries this step gets the same job back */
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", C.key);
        c.header = idem;
    }
    long code = request(&c, "POST", "/v1/jobs", body, NULL, &job, err, sizeof err);
    c.header = NULL;
    free(body);
    if (code != 201 && code != 200) goto fail;
    const char *id = json_string_value(json_object_get(job, "id"));
    char jid[64];
    snprintf(jid, sizeof jid, "%s", id ? id : "");
    if (!C.json) fprintf(stderr, "gplq: job %s submitted (%s/v1/jobs/%s)\n", jid, c.server, jid);
    if (!C.wait) {
        if (C.json) print_json(job);
        else printf("%s\n", jid);
        json_decref(job);
        return 0;
    }
    json_decref(job);
    progress_bar bar;
    progress_init(&bar, stderr, 10);
    int rc = follow(&c, jid, &bar, &job, err, sizeof err);
    progress_done(&bar);
    if (rc) goto fail;
    const char *state = json_string_value(json_object_get(job, "state"));
    int ok = state && !strcmp(state, "succeeded");
    if (ok && C.out && get_artifacts(&c, jid, C.out, err, sizeof err)) {
        json_decref(job);
        goto fail;
    }
    if (C.json) {
        print_json(job);
    } else {
        fprintf(stderr, "gplq: job %s %s%s%s\n", jid, state ? state : "?",
                json_is_string(json_object_get(job, "error")) ? ": " : "",
                json_string_value(json_object_get(job, "error")) ?: "");
        if (ok) print_accuracy(job);
    }
    json_decref(job);
    return ok ? 0 : 1;
fail:
    fprintf(stderr, "gplq submit: %s\n", err);
    return 1;
}

int client_jobs(int argc, char **argv) {
    opt_spec specs[] = {
        CONN_OPTS,
        {"state", OPT_STR, &C.state, NULL, 0, 0, "only jobs in this state (queued, running, succeeded, failed, canceled)"},
        {"limit", OPT_INT, &C.limit, "50", 1, 500, "at most this many"},
        {"job", OPT_STR, &C.job, NULL, 0, 0, "one job, in full"},
    };
    int pc = command_parse("jobs", "[--state S] [--limit N] [--job ID]", specs, N_OPTS(specs), argc, argv);
    if (pc >= 0) return pc;
    conn c;
    conn_init(&c);
    char err[2048], path[512];
    json_t *r;
    if (C.job) snprintf(path, sizeof path, "/v1/jobs/%s", C.job);
    else snprintf(path, sizeof path, "/v1/jobs?limit=%d%s%s", C.limit, C.state ? "&state=" : "",
                  C.state ? C.state : "");
    if (request(&c, "GET", path, NULL, NULL, &r, err, sizeof err) != 200) {
        fprintf(stderr, "gplq jobs: %s\n", err);
        json_decref(r);
        return 1;
    }
    if (C.json || C.job) {
        print_json(r);
    } else {
        printf("%-20s %-10s %-9s %6s %8s  %s\n", "job", "state", "stage", "done", "gplq", "created");
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(r, "jobs"), i, j) {
            json_t *g = json_object_get(json_object_get(j, "metrics"), "gplq");
            char acc[16] = "-";
            if (json_is_number(g)) snprintf(acc, sizeof acc, "%.2f%%", 100 * json_number_value(g));
            printf("%-20s %-10s %-9s %5.0f%% %8s  %s\n", json_string_value(json_object_get(j, "id")),
                   json_string_value(json_object_get(j, "state")),
                   json_string_value(json_object_get(j, "stage")) ?: "-",
                   100 * json_number_value(json_object_get(json_object_get(j, "progress"), "fraction")),
                   acc, json_string_value(json_object_get(j, "created_at")) ?: "");
        }
    }
    json_decref(r);
    return 0;
}

int client_cancel(int argc, char **argv) {
    opt_spec specs[] = {CONN_OPTS, {"job", OPT_STR, &C.job, NULL, 0, 0, "the job to cancel"}};
    int pc = command_parse("cancel", "--job ID", specs, N_OPTS(specs), argc, argv);
    if (pc >= 0) return pc;
    if (!C.job) {
        fprintf(stderr, "gplq cancel: --job is required\n");
        return 2;
    }
    conn c;
    conn_init(&c);
    char err[2048], path[512];
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", C.job);
    json_t *r;
    long st = request(&c, "POST", path, "{}", NULL, &r, err, sizeof err);
    if (st < 200 || st >= 300) {
        fprintf(stderr, "gplq cancel: %s\n", err);
        json_decref(r);
        return 1;
    }
    if (C.json) print_json(r);
    else printf("%s %s\n", C.job, json_string_value(json_object_get(r, "state")) ?: "");
    json_decref(r);
    return 0;
}

int client_artifacts(int argc, char **argv) {
    opt_spec specs[] = {
        CONN_OPTS,
        {"job", OPT_STR, &C.job, NULL, 0, 0, "the job"},
        {"out", OPT_STR, &C.out, NULL, 0, 0, "download every artifact into this folder (checked against its SHA-256)"},
        {"links", OPT_INT, &C.links, "0", 0, 86400, "also print a download link per artifact that needs no token, good for this many seconds (0: none)"},
    };
    int pc = command_parse("artifacts", "--job ID [--out DIR] [--links SECONDS]", specs, N_OPTS(specs), argc, argv);
    if (pc >= 0) return pc;
    if (!C.job) {
        fprintf(stderr, "gplq artifacts: --job is required\n");
        return 2;
    }
    conn c;
    conn_init(&c);
    char err[2048], path[512];
    if (C.out && C.links) {
        fprintf(stderr, "gplq artifacts: --links prints links instead of downloading: use one of --out, --links\n");
        return 2;
    }
    if (C.out) {
        if (get_artifacts(&c, C.job, C.out, err, sizeof err)) {
            fprintf(stderr, "gplq artifacts: %s\n", err);
            return 1;
        }
        return 0;
    }
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts", C.job);
    json_t *r;
    if (request(&c, "GET", path, NULL, NULL, &r, err, sizeof err) != 200) {
        fprintf(stderr, "gplq artifacts: %s\n", err);
        json_decref(r);
        return 1;
    }
    size_t i;
    json_t *a;
    /* --links: each artifact's link (POST .../link), as a full URL, into its object as "link" */
    if (C.links) json_array_foreach(json_object_get(r, "artifacts"), i, a) {
        json_t *l;
        snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/%s/link?expires_in=%d", C.job,
                 json_string_value(json_object_get(a, "name")), C.links);
        if (request(&c, "POST", path, "{}", NULL, &l, err, sizeof err) != 200) {
            fprintf(stderr, "gplq artifacts: %s\n", err);
            json_decref(l);
            json_decref(r);
            return 1;
        }
        json_object_set_new(a, "link", json_sprintf("%s%s", c.server,
                                                    json_string_value(json_object_get(l, "url"))));
        json_decref(l);
    }
    if (C.json) {
        print_json(r);
    } else {
        json_array_foreach(json_object_get(r, "artifacts"), i, a) {
            printf("%-32s %12" JSON_INTEGER_FORMAT "  %s\n", json_string_value(json_object_get(a, "name")),
                   json_integer_value(json_object_get(a, "bytes")),
                   json_string_value(json_object_get(a, "sha256")));
            if (C.links) printf("  %s\n", json_string_value(json_object_get(a, "link")));
        }
    }
    json_decref(r);
    return 0;
}
