/*
 * jobs.c: the job routes: submit (POST /v1/jobs, with its optional webhook and Idempotency-Key),
 * list, get, cancel, delete (the row, then the job's folder), and the two views of what
 * happened to a job: its events as Server-Sent Events (checked here, streamed by the glue) and
 * its webhook deliveries.
 */
#include "api/api_int.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/webhook.h"
#include "config/jobspec.h"
#include "config/layout.h"
#include "util/jlog.h"

/* ---------------------------------------------------------------- jobs */

static const char *const job_states[] = {"queued", "running", "succeeded", "failed", "canceled"};

static void wake(api_ctx *ctx) {
    if (ctx->wake) ctx->wake(ctx->wake_arg);
}

/* A required string field of the job body. */
static const char *body_string(json_t *body, const char *key, api_response *res) {
    json_t *v = json_object_get(body, key);
    if (!v) {
        api_error(res, 400, "bad_request", key, "%s is required", key);
        return NULL;
    }
    if (!json_is_string(v) || !json_string_length(v)) {
        api_error(res, 400, "bad_request", key, "%s must be a non-empty string", key);
        return NULL;
    }
    return json_string_value(v);
}

/* The "webhook" of a job body: {"url", "secret", "progress_every_s"?}. Returns 0 with the
 * strings borrowed from v (and *progress_ms, 0 when not asked for), or -1 with res set. */
static int webhook_spec(api_ctx *ctx, json_t *v, const char **url, const char **secret,
                        int64_t *progress_ms, api_response *res) {
    *url = *secret = NULL;
    *progress_ms = 0;
    if (!json_is_object(v)) {
        api_error(res, 400, "bad_request", "webhook",
                  "webhook must be an object {\"url\", \"secret\", \"progress_every_s\"?}");
        return -1;
    }
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x) {
        if (strcmp(key, "url") && strcmp(key, "secret") && strcmp(key, "progress_every_s")) {
            api_error(res, 400, "bad_request", "webhook", "webhook.%s is not a webhook field "
                      "(url, secret, progress_every_s)", key);
            return -1;
        }
    }
    json_t *u = json_object_get(v, "url"), *sec = json_object_get(v, "secret"),
           *every = json_object_get(v, "progress_every_s");
    char err[512];
    if (!json_is_string(u)) {
        api_error(res, 400, "bad_request", "webhook.url", "webhook.url must be a string");
        return -1;
    }
    if (webhook_url_check(json_string_value(u), ctx->webhook_allow_hosts, err, sizeof err)) {
        api_error(res, 400, "bad_request", "webhook.url", "%s", err);
        return -1;
    }
    size_t sl = json_is_string(sec) ? json_string_length(sec) : 0;
    if (sl < WEBHOOK_SECRET_MIN || sl > WEBHOOK_SECRET_MAX ||
        strlen(json_string_value(sec)) != sl) {
        api_error(res, 400, "bad_request", "webhook.secret",
                  "webhook.secret must be a string of %d to %d characters (the key that signs "
                  "each delivery; 32 random bytes in hex are a good choice)",
                  WEBHOOK_SECRET_MIN, WEBHOOK_SECRET_MAX);
        return -1;
    }
    if (every && !json_is_null(every)) {
        double e = json_number_value(every);
        if (!json_is_number(every) || !(e >= 1 && e <= 86400)) {
            api_error(res, 400, "bad_request", "webhook.progress_every_s",
                      "webhook.progress_every_s must be a number of seconds in [1, 86400]");
            return -1;
        }
        *progress_ms = (int64_t)(e * 1000);
    }
    *url = json_string_value(u);
    *secret = json_string_value(sec);
    return 0;
}

/* POST /v1/jobs, parsed. The strings are borrowed from the body object or the request. */
typedef struct {
    const char *model_id, *dataset_id;
    int max_attempts;
    jobspec js;                          /* the options, checked */
    const char *hook_url, *hook_secret;  /* NULL: no webhook */
    int64_t hook_every;                  /* ms between job.progress deliveries; 0: none */
    const char *idem;                    /* the Idempotency-Key header, NULL if none */
    json_t *model_input;                 /* api__model_input of the model (owned), or NULL */
} job_request;

/* The body's fields: the ids, max_attempts and the job's options. 0, or -1 with res set. */
static int job_body(api_ctx *ctx, json_t *body, job_request *jr, api_response *res) {
    jr->model_id = body_string(body, "model_id", res);
    jr->dataset_id = jr->model_id ? body_string(body, "dataset_id", res) : NULL;
    if (!jr->dataset_id) return -1;

    jr->max_attempts = ctx->limits.max_attempts > 0 ? ctx->limits.max_attempts : 3;
    json_t *ma = json_object_get(body, "max_attempts");
    if (ma) {
        if (!json_is_integer(ma) || json_integer_value(ma) < 1 || json_integer_value(ma) > 100) {
            api_error(res, 400, "bad_request", "max_attempts",
                      "max_attempts must be an integer in [1, 100]");
            return -1;
        }
        jr->max_attempts = (int)json_integer_value(ma);
    }

    /* The options: the error names the field that is wrong, with jobspec's message, the same
     * as `gplq quantize` gives for the flag. */
    static const char *const service_keys[] = {"model_id", "dataset_id", "max_attempts", "webhook",
                                               NULL};
    jobspec_defaults(&jr->js);
    const char *field;
    char err[256];
    if (jobspec_apply_json(&jr->js, body, service_keys, &field, err, sizeof err)) {
        api_error(res, 400, "bad_request", field, "%s", err);
        return -1;
    }
    return 0;
}

/* The body's "webhook", if any. 0, or -1 with res set. */
static int job_webhook(api_ctx *ctx, json_t *body, job_request *jr, api_response *res) {
    /* The webhook stays out of the spec (the spec is shown in job objects; the secret must
     * not be) and goes to its own row. */
    jr->hook_url = jr->hook_secret = NULL;
    jr->hook_every = 0;
    json_t *hook = json_object_get(body, "webhook");
    if (hook && !json_is_null(hook) &&
        webhook_spec(ctx, hook, &jr->hook_url, &jr->hook_secret, &jr->hook_every, res))
        return -1;
    return 0;
}

/* The model and the dataset exist and the caller may use them: 0 with jr->model_input set
 * (what the worker needs to load the model as its upload was inspected), or -1 with res set
 * (a 404 that names the field). */
static int job_refs_check(api_ctx *ctx, const api_request *req, job_request *jr,
                          api_response *res) {
    json_t *model = NULL, *dataset = NULL;
    int rc = store_model_get(ctx->st, ctx->owner, jr->model_id, &model);
    if (rc == STORE_OK) jr->model_input = api__model_input(json_object_get(model, "config"));
    if (rc == STORE_ENOTFOUND) {
        api_error(res, 404, "not_found", "model_id", "model '%s' not found", jr->model_id);
    } else {
        if (rc == STORE_OK) rc = store_dataset_get(ctx->st, ctx->owner, jr->dataset_id, &dataset);
        if (rc == STORE_ENOTFOUND)
            api_error(res, 404, "not_found", "dataset_id", "dataset '%s' not found",
                      jr->dataset_id);
        else if (rc)
            api__internal(req, res, "job create: %s", store_errmsg(ctx->st));
    }
    json_decref(model);
    json_decref(dataset);
    return rc ? -1 : 0;
}

/* The Idempotency-Key header into *idem (NULL if none). 0, or -1 with res set. */
static int idempotency_key(const api_request *req, const char **idem, api_response *res) {
    *idem = api_header(req, "Idempotency-Key");
    if (*idem) {
        size_t n = strlen(*idem);
        int ok = n >= 1 && n <= 255;
        for (const char *c = *idem; ok && *c; c++) ok = *c >= 0x21 && *c <= 0x7e;
        if (!ok) {
            api_error(res, 400, "bad_request", "Idempotency-Key",
                      "Idempotency-Key must be 1 to 255 visible ASCII characters");
            return -1;
        }
    }
    return 0;
}

/* Submits the checked job and answers: 201 with the job (200 with the one an earlier request
 * of the same Idempotency-Key made), 429 past the owner's queue limit. */
static void job_submit(api_ctx *ctx, const api_request *req, const job_request *jr,
                       api_response *res) {
    json_t *job = NULL, *spec = jobspec_to_json(&jr->js);
    json_object_set_new(spec, "model_id", json_string(jr->model_id));
    json_object_set_new(spec, "dataset_id", json_string(jr->dataset_id));
    /* The image size, normalization and heads the model's upload settled (its query, or the
     * inspector's defaults): set by the server, not an option, so that the worker loads the
     * file the way it was checked (config/jobspec.h) */
    if (jr->model_input) json_object_set(spec, "model_input", jr->model_input);
    store_job_new n = {.owner = api__creator(ctx), .scope = ctx->owner, .model_id = jr->model_id,
                       .dataset_id = jr->dataset_id, .spec = spec,
                       .max_attempts = jr->max_attempts, .idempotency_key = jr->idem,
                       .max_queued = ctx->owner ? ctx->limits.max_queued_jobs : 0,
                       .webhook_url = jr->hook_url, .webhook_secret = jr->hook_secret,
                       .webhook_progress_ms = jr->hook_every};
    int rc = store_job_submit(ctx->st, &n, &job);
    if (rc == STORE_OK || rc == STORE_EEXISTS) {
        api__set_location(res, "jobs", job);
        api_json(res, rc == STORE_OK ? 201 : 200, job);
        job = NULL;
        if (rc == STORE_OK) wake(ctx);
    } else if (rc == STORE_ELIMIT) {
        /* A job takes minutes; a minute is a fair first guess for a place to free up. */
        api_response_header(res, "Retry-After", "60");
        api_error(res, 429, "too_many_jobs", NULL, "%s (the limit is %d per owner)",
                  store_errmsg(ctx->st), ctx->limits.max_queued_jobs);
    } else {
        api__store_error(ctx, req, res, rc, "job", "(new)");
    }
    json_decref(job);
    json_decref(spec);
}

/* POST /v1/jobs: {"model_id", "dataset_id", "max_attempts"?, "webhook"?, ...jobspec options}.
 * The checks run in this order, and the first that fails answers: the body, the webhook, the
 * model and dataset, the Idempotency-Key. */
void api__job_create(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res) {
    (void)p;
    json_t *body = api__body_object(req, res);
    if (!body) return;
    job_request jr = {.model_input = NULL};
    if (!job_body(ctx, body, &jr, res) && !job_webhook(ctx, body, &jr, res) &&
        !job_refs_check(ctx, req, &jr, res) && !idempotency_key(req, &jr.idem, res))
        job_submit(ctx, req, &jr, res);
    json_decref(jr.model_input);
    json_decref(body); /* last: jr's strings are borrowed from it */
}

/* GET /v1/jobs?state=&limit=&cursor= */
void api__job_list(api_ctx *ctx, const api_request *req, const api_params *p,
                   api_response *res) {
    (void)p;
    static const char *const keys[] = {"state", "limit", "cursor", NULL};
    if (api__query_known(req, res, keys)) return;
    const char *state = api_query(req, "state");
    if (state) {
        int ok = 0;
        for (size_t i = 0; i < sizeof job_states / sizeof *job_states; i++)
            ok |= !strcmp(state, job_states[i]);
        if (!ok) {
            api_error(res, 400, "bad_request", "state",
                      "state must be one of queued, running, succeeded, failed, canceled");
            return;
        }
    }
    long limit;
    if (api__query_int(req, res, "limit", 1, 500, 50, &limit)) return;
    const char *cursor = api_query(req, "cursor");
    if (cursor && (!*cursor || strlen(cursor) > 256)) {
        api_error(res, 400, "bad_request", "cursor", "cursor is not one this server gave");
        return;
    }
    /* written as text, as api__job_get: a page is up to 500 jobs with their metrics */
    jtext t;
    jtext_begin(&t, API_REAL_PRECISION);
    jtext_array(&t, "jobs");
    char *next = NULL;
    int rc = store_job_list_text(ctx->st, ctx->owner, state, (int)limit, cursor, &t, &next);
    jtext_close(&t);
    jtext_str(&t, "next_cursor", next);
    free(next);
    size_t n = 0;
    char *text = jtext_end(&t, 1, &n);
    if (rc == STORE_EINVAL) {
        free(text);
        api_error(res, 400, "bad_request", "cursor", "cursor is not one this server gave");
    } else if (rc) {
        free(text);
        api__internal(req, res, "listing jobs: %s", store_errmsg(ctx->st));
    } else if (!text) {
        api__internal(req, res, "listing jobs: out of memory");
    } else {
        api_json_text(res, 200, text, n);
    }
}

/* The hottest route (clients poll it): the job is written as text from its row, its stored
 * JSON spliced rather than parsed and dumped again (util/jtext.h); the same bytes as
 * api_json(store_job_get) would send, at a third less CPU per request. */
void api__job_get(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res) {
    jtext t;
    jtext_begin(&t, API_REAL_PRECISION);
    int rc = store_job_get_text(ctx->st, ctx->owner, p->v[0], &t);
    size_t n = 0;
    char *text = jtext_end(&t, 1, &n);
    if (rc) {
        free(text);
        api__store_error(ctx, req, res, rc, "job", p->v[0]);
    } else if (!text) {
        api__internal(req, res, "writing job %s: out of memory", p->v[0]);
    } else {
        api_json_text(res, 200, text, n);
    }
}

void api__job_cancel(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res) {
    json_t *obj = NULL;
    int rc = store_job_cancel(ctx->st, ctx->owner, p->v[0], &obj);
    if (rc) {
        api__store_error(ctx, req, res, rc, "job", p->v[0]);
        return;
    }
    /* A running job stops when its worker next writes progress; waking the workers makes a
     * worker that is between steps look now. */
    wake(ctx);
    api_json(res, 200, obj);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)st;
    (void)f;
    if (flag == FTW_DP) rmdir(path);
    else unlink(path);
    return 0;
}

void api__job_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res) {
    const char *id = p->v[0];
    int rc = store_job_delete(ctx->st, ctx->owner, id);
    if (rc) {
        api__store_error(ctx, req, res, rc, "job", id);
        return;
    }
    /* The row is gone first, so no reader can be sent to a file that is being removed; a
     * crash between the two leaves an orphan folder, never a row without its files. */
    if (api__id_ok(id)) {
        char dir[4096];
        layout_job_dir(dir, sizeof dir, ctx->data_dir, id); /* api__id_ok: short enough */
        if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) && errno != ENOENT)
            jlog("warn", req->request_id, "removing %s: %s", dir, strerror(errno));
    }
    api_json(res, 204, NULL);
}

/* GET /v1/jobs/{id}/events[?after=N]: the job's events as Server-Sent Events. Here only the
 * checks (the job is the caller's, the starting point is a number); the glue streams. A
 * Last-Event-ID header (what a browser's EventSource sends when it reconnects) wins over
 * ?after= (for clients that cannot set headers, and for the first connection). */
void api__job_events(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res) {
    static const char *const keys[] = {"after", NULL};
    if (api__query_known(req, res, keys)) return;
    long after = 0;
    if (api__query_int(req, res, "after", 0, LONG_MAX, 0, &after)) return;
    const char *last = api_header(req, "Last-Event-ID");
    if (last && *last) {
        char *end;
        errno = 0;
        long long v = strtoll(last, &end, 10);
        if (*end || errno || v < 0) {
            api_error(res, 400, "bad_request", "Last-Event-ID",
                      "Last-Event-ID must be an event id this server sent (an integer)");
            return;
        }
        after = (long)v;
    }
    json_t *job = NULL;
    int rc = store_job_get(ctx->st, ctx->owner, p->v[0], &job);
    json_decref(job);
    if (rc) {
        api__store_error(ctx, req, res, rc, "job", p->v[0]);
        return;
    }
    api_json(res, 200, NULL);
    res->content_type = "text/event-stream";
    res->stream = 1;
    snprintf(res->stream_job, sizeof res->stream_job, "%s", p->v[0]);
    res->stream_after = after;
    /* no caching, and no buffering by a proxy (nginx) in between: events must flow as they
     * happen */
    api_response_header(res, "Cache-Control", "no-cache");
    api_response_header(res, "X-Accel-Buffering", "no");
}

/* GET /v1/jobs/{id}/webhooks: each event for the job's webhook and every attempt to deliver
 * it (status code, latency, error), so a pipeline's owner can see why one did not arrive. */
void api__job_webhooks(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res) {
    json_t *arr = NULL, *job = NULL;
    int rc = store_job_get(ctx->st, ctx->owner, p->v[0], &job);
    if (!rc) rc = store_webhook_list(ctx->st, ctx->owner, p->v[0], &arr);
    if (rc) {
        json_decref(job);
        api__store_error(ctx, req, res, rc, "job", p->v[0]);
        return;
    }
    json_t *hook = json_incref(json_object_get(job, "webhook"));
    json_decref(job);
    api_json(res, 200, json_pack("{s:o, s:o}", "webhook", hook ? hook : json_null(),
                                 "deliveries", arr));
}
