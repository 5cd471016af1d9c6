/*
 * jobs.c: the jobs table (see store.h). Two sides: the API's (submit, read, list, cancel,
 * delete, the counts /metrics shows) and the worker's (claim a queued job under a lease, report
 * progress and metrics, finish, release; expire the leases of workers that died). Every change
 * of a job's state is one transaction that also writes the job's event (events.c).
 */
#include "storage/store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

/* ---- jobs ---- */

/* The last column is the job's webhook as the API shows it: its URL and progress interval,
 * never its secret. */
#define JOB_COLS_BASE                                                                             \
    "j.id, j.model_id, j.dataset_id, j.spec, j.state, j.stage, j.progress, j.metrics, j.error,"   \
    " j.attempts, j.max_attempts, j.created_ms, j.started_ms, j.finished_ms,"
#define JOB_COLS_SQLITE                                                                           \
    JOB_COLS_BASE                                                                                 \
    " (SELECT json_object('url', w.url, 'progress_every_s', CASE WHEN w.progress_every_ms > 0"     \
    " THEN w.progress_every_ms / 1000.0 END) FROM job_webhooks w WHERE w.job_id = j.id)"
#define JOB_COLS_PG                                                                               \
    JOB_COLS_BASE                                                                                 \
    " (SELECT json_build_object('url', w.url, 'progress_every_s', CASE WHEN"                      \
    " w.progress_every_ms > 0 THEN w.progress_every_ms / 1000.0 END)::text FROM job_webhooks w"   \
    " WHERE w.job_id = j.id)"
/* A statement "pre JOB_COLS post" in the handle's dialect. */
#define JOB_SQL(s, pre, post) STORE__SQL(s, pre JOB_COLS_SQLITE post, pre JOB_COLS_PG post)
#define JOB_NCOLS 15
/* What GET /v1/jobs and /v1/jobs/{id} add, after JOB_COLS: the id of the job's newest event
 * (index events_job), so a client can follow the events from now on without the history. Not
 * in the snapshots that events and webhooks carry, where it would name the event before. */
#define JOB_LAST_EVENT ", (SELECT COALESCE(MAX(e.id), 0) FROM events e WHERE e.job_id = j.id)"

/* JOB_COLS as the API names them, in order, with how each column reads: written once for the
 * tree (job_row) and the text (job_read_text) alike. */
enum { JOB_STR, JOB_JSON, JOB_INT, JOB_TIME };
static const struct {
    const char *key;
    int kind;
} JOB_FIELDS[JOB_NCOLS] = {
    {"id", JOB_STR},          {"model_id", JOB_STR},     {"dataset_id", JOB_STR},
    {"spec", JOB_JSON},       {"state", JOB_STR},        {"stage", JOB_STR},
    {"progress", JOB_JSON},   {"metrics", JOB_JSON},     {"error", JOB_STR},
    {"attempts", JOB_INT},    {"max_attempts", JOB_INT}, {"created_at", JOB_TIME},
    {"started_at", JOB_TIME}, {"finished_at", JOB_TIME}, {"webhook", JOB_JSON},
};

static json_t *job_row(store__stmt *st) {
    json_t *j = json_object();
    for (int i = 0; i < JOB_NCOLS; i++) {
        int kind = JOB_FIELDS[i].kind;
        json_t *v = kind == JOB_STR    ? store__col_str(st, i)
                    : kind == JOB_JSON ? store__col_json(st, i)
                    : kind == JOB_INT  ? store__col_int(st, i)
                                       : store__col_time(st, i);
        json_object_set_new(j, JOB_FIELDS[i].key, v);
    }
    return j;
}

/* A job as GET shows it: JOB_COLS JOB_LAST_EVENT. */
static json_t *job_read_row(store__stmt *st) {
    json_t *j = job_row(st);
    json_object_set_new(j, "last_event_id", store__col_int(st, JOB_NCOLS));
    return j;
}

/* job_read_row's members as text into t: the JSON columns spliced, not parsed. */
static void job_read_text(store__stmt *st, jtext *t) {
    for (int i = 0; i < JOB_NCOLS; i++) {
        const char *key = JOB_FIELDS[i].key;
        int kind = JOB_FIELDS[i].kind;
        if (kind == JOB_STR) {
            jtext_str(t, key, store__col_text(st, i));
        } else if (kind == JOB_JSON) {
            jtext_json(t, key, store__col_text(st, i));
        } else if (store__col_null(st, i)) {
            jtext_json(t, key, NULL);
        } else if (kind == JOB_INT) {
            jtext_int(t, key, store__col_int64(st, i));
        } else {
            char iso[CLOCK_ISO_MAX];
            clock_iso_ms(store__col_int64(st, i), iso);
            jtext_str(t, key, iso);
        }
    }
    jtext_int(t, "last_event_id", store__col_int64(st, JOB_NCOLS));
}

int store__job_fetch(store *s, const char *owner, const char *id, json_t **out) {
    int rc = store__query_one(s, job_row, out,
                              JOB_SQL(s, "SELECT ", " FROM jobs j WHERE j.id = ?1 AND " OWNED),
                              "ss", id, owner);
    if (rc == STORE_ENOTFOUND) store__fail(s, rc, "there is no job %s", id);
    return rc;
}

/* STORE_OK if job id exists and owner may see it, else STORE_ENOTFOUND with the message. */
int store__job_visible(store *s, const char *owner, const char *id) {
    store__stmt *st =
        store__query(s, "SELECT 1 FROM jobs WHERE id = ?1 AND " OWNED, "ss", id, owner);
    if (!st) return STORE_EDB;
    int step = store__step(st);
    int rc = step == STORE__ROW    ? STORE_OK
             : step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "there is no job %s", id)
                                   : store__db_fail(s);
    store__reset(st);
    return rc;
}

int store_job_submit(store *s, const store_job_new *n, json_t **out) {
    *out = NULL;
    const char *owner = n->owner ? n->owner : "";
    const char *as = n->scope; /* whose models and datasets it may use: NULL = any */
    int max_attempts = n->max_attempts < 1 ? STORE_DEFAULT_MAX_ATTEMPTS : n->max_attempts;
    int rc = store__tx_begin(s);
    if (rc) return rc;
    if (n->idempotency_key) {
        /* A retried request (the client never saw our answer) gets the job it already made. */
        rc = store__query_one(s, job_row, out,
                              JOB_SQL(s, "SELECT ",
                                      " FROM jobs j WHERE j.owner = ?1 AND j.idempotency_key = ?2"),
                              "ss", owner, n->idempotency_key);
        if (rc == STORE_OK) {
            store__fail(s, STORE_EEXISTS, "a job with this idempotency key already exists: %s",
                        json_string_value(json_object_get(*out, "id")));
            return store__tx_end(s, STORE_EEXISTS, 0);
        }
        if (rc != STORE_ENOTFOUND) return store__tx_end(s, rc, 0);
        rc = STORE_OK; /* a new key: the submission goes on */
    }
    if (n->max_queued > 0) {
        /* Counted under the write lock, so two submissions at once cannot both take the last
         * place. */
        store__stmt *st = store__query(
            s, "SELECT COUNT(*) FROM jobs WHERE owner = ?1 AND state = 'queued'", "s", owner);
        if (!st) return store__tx_end(s, STORE_EDB, 0);
        int64_t queued = 0;
        if (store__step(st) == STORE__ROW) queued = store__col_int64(st, 0);
        else rc = store__db_fail(s);
        store__reset(st);
        if (!rc && queued >= n->max_queued)
            rc = store__fail(
                s, STORE_ELIMIT,
                "%lld jobs of yours are already queued, the most allowed; submit again when "
                "some have started",
                (long long)queued);
        if (rc) return store__tx_end(s, rc, 0);
    }
    json_t *row = NULL;
    rc = store__query_one(s, store__model_row, &row,
                          "SELECT " MODEL_COLS " FROM models WHERE id = ?1 AND " OWNED,
                          "ss", n->model_id, as);
    json_decref(row);
    if (rc == STORE_ENOTFOUND) rc = store__fail(s, rc, "there is no model %s", n->model_id);
    if (!rc) {
        rc = store__query_one(
            s, store__dataset_row, &row,
            "SELECT " DATASET_COLS " FROM datasets WHERE id = ?1 AND " DATASET_VISIBLE, "ss",
            n->dataset_id, as);
        json_decref(row);
        if (rc == STORE_ENOTFOUND) rc = store__fail(s, rc, "there is no dataset %s", n->dataset_id);
    }
    char id[32];
    store_new_id(id, "j_");
    if (!rc)
        rc = store__exec(s,
                         "INSERT INTO jobs (id, owner, model_id, dataset_id, spec, max_attempts,"
                         " idempotency_key, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                         "ssssjisI", id, owner, n->model_id, n->dataset_id, n->spec, max_attempts,
                         n->idempotency_key, store_now_ms());
    if (!rc && n->webhook_url) {
        /* sealed, and bound to this job: the secret is never in the database in the clear */
        char *sealed = s->has_key ? secretbox_seal(s->key, n->webhook_secret ? n->webhook_secret
                                                                              : "", id)
                                  : NULL;
        if (!sealed)
            rc = store__fail(s, s->has_key ? STORE_EDB : STORE_EINVAL,
                             s->has_key ? "cannot seal the webhook secret (libcrypto failed)"
                                        : "no key to seal the webhook secret with");
        else
            rc = store__exec(s,
                             "INSERT INTO job_webhooks (job_id, url, secret, progress_every_ms)"
                             " VALUES (?1, ?2, ?3, ?4)",
                             "sssI", id, n->webhook_url, sealed,
                             n->webhook_progress_ms > 0 ? n->webhook_progress_ms : (int64_t)0);
        free(sealed);
    }
    if (!rc) rc = store__state_event(s, id, "queued", NULL, NULL);
    /* Idle workers on every node wake at the commit (PostgreSQL; SQLite: gplqd wakes its own) */
    if (!rc) rc = store_notify(s, STORE_CHANNEL_JOBS);
    if (!rc) rc = store__job_fetch(s, NULL, id, out);
    return store__tx_end_out(s, rc, out);
}

int store_job_insert(store *s, const char *owner, const char *model_id, const char *dataset_id,
                     json_t *spec, int max_attempts, const char *idempotency_key, json_t **out) {
    store_job_new n = {.owner = owner, .scope = owner, .model_id = model_id,
                       .dataset_id = dataset_id, .spec = spec, .max_attempts = max_attempts,
                       .idempotency_key = idempotency_key};
    return store_job_submit(s, &n, out);
}

#define JOB_GET_SQL(s) \
    JOB_SQL(s, "SELECT ", JOB_LAST_EVENT " FROM jobs j WHERE j.id = ?1 AND " OWNED)

int store_job_get(store *s, const char *owner, const char *id, json_t **out) {
    int rc = store__query_one(s, job_read_row, out, JOB_GET_SQL(s), "ss", id, owner);
    if (rc == STORE_ENOTFOUND) store__fail(s, rc, "there is no job %s", id);
    return rc;
}

int store_job_get_text(store *s, const char *owner, const char *id, jtext *t) {
    store__stmt *st = store__query(s, JOB_GET_SQL(s), "ss", id, owner);
    if (!st) return STORE_EDB;
    int step = store__step(st), rc = STORE_OK;
    if (step == STORE__ROW) job_read_text(st, t);
    else if (step == STORE__DONE) rc = store__fail(s, STORE_ENOTFOUND, "there is no job %s", id);
    else rc = store__db_fail(s);
    store__reset(st);
    return rc;
}

/* store_job_list and store_job_list_text: each row of the page goes to row(st, arg). */
static int job_list(store *s, const char *owner, const char *state, int limit, const char *after,
                    void (*row)(store__stmt *, void *), void *arg, char **next_cursor) {
    *next_cursor = NULL;
    if (state && strcmp(state, "queued") && strcmp(state, "running") &&
        strcmp(state, "succeeded") && strcmp(state, "failed") && strcmp(state, "canceled"))
        return store__fail(
            s, STORE_EINVAL,
            "'%.32s' is not a job state (queued, running, succeeded, failed, canceled)", state);
    int64_t before = INT64_MAX;
    if (after) {
        /* The cursor is the seq of the last job of the previous page. */
        char *end;
        errno = 0;
        long long v = strtoll(after, &end, 10);
        if (!*after || *end || errno || v <= 0)
            return store__fail(s, STORE_EINVAL, "'%.64s' is not a cursor from a previous page",
                               after);
        before = v;
    }
    /* One row more than asked says whether there is a next page. (No limit is the largest one:
     * PostgreSQL refuses a negative LIMIT, which SQLite reads as none.) */
    int64_t want = limit > 0 ? (int64_t)limit + 1 : INT64_MAX;
    store__stmt *st =
        store__query(s,
                     JOB_SQL(s, "SELECT ",
                             JOB_LAST_EVENT ", j.seq FROM jobs j"
                             " WHERE (?1 IS NULL OR j.owner = ?1) AND (?2 IS NULL OR j.state = ?2)"
                             " AND j.seq < ?3 ORDER BY j.seq DESC LIMIT ?4"),
                     "ssII", owner, state, before, want);
    if (!st) return STORE_EDB;
    int64_t last_seq = 0;
    int step, rc = STORE_OK, more = 0, n = 0;
    while ((step = store__step(st)) == STORE__ROW) {
        if (limit > 0 && n == limit) {
            more = 1;
            break;
        }
        row(st, arg);
        n++;
        last_seq = store__col_int64(st, JOB_NCOLS + 1);
    }
    if (step != STORE__ROW && step != STORE__DONE) rc = store__db_fail(s);
    store__reset(st);
    if (rc) return rc;
    if (more) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRId64, last_seq);
        *next_cursor = strdup(buf);
        if (!*next_cursor) return store__fail(s, STORE_EDB, "out of memory");
    }
    return STORE_OK;
}

static void list_row_json(store__stmt *st, void *arr) {
    json_array_append_new(arr, job_read_row(st));
}

static void list_row_text(store__stmt *st, void *t) {
    jtext_object(t, NULL);
    job_read_text(st, t);
    jtext_close(t);
}

int store_job_list(store *s, const char *owner, const char *state, int limit, const char *after,
                   json_t **out_array, char **next_cursor) {
    json_t *arr = json_array();
    int rc = job_list(s, owner, state, limit, after, list_row_json, arr, next_cursor);
    if (rc) {
        json_decref(arr);
        arr = NULL;
    }
    *out_array = arr;
    return rc;
}

int store_job_list_text(store *s, const char *owner, const char *state, int limit,
                        const char *after, jtext *t, char **next_cursor) {
    return job_list(s, owner, state, limit, after, list_row_text, t, next_cursor);
}

int store_job_cancel(store *s, const char *owner, const char *id, json_t **out) {
    *out = NULL;
    int rc = store__tx_begin(s);
    if (rc) return rc;
    store__stmt *st =
        store__query(s, "SELECT state, stage FROM jobs WHERE id = ?1 AND " OWNED, "ss", id, owner);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    char state[16] = "", stage[64] = "";
    int step = store__step(st), has_stage = 0;
    if (step == STORE__ROW) {
        store__col_copy(st, 0, state, sizeof state);
        store__col_copy(st, 1, stage, sizeof stage);
        has_stage = !store__col_null(st, 1);
    } else {
        rc = step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "there is no job %s", id)
                                 : store__db_fail(s);
    }
    store__reset(st);
    if (rc) return store__tx_end(s, rc, 0);
    if (!strcmp(state, "queued")) {
        rc = store__exec(s, "UPDATE jobs SET state = 'canceled', finished_ms = ?2 WHERE id = ?1",
                         "sI", id, store_now_ms());
        if (!rc) rc = store__state_event(s, id, "canceled", has_stage ? stage : NULL, NULL);
    } else if (!strcmp(state, "running")) {
        /* The worker sees this at its next progress write (STORE_ECONFLICT) and ends the job;
         * if it dies first, store_job_expire ends it canceled. */
        rc = store__exec(s, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", "s", id);
    } else {
        rc = store__fail(s, STORE_ECONFLICT, "job %s has already ended (%s)", id, state);
    }
    if (!rc) rc = store__job_fetch(s, NULL, id, out);
    return store__tx_end_out(s, rc, out);
}

int store_job_delete(store *s, const char *owner, const char *id) {
    int rc = store__tx_begin(s);
    if (rc) return rc;
    store__stmt *st =
        store__query(s, "SELECT state FROM jobs WHERE id = ?1 AND " OWNED, "ss", id, owner);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    char state[16] = "";
    int step = store__step(st);
    if (step == STORE__ROW)
        store__col_copy(st, 0, state, sizeof state);
    else
        rc = step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "there is no job %s", id)
                                 : store__db_fail(s);
    store__reset(st);
    if (!rc && (!strcmp(state, "queued") || !strcmp(state, "running")))
        rc = store__fail(s, STORE_ECONFLICT, "job %s is %s; cancel it first, then delete it", id,
                         state);
    /* Its events and artifacts go with it (ON DELETE CASCADE). */
    if (!rc) rc = store__exec(s, "DELETE FROM jobs WHERE id = ?1", "s", id);
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_job_counts(store *s, json_t **out) {
    *out = NULL;
    json_t *c = json_pack("{s:i, s:i, s:i, s:i, s:i}", "queued", 0, "running", 0, "succeeded", 0,
                          "failed", 0, "canceled", 0);
    return store__counts(s, "SELECT state, COUNT(*) FROM jobs GROUP BY state", c, out);
}

int store_job_durations(store *s, void (*fn)(void *arg, const char *state, double seconds),
                        void *arg) {
    store__stmt *st = store__query(s,
                                    "SELECT state, finished_ms - started_ms FROM jobs"
                                    " WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL",
                                    "");
    if (!st) return STORE_EDB;
    int step;
    while ((step = store__step(st)) == STORE__ROW)
        fn(arg, store__col_text(st, 0), store__col_int64(st, 1) / 1000.0);
    int rc = step == STORE__DONE ? STORE_OK : store__db_fail(s);
    store__reset(st);
    return rc;
}

static json_t *stage_row(store__stmt *st) {
    return json_pack("{s:o, s:f, s:I}", "stage", store__col_str(st, 0),
                     "sum", store__col_int64(st, 1) / 1000.0, "count",
                     (json_int_t)store__col_int64(st, 2));
}

int store_stage_durations(store *s, json_t **out) {
    *out = NULL;
    json_t *rows = NULL;
    /* Each stage starts at its first progress event; it ends where the next one starts, the
     * last at the job's end. One pass over the progress events of succeeded jobs. */
    int rc =
        store__query_all(s, stage_row, &rows,
                         /* "stg", not "stage": jobs has a stage column, which GROUP BY would
                          * take instead of the alias */
                         STORE__SQL(s,
                         "WITH firsts AS (SELECT e.job_id, json_extract(e.data, '$.stage') AS stg,"
                         " MIN(e.created_ms) AS t0 FROM events e JOIN jobs j ON j.id = e.job_id"
                         " WHERE e.type = 'progress' AND j.state = 'succeeded'"
                         " AND json_extract(e.data, '$.stage') IS NOT NULL"
                         " GROUP BY e.job_id, stg),"
                         " spans AS (SELECT f.stg, COALESCE(LEAD(f.t0) OVER (PARTITION BY"
                         " f.job_id ORDER BY f.t0), j.finished_ms) - f.t0 AS ms"
                         " FROM firsts f JOIN jobs j ON j.id = f.job_id)"
                         " SELECT stg, SUM(ms), COUNT(*) FROM spans GROUP BY stg ORDER BY stg",
                         "WITH firsts AS (SELECT e.job_id, e.data::json->>'stage' AS stg,"
                         " MIN(e.created_ms) AS t0 FROM events e JOIN jobs j ON j.id = e.job_id"
                         " WHERE e.type = 'progress' AND j.state = 'succeeded'"
                         " AND e.data::json->>'stage' IS NOT NULL"
                         " GROUP BY e.job_id, stg),"
                         " spans AS (SELECT f.stg, COALESCE(LEAD(f.t0) OVER (PARTITION BY"
                         " f.job_id ORDER BY f.t0), j.finished_ms) - f.t0 AS ms"
                         " FROM firsts f JOIN jobs j ON j.id = f.job_id)"
                         " SELECT stg, SUM(ms), COUNT(*) FROM spans GROUP BY stg ORDER BY stg"),
                         "");
    if (rc) return rc;
    json_t *obj = json_object();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *stage = json_string_value(json_object_get(r, "stage"));
        if (stage)
            json_object_set_new(obj, stage,
                                json_pack("{s:O, s:O}", "sum", json_object_get(r, "sum"), "count",
                                          json_object_get(r, "count")));
    }
    json_decref(rows);
    *out = obj;
    return STORE_OK;
}

/* ---- the worker's side ---- */

void store_claim_free(store_claim *c) {
    json_decref(c->spec);
    memset(c, 0, sizeof *c);
}

/* The claimed job as its worker needs it: who owns it, its spec, where its inputs are. */
static int claim_read(store *s, const char *id, store_claim *c) {
    store__stmt *st =
        store__query(s,
                     STORE__SQL(s,
                                "SELECT j.id, j.owner, j.attempts, j.spec, j.model_id, m.sha256,"
                                " j.dataset_id, d.kind, d.sha256,"
                                " json_extract(d.summary, '$.val_fraction') FROM jobs j"
                                " LEFT JOIN models m ON m.id = j.model_id"
                                " LEFT JOIN datasets d ON d.id = j.dataset_id WHERE j.id = ?1",
                                "SELECT j.id, j.owner, j.attempts, j.spec, j.model_id, m.sha256,"
                                " j.dataset_id, d.kind, d.sha256,"
                                " (d.summary::json->>'val_fraction')::float8 FROM jobs j"
                                " LEFT JOIN models m ON m.id = j.model_id"
                                " LEFT JOIN datasets d ON d.id = j.dataset_id WHERE j.id = ?1"),
                     "s", id);
    if (!st) return STORE_EDB;
    int rc = STORE_OK, step = store__step(st);
    if (step == STORE__ROW) {
        store__col_copy(st, 0, c->id, sizeof c->id);
        store__col_copy(st, 1, c->owner, sizeof c->owner);
        c->attempts = (int)store__col_int64(st, 2);
        c->spec = store__col_json(st, 3);
        store__col_copy(st, 4, c->model_id, sizeof c->model_id);
        store__col_copy(st, 5, c->model_sha256, sizeof c->model_sha256);
        store__col_copy(st, 6, c->dataset_id, sizeof c->dataset_id);
        store__col_copy(st, 7, c->dataset_kind, sizeof c->dataset_kind);
        store__col_copy(st, 8, c->dataset_sha256, sizeof c->dataset_sha256);
        c->val_fraction = store__col_null(st, 9) ? -1
                                                                     : store__col_double(st, 9);
    } else if (step == STORE__DONE) {
        rc = store__fail(s, STORE_EDB, "the claimed job %s vanished", id);
    } else {
        rc = store__db_fail(s);
    }
    store__reset(st);
    return rc;
}

int store_job_claim(store *s, const char *worker, int64_t lease_ms, store_claim *out) {
    memset(out, 0, sizeof *out);
    if (!worker || !*worker)
        return store__fail(s, STORE_EINVAL, "a worker needs a name to claim a job");
    int rc = store__tx_begin_claim(s);
    if (rc) return rc;
    int64_t now = store_now_ms();
    /* SQLite: under the write lock nobody else can claim between our choice and our update
     * (the single statement would be atomic on its own too). PostgreSQL: claims run side by
     * side; each locks the row it picks and skips the rows others hold, so two claims never
     * take the same job and never wait for each other. */
    store__stmt *st = store__query(
        s,
        STORE__SQL(s,
                   "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
                   " lease_worker = ?1, lease_expires_ms = ?2,"
                   " started_ms = COALESCE(started_ms, ?3), cancel_requested = 0"
                   " WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued'"
                   " ORDER BY seq LIMIT 1)"
                   " RETURNING id, stage",
                   "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
                   " lease_worker = ?1, lease_expires_ms = ?2,"
                   " started_ms = COALESCE(started_ms, ?3), cancel_requested = 0"
                   " WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued'"
                   " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                   " RETURNING id, stage"),
        "sII", worker, now + lease_ms, now);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    char id[64] = "", stage[64] = "";
    int has_stage = 0, step = store__step(st);
    if (step == STORE__ROW) {
        store__col_copy(st, 0, id, sizeof id);
        store__col_copy(st, 1, stage, sizeof stage);
        has_stage = !store__col_null(st, 1);
        step = store__step(st); /* runs the statement to its end */
    } else if (step == STORE__DONE) {
        rc = store__fail(s, STORE_ENONE, "no job is waiting");
    }
    if (!rc && step != STORE__DONE) rc = store__db_fail(s);
    store__reset(st);
    if (!rc) rc = store__state_event(s, id, "running", has_stage ? stage : NULL, NULL);
    if (!rc) rc = claim_read(s, id, out);
    rc = store__tx_end(s, rc, rc == STORE_OK);
    /* Failed, or claimed in memory only (the commit failed): nothing to run. */
    if (rc) store_claim_free(out);
    return rc;
}

/* Fencing: the job must be running under this worker's lease. Fills state-independent facts
 * the callers need. STORE_ELEASE (with a message) otherwise. */
static int lease_check(store *s, const char *id, const char *worker, int *cancel_requested,
                       char *stage, size_t stagelen, int *has_stage) {
    store__stmt *st = store__query(s,
                                    "SELECT cancel_requested, stage FROM jobs"
                                    " WHERE id = ?1 AND state = 'running' AND lease_worker = ?2",
                                    "ss", id, worker);
    if (!st) return STORE_EDB;
    int rc = STORE_OK, step = store__step(st);
    if (step == STORE__ROW) {
        if (cancel_requested) *cancel_requested = (int)store__col_int64(st, 0);
        if (stage) store__col_copy(st, 1, stage, stagelen);
        if (has_stage) *has_stage = !store__col_null(st, 1);
    } else if (step == STORE__DONE) {
        rc = store__fail(s, STORE_ELEASE,
                         "job %s is no longer leased to worker %s (its lease expired and it was "
                         "requeued, or it ended or was deleted); stop working on it",
                         id, worker);
    } else {
        rc = store__db_fail(s);
    }
    store__reset(st);
    return rc;
}

/* job.progress for a job whose webhook asked for it, at most every progress_every_ms. */
static int progress_webhook(store *s, const char *id) {
    int64_t now = store_now_ms();
    /* One statement decides and claims the slot, so the interval holds whoever writes. */
    store__stmt *st =
        store__query(s,
                     "UPDATE job_webhooks SET last_progress_ms = ?2 WHERE job_id = ?1"
                     " AND progress_every_ms > 0 AND ?2 - last_progress_ms >= progress_every_ms"
                     " RETURNING 1",
                     "sI", id, now);
    if (!st) return STORE_EDB;
    int step = store__step(st), due = step == STORE__ROW;
    if (due) step = store__step(st);
    store__reset(st);
    if (step != STORE__DONE) return store__db_fail(s);
    if (!due) return STORE_OK;
    json_t *job = NULL;
    int rc = store__job_fetch(s, NULL, id, &job);
    if (!rc) rc = store__webhook_enqueue(s, id, "job.progress", job);
    json_decref(job);
    return rc;
}

int store_job_progress(store *s, const char *id, const char *worker, int64_t lease_ms,
                       const char *stage, json_t *progress, int event) {
    int rc = store__tx_begin(s), cancel = 0;
    if (rc) return rc;
    rc = lease_check(s, id, worker, &cancel, NULL, 0, NULL);
    /* NULL stage or progress keeps the stored one: a bare heartbeat. */
    if (!rc)
        rc = store__exec(s,
                         "UPDATE jobs SET lease_expires_ms = ?2, stage = COALESCE(?3, stage),"
                         " progress = COALESCE(?4, progress) WHERE id = ?1",
                         "sIsj", id, store_now_ms() + lease_ms, stage, progress);
    if (!rc && event)
        rc = store__event_add(s, id, "progress",
                              progress ? json_deep_copy(progress) : json_object());
    if (!rc && event) rc = progress_webhook(s, id);
    rc = store__tx_end(s, rc, rc == STORE_OK);
    if (!rc && cancel)
        rc = store__fail(s, STORE_ECONFLICT,
                         "job %s was asked to cancel; end it with state \"canceled\"", id);
    return rc;
}

int store_job_metrics(store *s, const char *id, const char *worker, json_t *metrics) {
    if (!json_is_object(metrics))
        return store__fail(s, STORE_EINVAL, "metrics must be a JSON object");
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc = lease_check(s, id, worker, NULL, NULL, 0, NULL);
    json_t *cur = NULL;
    if (!rc)
        rc = store__query_one(s, store__col_json_0, &cur, "SELECT metrics FROM jobs WHERE id = ?1",
                              "s", id);
    if (!rc) {
        /* Nested objects merge too: {"stage2": {"top1": ..}} adds to what stage 2 reported
         * before instead of replacing it. */
        if (!json_is_object(cur)) {
            json_decref(cur);
            cur = json_object();
        }
        json_object_update_recursive(cur, metrics);
        rc = store__exec(s, "UPDATE jobs SET metrics = ?2 WHERE id = ?1", "sj", id, cur);
    }
    json_decref(cur);
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_job_finish(store *s, const char *id, const char *worker, const char *state,
                     const char *error) {
    if (!state || (strcmp(state, "succeeded") && strcmp(state, "failed") &&
                   strcmp(state, "canceled")))
        return store__fail(s, STORE_EINVAL,
                           "a job ends 'succeeded', 'failed' or 'canceled', not '%s'",
                           state ? state : "(none)");
    int rc = store__tx_begin(s), has_stage = 0;
    if (rc) return rc;
    char stage[64] = "";
    rc = lease_check(s, id, worker, NULL, stage, sizeof stage, &has_stage);
    if (!rc)
        rc = store__exec(
            s,
            "UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4, lease_worker = NULL,"
            " lease_expires_ms = NULL, cancel_requested = 0 WHERE id = ?1",
            "sssI", id, state, error, store_now_ms());
    if (!rc) rc = store__state_event(s, id, state, has_stage ? stage : NULL, error);
    return store__tx_end(s, rc, rc == STORE_OK);
}

/* A running job back to the queue (attempts_delta: 0 counts the attempt, -1 gives it back),
 * or, if a cancel was requested meanwhile, to canceled: nobody should run it again. error (may
 * be NULL: the job's stays as it was) says why the attempt ended, for the job and its event. */
static int job_requeue(store *s, const char *id, int cancel, const char *stage,
                       int attempts_delta, const char *error) {
    int rc;
    if (cancel) {
        rc =
            store__exec(s,
                        "UPDATE jobs SET state = 'canceled', finished_ms = ?2, lease_worker = NULL,"
                        " lease_expires_ms = NULL, cancel_requested = 0 WHERE id = ?1",
                        "sI", id, store_now_ms());
        return rc ? rc : store__state_event(s, id, "canceled", stage, NULL);
    }
    rc = store__exec(s,
                     STORE__SQL(s,
                                "UPDATE jobs SET state = 'queued', attempts = MAX(attempts + ?2, 0),"
                                " error = COALESCE(?3, error), lease_worker = NULL,"
                                " lease_expires_ms = NULL WHERE id = ?1",
                                "UPDATE jobs SET state = 'queued',"
                                " attempts = GREATEST(attempts + ?2, 0),"
                                " error = COALESCE(?3, error), lease_worker = NULL,"
                                " lease_expires_ms = NULL WHERE id = ?1"),
                     "sis", id, attempts_delta, error);
    if (!rc) rc = store_notify(s, STORE_CHANNEL_JOBS);
    return rc ? rc : store__state_event(s, id, "queued", stage, error);
}

/* A running job out of attempts: failed, with error. */
static int job_give_up(store *s, const char *id, const char *stage, const char *error) {
    int rc = store__exec(s,
                         "UPDATE jobs SET state = 'failed', error = ?2, finished_ms = ?3,"
                         " lease_worker = NULL, lease_expires_ms = NULL WHERE id = ?1",
                         "ssI", id, error, store_now_ms());
    return rc ? rc : store__state_event(s, id, "failed", stage, error);
}

int store_job_release(store *s, const char *id, const char *worker) {
    int rc = store__tx_begin(s), cancel = 0, has_stage = 0;
    if (rc) return rc;
    char stage[64] = "";
    rc = lease_check(s, id, worker, &cancel, stage, sizeof stage, &has_stage);
    if (!rc) rc = job_requeue(s, id, cancel, has_stage ? stage : NULL, -1, NULL);
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_job_retry(store *s, const char *id, const char *worker, const char *error,
                    int *requeued) {
    if (requeued) *requeued = 0;
    int rc = store__tx_begin(s), cancel = 0, has_stage = 0, attempts = 0, max_attempts = 0;
    if (rc) return rc;
    char stage[64] = "";
    rc = lease_check(s, id, worker, &cancel, stage, sizeof stage, &has_stage);
    store__stmt *st = NULL;
    if (!rc && !(st = store__query(s, "SELECT attempts, max_attempts FROM jobs WHERE id = ?1",
                                   "s", id)))
        rc = STORE_EDB;
    if (st) {
        if (store__step(st) == STORE__ROW) {
            attempts = (int)store__col_int64(st, 0);
            max_attempts = (int)store__col_int64(st, 1);
        } else {
            rc = store__db_fail(s);
        }
        store__reset(st);
    }
    int again = cancel || attempts < max_attempts;
    char msg[1024];
    if (!rc && again) {
        snprintf(msg, sizeof msg, "%s (attempt %d of %d; it is retried)",
                 error ? error : "(no reason given)", attempts, max_attempts);
        rc = job_requeue(s, id, cancel, has_stage ? stage : NULL, 0, cancel ? NULL : msg);
    } else if (!rc) {
        snprintf(msg, sizeof msg, "gave up after %d attempt%s: %s", attempts,
                 attempts == 1 ? "" : "s", error ? error : "(no reason given)");
        rc = job_give_up(s, id, has_stage ? stage : NULL, msg);
    }
    rc = store__tx_end(s, rc, rc == STORE_OK);
    if (!rc && requeued) *requeued = again && !cancel;
    return rc;
}

int store_job_expire(store *s, int64_t now_ms, const char *worker, int *n_requeued,
                     int *n_failed) {
    if (n_requeued) *n_requeued = 0;
    if (n_failed) *n_failed = 0;
    int rc = store__tx_begin(s);
    if (rc) return rc;
    /* Collected first, changed after: updating rows while a query walks them is undefined in
     * SQLite. */
    struct victim {
        char id[64], stage[64], worker[128];
        int has_stage, attempts, max_attempts, cancel;
    } *v = NULL;
    size_t n = 0, cap = 0;
    store__stmt *st =
        store__query(s,
                     "SELECT id, stage, lease_worker, attempts, max_attempts,"
                     " cancel_requested FROM jobs WHERE state = 'running'"
                     " AND (lease_expires_ms < ?1 OR lease_worker = ?2) ORDER BY seq",
                     "Is", now_ms, worker);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    int step;
    while ((step = store__step(st)) == STORE__ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            struct victim *nv = realloc(v, cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        struct victim *x = &v[n++];
        store__col_copy(st, 0, x->id, sizeof x->id);
        store__col_copy(st, 1, x->stage, sizeof x->stage);
        x->has_stage = !store__col_null(st, 1);
        store__col_copy(st, 2, x->worker, sizeof x->worker);
        x->attempts = (int)store__col_int64(st, 3);
        x->max_attempts = (int)store__col_int64(st, 4);
        x->cancel = (int)store__col_int64(st, 5);
    }
    if (step == STORE__ROW) rc = store__fail(s, STORE_EDB, "out of memory");
    else if (step != STORE__DONE) rc = store__db_fail(s);
    store__reset(st);
    int requeued = 0, failed = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        struct victim *x = &v[i];
        const char *stage = x->has_stage ? x->stage : NULL;
        int died = worker && !strcmp(worker, x->worker);
        if (x->cancel || x->attempts < x->max_attempts) {
            rc = job_requeue(s, x->id, x->cancel, stage, 0, NULL);
            if (!x->cancel) requeued++;
            continue;
        }
        char error[512], seen[96];
        if (stage)
            snprintf(seen, sizeof seen, "last seen at %s", stage);
        else
            snprintf(seen, sizeof seen, "before it reported a stage");
        snprintf(error, sizeof error,
                 "gave up after %d attempt%s: the worker running it (%s) %s (%s)", x->attempts,
                 x->attempts == 1 ? "" : "s", x->worker, died ? "exited" : "stopped responding",
                 seen);
        rc = job_give_up(s, x->id, stage, error);
        failed++;
    }
    free(v);
    rc = store__tx_end(s, rc, rc == STORE_OK);
    if (!rc) {
        if (n_requeued) *n_requeued = requeued;
        if (n_failed) *n_failed = failed;
    }
    return rc;
}
