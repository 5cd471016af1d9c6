/*
 * metrics.c: see metrics.h.
 */
#include "api/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

#define METRICS_MAX_ROUTES 64

/* The statuses gplqd answers with, each its own series; anything else counts as "other". */
static const int codes[] = {200, 201, 204, 206, 304, 400, 401, 404, 405, 409,
                            413, 415, 416, 422, 429, 500, 503, 507};
#define NCODES ((int)(sizeof codes / sizeof codes[0]))

static atomic_llong http[METRICS_MAX_ROUTES + 1][NCODES + 1]; /* [route + 1][code slot] */
static atomic_llong upload_bytes[2];                            /* model, dataset */
static atomic_llong webhook[3];                                 /* delivered, retry, failed */
static atomic_int streams;

static const char *const outcomes[3] = {"delivered", "retry", "failed"};

void metrics_http(int route_index, int status) {
    int r = route_index + 1;
    if (r < 0 || r > METRICS_MAX_ROUTES) r = 0;
    int c = NCODES;
    for (int i = 0; i < NCODES; i++)
        if (codes[i] == status) c = i;
    atomic_fetch_add(&http[r][c], 1);
}

void metrics_upload_bytes(int is_model, int64_t n) {
    if (n > 0) atomic_fetch_add(&upload_bytes[is_model ? 0 : 1], n);
}

void metrics_webhook(const char *outcome) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(outcome, outcomes[i])) atomic_fetch_add(&webhook[i], 1);
}

void metrics_streams(int delta) {
    atomic_fetch_add(&streams, delta);
}

/* ---- the text ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->oom = 1;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

static void head(text *t, const char *name, const char *type, const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Job durations in seconds: the histogram's upper bounds. */
static const double bounds[] = {10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400};
#define NBOUNDS ((int)(sizeof bounds / sizeof bounds[0]))
static const char *const ended[3] = {"succeeded", "failed", "canceled"};

typedef struct {
    long long bucket[3][NBOUNDS + 1];
    double sum[3];
    long long count[3];
} histo;

static void observe(void *arg, const char *state, double seconds) {
    histo *h = arg;
    for (int s = 0; s < 3; s++) {
        if (strcmp(state, ended[s])) continue;
        int b = 0;
        while (b < NBOUNDS && seconds > bounds[b]) b++;
        h->bucket[s][b]++;
        h->sum[s] += seconds;
        h->count[s]++;
    }
}

/* A label value as Prometheus wants it: backslash, quote and newline escaped. */
static void label(char *out, size_t n, const char *v) {
    size_t k = 0;
    for (; v && *v && k + 3 < n; v++) {
        if (*v == '\\' || *v == '"') out[k++] = '\\', out[k++] = *v;
        else if (*v == '\n') out[k++] = '\\', out[k++] = 'n';
        else out[k++] = *v;
    }
    out[k] = '\0';
}

/* The database's series below return -1 when the store fails (their lines are left out). */

static int put_job_counts(text *t, store *st) {
    json_t *counts = NULL;
    if (store_job_counts(st, &counts)) return -1;
    if (counts) {
        head(t, "gplq_jobs", "gauge", "Jobs by state.");
        const char *key;
        json_t *v;
        json_object_foreach(counts, key, v)
            put(t, "gplq_jobs{state=\"%s\"} %lld\n", key, (long long)json_integer_value(v));
        head(t, "gplq_queue_depth", "gauge", "Jobs queued, waiting for a worker.");
        put(t, "gplq_queue_depth %lld\n",
            (long long)json_integer_value(json_object_get(counts, "queued")));
        json_decref(counts);
    }
    return 0;
}

static int put_job_durations(text *t, store *st) {
    histo h;
    memset(&h, 0, sizeof h);
    if (store_job_durations(st, observe, &h)) return -1;
    head(t, "gplq_job_duration_seconds", "histogram",
         "Run time of ended jobs, first start to end, by final state.");
    for (int s = 0; s < 3; s++) {
        long long cum = 0;
        for (int b = 0; b <= NBOUNDS; b++) {
            cum += h.bucket[s][b];
            if (b < NBOUNDS)
                put(t, "gplq_job_duration_seconds_bucket{state=\"%s\",le=\"%g\"} %lld\n",
                    ended[s], bounds[b], cum);
            else
                put(t, "gplq_job_duration_seconds_bucket{state=\"%s\",le=\"+Inf\"} %lld\n",
                    ended[s], cum);
        }
        put(t, "gplq_job_duration_seconds_sum{state=\"%s\"} %.3f\n", ended[s], h.sum[s]);
        put(t, "gplq_job_duration_seconds_count{state=\"%s\"} %lld\n", ended[s], h.count[s]);
    }
    return 0;
}

static int put_stage_durations(text *t, store *st) {
    json_t *stages = NULL;
    if (store_stage_durations(st, &stages)) return -1;
    if (stages) {
        head(t, "gplq_stage_duration_seconds", "summary",
             "Time in each pipeline stage of succeeded jobs (from the stage's first progress "
             "event to the next stage's).");
        const char *key;
        json_t *v;
        char l[128];
        json_object_foreach(stages, key, v) {
            label(l, sizeof l, key);
            put(t, "gplq_stage_duration_seconds_sum{stage=\"%s\"} %.3f\n", l,
                json_number_value(json_object_get(v, "sum")));
            put(t, "gplq_stage_duration_seconds_count{stage=\"%s\"} %lld\n", l,
                (long long)json_integer_value(json_object_get(v, "count")));
        }
        json_decref(stages);
    }
    return 0;
}

static int put_webhook_outbox(text *t, store *st) {
    json_t *outbox = NULL;
    if (store_webhook_counts(st, &outbox)) return -1;
    if (outbox) {
        head(t, "gplq_webhook_outbox", "gauge", "Webhook events by delivery status.");
        const char *key;
        json_t *v;
        json_object_foreach(outbox, key, v)
            put(t, "gplq_webhook_outbox{status=\"%s\"} %lld\n", key,
                (long long)json_integer_value(v));
        json_decref(outbox);
    }
    return 0;
}

/* From the supervisor's list (sup_workers_json). */
static void put_workers(text *t, json_t *workers) {
    long long restarts = 0, alive = 0;
    size_t i;
    json_t *w;
    json_array_foreach(workers, i, w) {
        restarts += json_integer_value(json_object_get(w, "restarts"));
        alive += json_is_true(json_object_get(w, "alive"));
    }
    head(t, "gplq_workers", "gauge", "Worker processes configured.");
    put(t, "gplq_workers %zu\n", json_array_size(workers));
    head(t, "gplq_workers_alive", "gauge", "Worker processes running.");
    put(t, "gplq_workers_alive %lld\n", alive);
    head(t, "gplq_worker_restarts_total", "counter",
         "Worker processes restarted by the supervisor since gplqd started.");
    put(t, "gplq_worker_restarts_total %lld\n", restarts);
}

/* The process's own counters, counted above since gplqd started. */
static void put_counters(text *t) {
    head(t, "gplq_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (int r = 0; r <= api_nroutes && r <= METRICS_MAX_ROUTES; r++) {
        const char *name = r == 0 ? "none" : api_routes[r - 1].name;
        for (int c = 0; c <= NCODES; c++) {
            long long n = atomic_load(&http[r][c]);
            if (!n) continue;
            if (c < NCODES)
                put(t, "gplq_http_requests_total{route=\"%s\",code=\"%d\"} %lld\n", name,
                    codes[c], n);
            else
                put(t, "gplq_http_requests_total{route=\"%s\",code=\"other\"} %lld\n", name, n);
        }
    }
    head(t, "gplq_upload_bytes_total", "counter", "Bytes received in model and dataset uploads.");
    put(t, "gplq_upload_bytes_total{kind=\"model\"} %lld\n", atomic_load(&upload_bytes[0]));
    put(t, "gplq_upload_bytes_total{kind=\"dataset\"} %lld\n", atomic_load(&upload_bytes[1]));
    head(t, "gplq_webhook_deliveries_total", "counter",
         "Webhook delivery attempts by outcome (retry: failed, will be tried again).");
    for (int k = 0; k < 3; k++)
        put(t, "gplq_webhook_deliveries_total{outcome=\"%s\"} %lld\n", outcomes[k],
            atomic_load(&webhook[k]));
    head(t, "gplq_event_streams", "gauge", "Live event streams (SSE) open.");
    put(t, "gplq_event_streams %d\n", atomic_load(&streams));
}

char *metrics_render(store *st, json_t *workers, size_t *len) {
    text t = {.cap = 8192};
    if (!(t.s = malloc(t.cap))) return NULL;
    t.s[0] = '\0';
    /* after the first failure of the database, the other series from it are left out */
    int db_ok = st != NULL;
    if (db_ok && put_job_counts(&t, st)) db_ok = 0;
    if (db_ok && put_job_durations(&t, st)) db_ok = 0;
    if (db_ok && put_stage_durations(&t, st)) db_ok = 0;
    if (db_ok && put_webhook_outbox(&t, st)) db_ok = 0;
    put_workers(&t, workers);
    put_counters(&t);
    head(&t, "gplq_metrics_db_up", "gauge", "1 when the database answered this scrape.");
    put(&t, "gplq_metrics_db_up %d\n", db_ok);
    if (t.oom) {
        free(t.s);
        return NULL;
    }
    *len = t.len;
    return t.s;
}
