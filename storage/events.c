/*
 * events.c: what is said about a job after the fact: its events (the history that GET
 * /v1/jobs/{id}/events streams) and its webhook's outbox, with each attempt to deliver (see
 * store.h). Both are written inside the transaction of the change they report, by the
 * store__ functions that jobs.c calls, so an event exists exactly when its change does.
 */
#include "storage/store_int.h"

#include <stdint.h>
#include <string.h>

/* ---- events ----
 * Appended inside the transaction of the change they describe. */

/* data is stolen. */
int store__event_add(store *s, const char *job_id, const char *type, json_t *data) {
    if (!data) return store__fail(s, STORE_EDB, "out of memory");
    int rc = store__exec(
        s, "INSERT INTO events (job_id, type, data, created_ms) VALUES (?1, ?2, ?3, ?4)", "ssjI",
        job_id, type, data, store_now_ms());
    json_decref(data);
    /* Streams on every node look at once (PostgreSQL; they poll as well) */
    if (!rc) rc = store_notify(s, STORE_CHANNEL_EVENTS);
    return rc;
}

/* Puts a webhook event for the job in the outbox, if the job has a webhook: payload {id, type,
 * created (Unix seconds), job} with job (borrowed) as it is now. Inside the caller's
 * transaction, so the event exists exactly when the change does. */
int store__webhook_enqueue(store *s, const char *job_id, const char *type, json_t *job) {
    store__stmt *st = store__query(s, "SELECT 1 FROM job_webhooks WHERE job_id = ?1", "s", job_id);
    if (!st) return STORE_EDB;
    int step = store__step(st);
    store__reset(st);
    if (step == STORE__DONE) return STORE_OK;
    if (step != STORE__ROW) return store__db_fail(s);
    char event_id[32];
    store_new_id(event_id, "evt_");
    int64_t now = store_now_ms();
    json_t *payload = json_pack("{s:s, s:s, s:I, s:O}", "id", event_id, "type", type, "created",
                                (json_int_t)(now / 1000), "job", job);
    if (!payload) return store__fail(s, STORE_EDB, "out of memory");
    int rc =
        store__exec(s,
                    "INSERT INTO webhook_outbox (event_id, job_id, type, payload, next_attempt_ms,"
                    " created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    "sssjI", event_id, job_id, type, payload, now);
    json_decref(payload);
    return rc;
}

/* Called after the change, in its transaction: the event carries the job as it now is, so a
 * live view (SSE) or a webhook shows each state with the job that had it, not a later one.
 * A job that starts or ends also gets its webhook event (job.started, job.succeeded, ...). */
int store__state_event(store *s, const char *job_id, const char *state, const char *stage,
                       const char *error) {
    json_t *job = NULL;
    int rc = store__job_fetch(s, NULL, job_id, &job);
    if (rc) return rc;
    const char *hook = !strcmp(state, "running")     ? "job.started"
                       : !strcmp(state, "succeeded") ? "job.succeeded"
                       : !strcmp(state, "failed")    ? "job.failed"
                       : !strcmp(state, "canceled")  ? "job.canceled"
                                                     : NULL;
    if (hook) rc = store__webhook_enqueue(s, job_id, hook, job);
    if (rc) {
        json_decref(job);
        return rc;
    }
    return store__event_add(s, job_id, "state",
                            json_pack("{s:s, s:s?, s:s?, s:o}", "state", state, "stage", stage,
                                      "error", error, "job", job));
}

static json_t *event_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "id", store__col_int(st, 0), "job_id",
                     store__col_str(st, 1), "type", store__col_str(st, 2), "data",
                     store__col_json(st, 3), "created_at", store__col_time(st, 4));
}

int store_event_max_id(store *s, int64_t *id) {
    *id = 0;
    store__stmt *st = store__query(s, "SELECT COALESCE(MAX(id), 0) FROM events", "");
    if (!st) return STORE_EDB;
    int rc = store__step(st) == STORE__ROW ? STORE_OK : store__db_fail(s);
    if (!rc) *id = store__col_int64(st, 0);
    store__reset(st);
    return rc;
}

int store_event_list(store *s, const char *owner, const char *job_id, int64_t after_id,
                     int limit, json_t **out_array) {
    *out_array = NULL;
    int rc = store__job_visible(s, owner, job_id);
    if (rc) return rc;
    return store__query_all(s, event_row, out_array,
                            "SELECT id, job_id, type, data, created_ms FROM events"
                            " WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                            "sII", job_id, after_id, limit > 0 ? (int64_t)limit : INT64_MAX);
}

/* ---- webhook deliveries ---- */

static json_t *due_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "outbox_id",
                     store__col_int(st, 0), "event_id", store__col_str(st, 1), "type",
                     store__col_str(st, 2), "payload", store__col_str(st, 3), "attempts",
                     store__col_int(st, 4), "url", store__col_str(st, 5), "secret",
                     store__col_str(st, 6), "job_id", store__col_str(st, 7));
}

static json_t *due_plain_row(store__stmt *st) {
    return json_pack("{s:o, s:o}", "job_id", store__col_str(st, 0), "secret",
                     store__col_str(st, 1));
}

/* Replaces a due row's sealed secret by its plaintext, or by secret_error when it does not
 * open (the database was moved to a gplqd with another key file). */
static void open_secret(store *s, json_t *r) {
    const char *sealed = json_string_value(json_object_get(r, "secret"));
    const char *job = json_string_value(json_object_get(r, "job_id"));
    char err[256];
    char *plain = !s->has_key ? NULL : !secretbox_is_sealed(sealed) ? strdup(sealed ? sealed : "")
                                     : secretbox_open(s->key, sealed, job ? job : "", err, sizeof err);
    if (!s->has_key) snprintf(err, sizeof err, "no key to open the webhook secret with");
    if (plain) {
        json_object_set_new(r, "secret", json_string(plain));
        explicit_bzero(plain, strlen(plain));
        free(plain);
    } else {
        json_object_del(r, "secret");
        json_object_set_new(r, "secret_error", json_string(err));
    }
    json_object_del(r, "job_id");
}

int store_seal_secrets(store *s, int *sealed) {
    if (sealed) *sealed = 0;
    if (!s->has_key) return store__fail(s, STORE_EINVAL, "no key to seal the webhook secrets with");
    int rc = store__tx_begin(s);
    if (rc) return rc;
    json_t *rows = NULL;
    rc = store__query_all(s, due_plain_row, &rows,
                          "SELECT job_id, secret FROM job_webhooks WHERE secret NOT LIKE 'sb1:%'",
                          "");
    size_t i;
    json_t *r;
    json_array_foreach(rc ? NULL : rows, i, r) {
        const char *job = json_string_value(json_object_get(r, "job_id"));
        const char *plain = json_string_value(json_object_get(r, "secret"));
        char *box = secretbox_seal(s->key, plain ? plain : "", job ? job : "");
        if (!box) {
            rc = store__fail(s, STORE_EDB, "cannot seal a webhook secret (libcrypto failed)");
            break;
        }
        rc = store__exec(s, "UPDATE job_webhooks SET secret = ?2 WHERE job_id = ?1", "ss", job,
                         box);
        free(box);
        if (rc) break;
        if (sealed) (*sealed)++;
    }
    json_decref(rows);
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_webhook_due(store *s, int64_t now_ms, int64_t lease_ms, int limit, json_t **out_array) {
    *out_array = NULL;
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc =
        store__query_all(s, due_row, out_array,
                         "SELECT o.id, o.event_id, o.type, o.payload, o.attempts, w.url, w.secret,"
                         " o.job_id"
                         " FROM webhook_outbox o JOIN job_webhooks w ON w.job_id = o.job_id"
                         " WHERE o.status = 'pending' AND o.next_attempt_ms <= ?1"
                         /* one job's events go out in order: a row waits while an earlier one of
                          * its job is pending (in flight, or waiting to retry), so a receiver never
                          * sees job.progress before job.started, or anything after job.succeeded */
                         " AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.job_id = o.job_id"
                         " AND e.id < o.id AND e.status = 'pending')"
                         " ORDER BY o.next_attempt_ms, o.id LIMIT ?2",
                         "II", now_ms, (int64_t)(limit > 0 ? limit : 1));
    /* Leased: another look (this daemon's next poll, or after a crash a restarted one) takes
     * them only once the lease is over, when the attempt has surely ended. */
    size_t i;
    json_t *r;
    json_array_foreach(rc ? NULL : *out_array, i, r) {
        rc = store__exec(s, "UPDATE webhook_outbox SET next_attempt_ms = ?2 WHERE id = ?1", "II",
                         (int64_t)json_integer_value(json_object_get(r, "outbox_id")),
                         now_ms + lease_ms);
        if (rc) break;
        open_secret(s, r);
    }
    if (rc) {
        json_decref(*out_array);
        *out_array = NULL;
    }
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_webhook_record(store *s, int64_t outbox_id, int attempt, int64_t started_ms,
                         int status_code, int64_t latency_ms, const char *error,
                         const char *outcome, int64_t next_attempt_ms) {
    const char *status = !strcmp(outcome, "retry") ? "pending" : outcome;
    if (strcmp(status, "pending") && strcmp(status, "delivered") && strcmp(status, "failed"))
        return store__fail(s, STORE_EINVAL, "a delivery is delivered, retry or failed, not '%s'",
                           outcome);
    int rc = store__tx_begin(s);
    if (rc) return rc;
    /* The job may have been deleted meanwhile (its rows with it): nothing to record then. */
    rc = store__exec(s,
                     "INSERT INTO webhook_attempts (outbox_id, attempt, started_ms, status_code,"
                     " latency_ms, error) SELECT ?1, ?2, ?3, NULLIF(?4, 0), ?5, ?6"
                     " WHERE EXISTS (SELECT 1 FROM webhook_outbox WHERE id = ?1)",
                     "IiIiIs", outbox_id, attempt, started_ms, status_code, latency_ms, error);
    if (!rc)
        rc = store__exec(
            s,
            "UPDATE webhook_outbox SET attempts = ?2, status = ?3, next_attempt_ms = ?4,"
            " finished_ms = CASE WHEN ?3 = 'pending' THEN NULL ELSE ?5 END WHERE id = ?1",
            "IisII", outbox_id, attempt, status, next_attempt_ms, store_now_ms());
    return store__tx_end(s, rc, rc == STORE_OK);
}

static json_t *attempt_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "attempt", store__col_int(st, 0), "at",
                     store__col_time(st, 1), "status_code", store__col_int(st, 2), "latency_ms",
                     store__col_int(st, 3), "error", store__col_str(st, 4));
}

static json_t *delivery_row(store__stmt *st) {
    int pending = !strcmp(store__col_text(st, 3), "pending");
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", store__col_str(st, 1), "type",
                     store__col_str(st, 2), "status", store__col_str(st, 3), "created_at",
                     store__col_time(st, 4), "finished_at", store__col_time(st, 5),
                     "next_attempt_at", pending ? store__col_time(st, 6) : json_null(), "outbox_id",
                     store__col_int(st, 0));
}

int store_webhook_list(store *s, const char *owner, const char *job_id, json_t **out_array) {
    *out_array = NULL;
    int rc = store__job_visible(s, owner, job_id);
    if (rc) return rc;
    json_t *arr = NULL;
    rc = store__query_all(
        s, delivery_row, &arr,
        "SELECT id, event_id, type, status, created_ms, finished_ms, next_attempt_ms"
        " FROM webhook_outbox WHERE job_id = ?1 ORDER BY id",
        "s", job_id);
    size_t i;
    json_t *d;
    json_array_foreach(rc ? NULL : arr, i, d) {
        json_t *attempts = NULL;
        rc = store__query_all(s, attempt_row, &attempts,
                              "SELECT attempt, started_ms, status_code, latency_ms, error"
                              " FROM webhook_attempts WHERE outbox_id = ?1 ORDER BY id",
                              "I", (int64_t)json_integer_value(json_object_get(d, "outbox_id")));
        if (rc) break;
        json_object_del(d, "outbox_id");
        json_object_set_new(d, "attempts", attempts);
    }
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out_array = arr;
    return STORE_OK;
}

int store_webhook_counts(store *s, json_t **out) {
    *out = NULL;
    json_t *c = json_pack("{s:i, s:i, s:i}", "pending", 0, "delivered", 0, "failed", 0);
    return store__counts(s, "SELECT status, COUNT(*) FROM webhook_outbox GROUP BY status", c, out);
}
