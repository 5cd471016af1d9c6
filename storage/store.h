/*
 * store.h: gplqd's durable state, and every SQL statement of the project (nothing outside
 * storage/ writes SQL). Two backends behind this one interface: one SQLite database in WAL mode
 * (a file under the data dir: one machine, the default), or one PostgreSQL database that
 * several gplqd nodes share (a cluster: the target is a postgresql:// URL). Both hold the same
 * schema, at the same version (store_int.h says how the two dialects sit side by side).
 *
 * Tables: models, datasets, jobs, artifacts, events, tokens (and webhooks). Every resource row
 * has an owner (the name of the API token that created it; "" for rows from before tokens and
 * for built-ins) and every read is filtered by it; an owner of NULL means "admin: every owner".
 *
 * Connections: one `store` is one connection and must not be used by two threads at once.
 * gplqd opens one per HTTP thread and one for its libuv loop; each worker opens its own after
 * exec. Every state change of a job is one transaction, under the database's write lock, so a
 * crash at any point leaves either the old or the new state.
 *
 * Objects come back as jansson objects in their API shape (the same keys the REST API
 * returns), new references the caller releases with json_decref. Times are Unix milliseconds
 * in the database and ISO-8601 UTC strings in the objects.
 *
 * Errors: functions return STORE_OK or a negative STORE_E* code; the message is on the handle
 * (store_errmsg) until the next call. Any function that writes may return STORE_EFULL or
 * STORE_EIO (a full disk, an I/O error); then nothing was changed. A PostgreSQL connection
 * that broke (the server restarted) makes the call that meets it fail with STORE_EDB; the
 * next call on the handle connects again.
 */
#ifndef GPLQ_STORE_H
#define GPLQ_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "storage/blob.h"
#include "util/jtext.h"

typedef struct store store;

enum {
    STORE_OK = 0,
    STORE_ENOTFOUND = -1, /* no such row for this owner */
    STORE_ECONFLICT = -2, /* the row is in a state that forbids the change (message says why) */
    STORE_EEXISTS = -3,   /* a unique key already held; the existing row is returned */
    STORE_ENONE = -4,     /* nothing to do (no queued job to claim) */
    STORE_ELEASE = -5,    /* the caller's lease on a job is gone: stop working on it */
    STORE_EINVAL = -6,    /* a malformed argument (a bad list cursor, an unknown state name) */
    STORE_ELIMIT = -7,    /* a per-owner limit is reached (message says which) */
    STORE_EDB = -10,      /* SQLite error or I/O error */
    /* Storage faults that pass by themselves: the change was not made (its transaction rolled
     * back), and the same call succeeds once the fault is gone, without reopening. */
    STORE_EFULL = -11,    /* the disk (or a quota on it) is full: SQLITE_FULL, ENOSPC, EDQUOT */
    STORE_EIO = -12,      /* an I/O error reading or writing the database or a blob */
};

/* Opens (creating and migrating to the current schema version if needed) the database at path:
 * a file (SQLite), or a postgresql:// or postgres:// URL (PostgreSQL, libpq's URI syntax).
 * A database whose schema is newer than this build's is refused, with a message saying so.
 * busy_ms: how long a statement waits for another connection's write lock.
 * On success *out is new (store_close). On failure *out is NULL and err holds the reason. */
int store_open(store **out, const char *path, int busy_ms, char *err, size_t errlen);
/* 1 if target is a PostgreSQL URL rather than a file path. */
int store_is_url(const char *target);
/* target as logs and messages may show it, into out (n bytes): a URL's password replaced by
 * "***" (a file path unchanged). */
void store_target_redact(char *out, size_t n, const char *target);
/* `gplqd migrate`: brings the database at target to this build's schema version. *from: the
 * version it had (0: empty), *to: the version it has now. STORE_OK, or a code with err set (a
 * newer schema than this build's among them). */
int store_migrate(const char *target, int busy_ms, int *from, int *to, char *err,
                  size_t errlen);
/* "sqlite" or "postgresql" (a static string). */
const char *store_backend(const store *s);

/* ---- wake-ups across nodes (PostgreSQL's LISTEN/NOTIFY; with SQLite, nothing: one machine,
 * whose gplqd wakes its own workers) ----
 * Channels: STORE_CHANNEL_JOBS is notified when a job is queued (submitted, or back in the
 * queue), STORE_CHANNEL_EVENTS when a job's event is written; both at the commit of the change.
 * listen: this handle receives them from now on. wait_fd: a descriptor that becomes readable
 * when one may have arrived (-1 with SQLite); drain: reads what arrived, returns how many (0 if
 * none; a broken connection is reconnected and listened again, and counts as one, since a
 * notification may have been lost). */
#define STORE_CHANNEL_JOBS "gplq_jobs"
#define STORE_CHANNEL_EVENTS "gplq_events"
int store_listen(store *s, const char *channel);
int store_notify(store *s, const char *channel);
int store_wait_fd(store *s);
int store_drain(store *s);
void store_close(store *s);
/* Borrowed, valid until the next call on s. */
const char *store_errmsg(const store *s);
/* Webhook secrets are stored sealed (util/secretbox.h) under key, bound to their job's id, so
 * the database alone does not give them away. s keeps a copy of key. A handle that stores or
 * reads a secret (gplqd's request threads and its webhook delivery) is given the key after
 * store_open; without one, submitting a job with a webhook is STORE_EINVAL. */
void store_set_secret_key(store *s, const uint8_t *key);
/* Seals every secret that a gplqd from before sealing stored in plain text; *sealed (if not
 * NULL) how many. Idempotent: gplqd runs it at each start. */
int store_seal_secrets(store *s, int *sealed);
/* The schema version this build writes (user_version). */
int store_schema_version(void);
/* Now as Unix milliseconds (CLOCK_REALTIME): the clock every stored time uses, for callers
 * of store_job_expire. */
int64_t store_now_ms(void);

/* A fresh random id with the given prefix ("m_", "d_", "j_"): prefix + 16 hex digits from
 * getrandom. out must hold 32 bytes. */
void store_new_id(char *out, const char *prefix);

/* ---- models ----
 * A model row points at a content-addressed blob (blob.h); the same owner uploading the same
 * bytes gets the same row back (STORE_EEXISTS with *out set to it). config is the inferred
 * vit_config as a JSON object (borrowed here, copied into the row).
 * Object: {id, name, sha256, bytes, config, created_at} */
int store_model_insert(store *s, const char *owner, const char *name, const char *sha256,
                       int64_t bytes, json_t *config, json_t **out);
int store_model_get(store *s, const char *owner, const char *id, json_t **out);
/* owner's model of these bytes (owner "" for NULL), STORE_ENOTFOUND if none. */
int store_model_by_sha256(store *s, const char *owner, const char *sha256, json_t **out);
int store_model_list(store *s, const char *owner, json_t **out_array);
/* STORE_ECONFLICT while a queued or running job uses it. On success *sha256_out (65 bytes,
 * may be NULL) receives the blob's hash; store_blob_in_use then says whether another row still
 * references it, so the caller knows whether to delete the file. */
int store_model_delete(store *s, const char *owner, const char *id, char *sha256_out);

/* ---- datasets ----
 * kind "builtin" (fashion-mnist, owner "", visible to all, cannot be deleted) or "upload"
 * (a tar blob). summary: JSON object (classes, counts, image format notes) from the inspector.
 * Object: {id, name, kind, sha256, bytes, summary, created_at}
 * Insert: id_or_null NULL makes a fresh "d_" id. A given id already present returns
 * STORE_EEXISTS with *out set to it (so a built-in can be registered at every start-up), or
 * STORE_ECONFLICT if another owner holds it. Uploads are not deduplicated by sha256 (unlike
 * models): two rows may share a blob, which store_blob_in_use accounts for. A bad kind:
 * STORE_EINVAL. */
int store_dataset_insert(store *s, const char *owner, const char *id_or_null, const char *name,
                         const char *kind, const char *sha256, int64_t bytes, json_t *summary,
                         json_t **out);
int store_dataset_get(store *s, const char *owner, const char *id, json_t **out);
int store_dataset_list(store *s, const char *owner, json_t **out_array);
int store_dataset_delete(store *s, const char *owner, const char *id, char *sha256_out);
/* 1 if any model, dataset or artifact row (any owner) still references the blob sha256, else
 * 0. A database error also answers 1, so that the caller keeps the file. */
int store_blob_in_use(store *s, const char *sha256);

/* ---- uploads: a blob and the row that names it ----
 * What an upload of a model or dataset must keep true, kept here: the blob file of every row
 * is there, no blob stays that no row names, and an owner's rows hold at most the per-owner
 * limit. Correctness comes from the database's write lock, so it holds across processes. */
typedef struct {
    const char *owner;       /* recorded on the row; NULL records "" */
    const char *quota_owner; /* whose rows count against max_owner_bytes; NULL: no limit (admin) */
    int64_t max_owner_bytes; /* > 0: the limit on a quota_owner's models plus uploaded datasets */
    int is_model;            /* 1: a models row; 0: a datasets row of kind "upload" */
    const char *name;
    json_t *info;            /* the model's config or the dataset's summary (borrowed, copied) */
} store_upload;
/* Records the finished upload in w (blob.h: written, not yet committed) as a new row. In one
 * transaction (BEGIN IMMEDIATE): a model the owner already has of these bytes is
 * STORE_EEXISTS with *out that row (the limit does not apply: it holds nothing new); else
 * the owner's committed rows plus w->bytes must fit the limit, or STORE_ELIMIT with *held
 * (may be NULL) the bytes quota_owner holds; else the blob is moved into place under
 * data_dir and the row inserted, STORE_OK with *out the new row (a new reference, as for the
 * inserts above). Either way w is closed and its temp file gone, and a blob placed for a row
 * that failed to commit is removed unless another row names it. A blob that cannot be
 * synced or moved into place for want of space is STORE_EFULL (STORE_EIO for another I/O
 * error), as a database that cannot grow is. */
int store_upload_commit(store *s, const char *data_dir, blob_writer *w, const store_upload *u,
                        json_t **out, int64_t *held);
/* store_model_delete (is_model 1) or store_dataset_delete, then the blob under data_dir unless
 * another row still names it, checked and removed under the write lock so that a concurrent
 * upload of the same bytes keeps its file. Returns the delete's code. */
int store_upload_delete(store *s, const char *data_dir, int is_model, const char *owner,
                        const char *id);

/* ---- jobs ----
 * States: queued -> running -> succeeded | failed | canceled; running -> queued when a lease
 * expires with attempts left; queued -> canceled on cancel.
 * Object: {id, model_id, dataset_id, spec, state, stage, progress, metrics, error, attempts,
 *          max_attempts, created_at, started_at, finished_at, webhook}  (null where not yet
 *          known; webhook is {url, progress_every_s} or null, never the secret)
 * spec is the resolved job spec (every option with its value), stored as given.
 * Insert: the model and dataset must exist and be visible to owner (else STORE_ENOTFOUND);
 * max_attempts < 1 means STORE_DEFAULT_MAX_ATTEMPTS; a state "queued" event is appended. With
 * an idempotency_key (may be NULL) already used by this owner: STORE_EEXISTS and *out is that
 * job. Owner NULL inserts as owner "". */
#define STORE_DEFAULT_MAX_ATTEMPTS 3
int store_job_insert(store *s, const char *owner, const char *model_id, const char *dataset_id,
                     json_t *spec, int max_attempts, const char *idempotency_key, json_t **out);
/* The same with every option: what store_job_insert does with owner == scope, plus a limit of
 * queued jobs per owner. Strings and spec are borrowed. */
typedef struct {
    const char *owner;           /* recorded on the row; NULL records "" */
    const char *scope;           /* whose models and datasets it may use; NULL = anyone's (admin) */
    const char *model_id, *dataset_id;
    json_t *spec;
    int max_attempts;            /* < 1: STORE_DEFAULT_MAX_ATTEMPTS */
    const char *idempotency_key; /* may be NULL */
    int max_queued;              /* > 0: STORE_ELIMIT when owner already has this many queued */
    /* A webhook (url NULL: none): its events are queued in the outbox from now on (below). */
    const char *webhook_url, *webhook_secret;
    int64_t webhook_progress_ms; /* > 0: job.progress at most this often */
} store_job_new;
int store_job_submit(store *s, const store_job_new *n, json_t **out);
int store_job_get(store *s, const char *owner, const char *id, json_t **out);
/* The same job as members written into t (begun by the caller, util/jtext.h), in the same
 * order: its JSON columns are spliced as stored rather than parsed, for GET /v1/jobs/{id}. On
 * an error t may hold part of the members: the caller drops it. */
int store_job_get_text(store *s, const char *owner, const char *id, jtext *t);
/* Jobs newest first; state NULL = all; limit <= 0 = no limit; after = the cursor from a
 * previous page (NULL = from the newest; a string that is not one: STORE_EINVAL).
 * *next_cursor (a new string, free(), NULL at the end) continues the list. */
int store_job_list(store *s, const char *owner, const char *state, int limit, const char *after,
                   json_t **out_array, char **next_cursor);
/* The same page as objects written into t, inside an array the caller opened there (jtext_array):
 * each as store_job_get_text writes it. On an error t may hold part of the page. */
int store_job_list_text(store *s, const char *owner, const char *state, int limit,
                        const char *after, jtext *t, char **next_cursor);
/* queued -> canceled at once; running -> cancel requested (the worker sees it at its next
 * progress write and ends the job canceled); ended -> STORE_ECONFLICT. *out: the job after. */
int store_job_cancel(store *s, const char *owner, const char *id, json_t **out);
/* Ended jobs only (STORE_ECONFLICT otherwise); removes its artifact and event rows too. */
int store_job_delete(store *s, const char *owner, const char *id);
/* Jobs per state and the queue depth, as {"queued": n, "running": n, ...}. */
int store_job_counts(store *s, json_t **out);

/* For /metrics: calls fn(arg, state, seconds) for every ended job that started (seconds from
 * its first start to its end). */
int store_job_durations(store *s, void (*fn)(void *arg, const char *state, double seconds),
                        void *arg);
/* For /metrics: time per pipeline stage of succeeded jobs, from a stage's first progress event
 * to the next stage's (the last stage: to the job's end), as {stage: {sum (s), count}}. */
int store_stage_durations(store *s, json_t **out);

/* ---- the worker's side ---- */

/* A claimed job, as its worker needs it. Text fields are "" where the row is gone (a model
 * deleted since: the worker says so). */
typedef struct {
    char id[64], owner[256];
    int attempts;            /* this one included */
    json_t *spec;            /* the stored spec: options and references (owned) */
    char model_id[64], model_sha256[65];
    char dataset_id[64], dataset_kind[16], dataset_sha256[65]; /* kind: builtin, upload */
    double val_fraction;     /* an upload's held-out share, as uploaded; -1 if not recorded */
} store_claim;
/* Frees what a claim owns and zeroes it (a zeroed claim is fine to free). */
void store_claim_free(store_claim *c);

/* Claims the oldest queued job for worker (a name such as "w1:pid"): state running,
 * attempts + 1, lease until now + lease_ms, started_at set if first; fills *out (the caller
 * frees it with store_claim_free). STORE_ENONE if none (*out zeroed). Atomic: two workers
 * never claim the same job. */
int store_job_claim(store *s, const char *worker, int64_t lease_ms, store_claim *out);
/* Heartbeat and progress in one write: extends the lease to now + lease_ms, stores stage and
 * progress (a JSON object, borrowed; NULL keeps the stored one, so NULL, NULL is a bare
 * heartbeat) and, if event is nonzero, appends a "progress" event whose data is the progress
 * object. Returns STORE_OK,
 * STORE_ELEASE if the job is no longer this worker's (expired and reclaimed, or deleted), or
 * STORE_ECONFLICT if a cancel was requested (the lease is still extended). */
int store_job_progress(store *s, const char *id, const char *worker, int64_t lease_ms,
                       const char *stage, json_t *progress, int event);
/* Merges metrics (borrowed, an object) into the job's metrics object (accuracies as they become
 * known); nested objects merge key by key. STORE_ELEASE as for progress. */
int store_job_metrics(store *s, const char *id, const char *worker, json_t *metrics);
/* Ends the job: state "succeeded", "failed" or "canceled", error message (NULL if none).
 * STORE_ELEASE if the lease is not this worker's. */
int store_job_finish(store *s, const char *id, const char *worker, const char *state,
                     const char *error);
/* Gives a running job back to the queue without counting the attempt (the worker was asked
 * to stop, e.g. gplqd shutting down; its stage-1 state is checkpointed). STORE_ELEASE if not
 * this worker's. A job whose cancel was requested ends "canceled" instead. */
int store_job_release(store *s, const char *id, const char *worker);
/* Ends this attempt for a reason that may pass (the disk was full): back to the queue with the
 * attempt counted and error + " (attempt N of M; it is retried)" recorded on the job (its
 * owner sees why it runs again), or, if it was the last of max_attempts, "failed" with "gave
 * up after N attempts: " + error. A job
 * whose cancel was requested ends "canceled". *requeued (may be NULL): 1 if it went back to
 * the queue. STORE_ELEASE if the lease is not this worker's. */
int store_job_retry(store *s, const char *id, const char *worker, const char *error,
                    int *requeued);
/* Returns to the queue (or fails, when attempts == max_attempts, with an error saying so) every
 * running job whose lease ended before now_ms; worker != NULL also releases that worker's
 * jobs at once (it was seen to die). A job whose cancel was requested ends "canceled" instead
 * (counted in neither). *n_requeued, *n_failed may be NULL. */
int store_job_expire(store *s, int64_t now_ms, const char *worker, int *n_requeued,
                     int *n_failed);

/* ---- artifacts of a job ---- {name, bytes, sha256}
 * add: STORE_ENOTFOUND if the job does not exist; a name already present is replaced (a retried
 * job exports again). list: by name. */
int store_artifact_add(store *s, const char *job_id, const char *name, int64_t bytes,
                       const char *sha256);
int store_artifact_list(store *s, const char *owner, const char *job_id, json_t **out_array);
int store_artifact_get(store *s, const char *owner, const char *job_id, const char *name,
                       json_t **out);

/* ---- events of a job (state changes and progress), for SSE with Last-Event-ID ----
 * Appended by the job functions above in the same transaction as the change.
 * Object: {id (integer, increasing), job_id, type, data (object), created_at}
 * Types: "state" (data {state, stage, error, job}, job being the job object right after the
 * change; one per state change, the first "queued") and "progress" (data: the progress
 * object). limit <= 0 = no limit. */
int store_event_list(store *s, const char *owner, const char *job_id, int64_t after_id,
                     int limit, json_t **out_array);
/* The newest event id of any job (0 if none): a cheap "has anything happened" for streams. */
int store_event_max_id(store *s, int64_t *id);

/* ---- webhooks ----
 * A job with a webhook gets an outbox row, in the same transaction as the change, for each
 * event: job.started (running), job.succeeded, job.failed, job.canceled, and job.progress (at
 * most every progress_every_ms, with a progress event). The payload is fixed when the row is
 * written: {id ("evt_..."), type, created (Unix seconds), job (the job object then)}.
 *
 * due: up to limit pending rows whose time has come and whose job has no earlier row pending
 * (each job's events are delivered in order, one at a time), each leased for lease_ms (their next
 * attempt time moves past it, so no other look takes them meanwhile); a new array of
 * {outbox_id, event_id, type, payload (the JSON text to send), attempts (made so far), url,
 * secret (opened with the handle's key), secret_error (instead of secret, when it does not open:
 * another key file, or no key)}. record: one attempt (attempt = its number, status_code 0 if no HTTP answer, error
 * NULL on success) and the row's new state: outcome "delivered", "failed" (given up), or
 * "retry" at next_attempt_ms. list: the job's deliveries for the API, oldest first: {id, type,
 * status (pending, delivered, failed), created_at, finished_at, next_attempt_at, attempts:
 * [{attempt, at, status_code, latency_ms, error}]}. counts: {pending, delivered, failed}. */
int store_webhook_due(store *s, int64_t now_ms, int64_t lease_ms, int limit, json_t **out_array);
int store_webhook_record(store *s, int64_t outbox_id, int attempt, int64_t started_ms,
                         int status_code, int64_t latency_ms, const char *error,
                         const char *outcome, int64_t next_attempt_ms);
int store_webhook_list(store *s, const char *owner, const char *job_id, json_t **out_array);
int store_webhook_counts(store *s, json_t **out);

/* ---- API tokens ----
 * A token's secret never reaches the store: the caller passes its SHA-256 (hex). Object:
 * {id, name, admin (bool), created_at, revoked_at (null while live)}.
 * insert: STORE_ECONFLICT if id is taken. revoke: STORE_ENOTFOUND, or STORE_ECONFLICT when
 * already revoked; *out is the row after. find: the hash, name (namelen bytes) and admin flag
 * of a live token, STORE_ENOTFOUND when there is none or it is revoked. count: every row,
 * revoked ones too (a database that never had a token gets one at gplqd's first start). */
int store_token_insert(store *s, const char *id, const char *name, int admin,
                       const char *hash_hex, json_t **out);
/* The same into a table that never had a row, checked under the write lock (the first start's
 * admin token: of several nodes starting at once on a new database, one makes it); a table with
 * rows, revoked ones too: STORE_EEXISTS and nothing written. */
int store_token_insert_first(store *s, const char *id, const char *name, int admin,
                             const char *hash_hex, json_t **out);
int store_token_list(store *s, json_t **out_array);
int store_token_revoke(store *s, const char *id, json_t **out);
int store_token_find(store *s, const char *id, char hash_hex[65], char *name, size_t namelen,
                     int *admin);
int store_token_count(store *s, int64_t *n);

/* Bytes of the models and uploaded datasets owner holds (for the per-owner upload limit). */
int store_owner_upload_bytes(store *s, const char *owner, int64_t *bytes);

#endif
