/*
 * deliver.c: see deliver.h.
 */
#include "server/deliver.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "api/metrics.h"
#include "api/webhook.h"
#include "storage/store.h"
#include "util/clock.h"
#include "util/jlog.h"

#define DELIVER_MAX_RESPONSE 65536 /* bytes of a receiver's answer read before giving up on it */

typedef struct xfer {
    CURL *e;
    int64_t outbox_id;
    int attempt;
    char event_id[40], type[32], url[WEBHOOK_URL_MAX + 1];
    char *body;
    struct curl_slist *hdrs;
    int64_t started_ms;
    double t0;
    size_t got;                /* response bytes seen */
    char refused[160];         /* why the address was refused, if it was */
    char errbuf[CURL_ERROR_SIZE];
    struct xfer *next;
} xfer;

struct deliver {
    deliver_options o;
    store *st;
    CURLM *multi;
    pthread_t thread;
    atomic_int stop;
    xfer *active;
    int nactive;
    int allowlist;             /* an allowlist is set: its hosts may have any address */
};

static double rand01(void) {
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (uint32_t)time(NULL) * 2654435761u;
    return r / 4294967296.0;
}

/* Discards the receiver's answer (only its status matters), up to a bound. */
static size_t on_body(char *p, size_t size, size_t n, void *arg) {
    (void)p;
    xfer *x = arg;
    x->got += size * n;
    return x->got > DELIVER_MAX_RESPONSE ? 0 : size * n;
}

/* Every connection curl opens, after name resolution: without an allowlist, only to public
 * addresses. Checked here, on the address itself, a name cannot resolve one way when the job
 * is submitted and another when it is delivered. */
static curl_socket_t on_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a) {
    xfer *x = arg;
    (void)purpose;
    if (webhook_addr_private(&a->addr)) {
        char ip[INET6_ADDRSTRLEN] = "?";
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr, ip, sizeof ip);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, ip, sizeof ip);
        snprintf(x->refused, sizeof x->refused,
                 "refused: the host resolves to %s, not a public address (list the host in "
                 "webhook_allow_hosts to allow it)", ip);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static void xfer_free(xfer *x) {
    if (x->e) curl_easy_cleanup(x->e);
    curl_slist_free_all(x->hdrs);
    free(x->body);
    free(x);
}

/* Records the end of an attempt and decides what comes next; final: no retry can succeed
 * (the URL is refused by the server's own policy). */
static void finish(deliver *d, xfer *x, int status_code, const char *error, int final) {
    int64_t latency = (int64_t)(clock_mono_ms() - x->t0);
    int ok = status_code >= 200 && status_code < 300 && !error;
    const char *outcome = ok ? "delivered"
                          : final || x->attempt >= d->o.max_attempts ? "failed"
                                                                     : "retry";
    int64_t next = store_now_ms() +
                   (ok ? 0 : webhook_backoff_ms(d->o.backoff_ms, x->attempt, rand01()));
    char why[256] = "";
    if (!ok && !error) snprintf(why, sizeof why, "the receiver answered HTTP %d", status_code);
    const char *err = ok ? NULL : error ? error : why;
    if (store_webhook_record(d->st, x->outbox_id, x->attempt, x->started_ms, status_code, latency,
                             err, outcome, next))
        jlog("error", NULL, "recording a webhook attempt: %s", store_errmsg(d->st));
    metrics_webhook(outcome);
    json_t *l = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:s, s:s?}", "event", "webhook",
                          "delivery", x->event_id, "type", x->type, "attempt", x->attempt,
                          "status", status_code, "ms", (json_int_t)latency, "outcome", outcome,
                          "error", err);
    jlog_json(ok ? "info" : "warn", l);
    json_decref(l);
}

/* Starts one delivery of row r (a store_webhook_due object). */
static void start(deliver *d, json_t *r) {
    xfer *x = calloc(1, sizeof *x);
    if (!x) return; /* the lease runs out and the row comes due again */
    x->outbox_id = json_integer_value(json_object_get(r, "outbox_id"));
    x->attempt = (int)json_integer_value(json_object_get(r, "attempts")) + 1;
    snprintf(x->event_id, sizeof x->event_id, "%s", json_string_value(json_object_get(r, "event_id")));
    snprintf(x->type, sizeof x->type, "%s", json_string_value(json_object_get(r, "type")));
    snprintf(x->url, sizeof x->url, "%s", json_string_value(json_object_get(r, "url")));
    const char *payload = json_string_value(json_object_get(r, "payload"));
    const char *secret = json_string_value(json_object_get(r, "secret"));
    const char *secret_err = json_string_value(json_object_get(r, "secret_error"));
    x->body = strdup(payload ? payload : "{}");
    x->started_ms = store_now_ms();
    x->t0 = clock_mono_ms();
    char err[512];
    /* A secret that does not open cannot sign: the attempt fails, saying why, unsent. */
    if (x->body && secret_err) {
        finish(d, x, 0, secret_err, 1);
        xfer_free(x);
        return;
    }
    /* The policy of now, which may be stricter than when the job was submitted. */
    if (!x->body || webhook_url_check(x->url, d->o.allow_hosts, err, sizeof err)) {
        finish(d, x, 0, x->body ? err : "out of memory", x->body != NULL);
        xfer_free(x);
        return;
    }
    char sig[160], h[256];
    webhook_sign(secret ? secret : "", (long long)(x->started_ms / 1000), x->body,
                 strlen(x->body), sig, sizeof sig);
    x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/json");
    x->hdrs = curl_slist_append(x->hdrs, "Expect:"); /* no 100-continue round trip */
    snprintf(h, sizeof h, "X-GPLQ-Event: %s", x->type);
    x->hdrs = curl_slist_append(x->hdrs, h);
    snprintf(h, sizeof h, "X-GPLQ-Delivery: %s", x->event_id);
    x->hdrs = curl_slist_append(x->hdrs, h);
    snprintf(h, sizeof h, "X-GPLQ-Attempt: %d", x->attempt);
    x->hdrs = curl_slist_append(x->hdrs, h);
    snprintf(h, sizeof h, "X-GPLQ-Signature: %s", sig);
    x->hdrs = curl_slist_append(x->hdrs, h);
    CURL *e = x->e = curl_easy_init();
    if (!e || !x->hdrs) {
        finish(d, x, 0, "out of memory", 0);
        xfer_free(x);
        return;
    }
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, d->o.user_agent);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* not the environment's http_proxy */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(d->o.timeout_ms / 2 > 0 ? d->o.timeout_ms / 2 : 1));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (!d->allowlist) {
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    }
    if (curl_multi_add_handle(d->multi, e) != CURLM_OK) {
        finish(d, x, 0, "cannot start the transfer", 0);
        xfer_free(x);
        return;
    }
    x->next = d->active;
    d->active = x;
    d->nactive++;
}

static void done(deliver *d, CURL *e, CURLcode code) {
    xfer *x = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(d->multi, e);
    for (xfer **p = &d->active; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            d->nactive--;
            break;
        }
    long status = 0;
    if (code == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    char err[CURL_ERROR_SIZE + 64];
    const char *why = NULL;
    if (x->refused[0]) {
        why = x->refused;
    } else if (code == CURLE_WRITE_ERROR && x->got > DELIVER_MAX_RESPONSE) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status); /* the status stands */
    } else if (code != CURLE_OK) {
        snprintf(err, sizeof err, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
        why = err;
    }
    finish(d, x, (int)status, why, 0);
    xfer_free(x);
}

static void *run(void *arg) {
    deliver *d = arg;
    int warned = 0;
    while (!atomic_load(&d->stop)) {
        if (d->nactive < d->o.concurrency) {
            json_t *due = NULL;
            /* leased for one whole attempt and some, so a look during it never takes it */
            int rc = store_webhook_due(d->st, store_now_ms(), d->o.timeout_ms + 5000,
                                       d->o.concurrency - d->nactive, &due);
            if (rc && !warned++) jlog("error", NULL, "webhook outbox: %s", store_errmsg(d->st));
            if (!rc) warned = 0;
            size_t i;
            json_t *r;
            json_array_foreach(due, i, r) start(d, r);
            json_decref(due);
        }
        int running = 0;
        curl_multi_perform(d->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(d->multi, &left)))
            if (m->msg == CURLMSG_DONE) done(d, m->easy_handle, m->data.result);
        /* Short waits while transfers run (their sockets wake us), the poll period when idle;
         * deliver_stop wakes us at once. */
        curl_multi_poll(d->multi, NULL, 0, d->nactive ? 100 : d->o.poll_ms, NULL);
    }
    while (d->active) {
        xfer *x = d->active;
        d->active = x->next;
        curl_multi_remove_handle(d->multi, x->e);
        xfer_free(x);
    }
    return NULL;
}

int deliver_start(deliver **out, const deliver_options *o, char *err, size_t errlen) {
    *out = NULL;
    deliver *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d->o = *o;
    if (d->o.concurrency < 1) d->o.concurrency = 8;
    if (d->o.poll_ms < 1) d->o.poll_ms = 250;
    if (d->o.max_attempts < 1) d->o.max_attempts = 1;
    if (!d->o.user_agent) d->o.user_agent = "gplqd-webhook";
    for (const char *p = o->allow_hosts; p && *p; p++)
        if (*p != ' ' && *p != ',') d->allowlist = 1;
    if (store_open(&d->st, o->db_path, o->busy_ms, err, errlen)) {
        free(d);
        return -1;
    }
    if (o->secret_key) store_set_secret_key(d->st, o->secret_key);
    if (!(d->multi = curl_multi_init())) {
        snprintf(err, errlen, "libcurl: cannot make a multi handle");
        store_close(d->st);
        free(d);
        return -1;
    }
    if (pthread_create(&d->thread, NULL, run, d)) {
        snprintf(err, errlen, "cannot start the webhook thread");
        curl_multi_cleanup(d->multi);
        store_close(d->st);
        free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void deliver_stop(deliver *d) {
    if (!d) return;
    atomic_store(&d->stop, 1);
    curl_multi_wakeup(d->multi);
    pthread_join(d->thread, NULL);
    curl_multi_cleanup(d->multi);
    store_close(d->st);
    free(d);
}
