/*
 * store.c: gplqd's durable state in one SQLite database (see store.h for the contract): the
 * handle, opening it, the schema, and the helpers every statement goes through.
 *
 * storage/ holds every SQL statement of the project, one file per group of tables, each
 * statement's text next to the function that runs it: uploads.c (models, datasets), jobs.c,
 * artifacts.c, events.c (events, webhook deliveries), tokens.c. They share what
 * storage/store_int.h declares. Layout of this file: the handle's small helpers (errors, time,
 * "prepare, bind, step", transactions, columns), then the schema as a list of migrations and
 * store_open. Every statement takes its values as bound parameters; the only SQL text built at
 * run time is `PRAGMA user_version = <our own integer>`, because PRAGMA cannot take a
 * parameter.
 *
 * Concurrency: several processes (gplqd's threads, each worker) write the same file. Every
 * write that reads before it writes runs inside BEGIN IMMEDIATE, which takes the database's
 * write lock up front (waiting up to the busy timeout). Taking it late, in a deferred
 * transaction, could fail with SQLITE_BUSY when upgrading a read snapshot that another writer
 * made stale; taking it first means a check such as "is this job still queued" and the write
 * that depends on it see the same state, across processes.
 */
#include "storage/store_int.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/fs.h"

/* ---- errors ---- */

/* Sets the handle's message and returns rc, so a failing path is one line. */
int store__fail(store *s, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    return rc;
}

/* The message for a failed SQLite call. A timeout on the write lock gets its own sentence: it
 * is the one failure an operator can act on (another process holds the lock too long). So do
 * a full disk and an I/O error, with codes of their own: the request that meets one is worth
 * retrying, not a bug. SQLite says SQLITE_FULL for ENOSPC only; a quota (EDQUOT) comes as an
 * I/O error, which the system errno tells apart. */
int store__db_fail(store *s) {
    int code = sqlite3_errcode(s->db) & 0xff;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return store__fail(
            s, STORE_EDB,
            "the database is busy: another process held its write lock for more than "
            "%d ms",
            s->busy_ms);
    int sys = sqlite3_system_errno(s->db);
    if (code == SQLITE_FULL || (code == SQLITE_IOERR && fs_is_full(sys)))
        return store__fail(s, STORE_EFULL, "the disk is full: the database cannot grow (%s)",
                           sqlite3_errmsg(s->db));
    if (code == SQLITE_IOERR)
        return store__fail(s, STORE_EIO, "database I/O error: %s (extended code %d%s%s)",
                           sqlite3_errmsg(s->db), sqlite3_extended_errcode(s->db),
                           sys ? ", " : "", sys ? strerror(sys) : "");
    return store__fail(s, STORE_EDB, "database error: %s", sqlite3_errmsg(s->db));
}

const char *store_errmsg(const store *s) { return s ? s->msg : "no database handle"; }

/* ---- time and ids ---- */

int64_t store_now_ms(void) { return clock_wall_ms(); }

/* "2026-11-27T14:03:05.123Z" */
static json_t *iso_time(int64_t ms) {
    char buf[CLOCK_ISO_MAX];
    clock_iso_ms(ms, buf);
    return json_string(buf);
}

void store_new_id(char *out, const char *prefix) {
    uint8_t r[8];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            break;
        }
        got += (size_t)k;
    }
    if (got < sizeof r) {
        /* No getrandom (an old kernel or a seccomp filter): the id only has to be unique, and
         * time, pid and a counter make it so. */
        static uint64_t counter;
        uint64_t x = (uint64_t)store_now_ms() * 1000003u ^ (uint64_t)getpid() << 40 ^ ++counter;
        for (int i = 0; i < 8; i++) r[i] = (uint8_t)(x >> (8 * i));
    }
    static const char digits[] = "0123456789abcdef";
    size_t n = strlen(prefix);
    if (n > 15) n = 15; /* 15 + 16 + NUL = 32, the size store.h promises */
    memcpy(out, prefix, n);
    for (int i = 0; i < 8; i++) {
        out[n + 2 * i] = digits[r[i] >> 4];
        out[n + 2 * i + 1] = digits[r[i] & 15];
    }
    out[n + 16] = '\0';
}

/* ---- prepare, bind, step ---- */

/* The cached statement for sql, reset and with its bindings cleared. */
static sqlite3_stmt *prep(store *s, const char *sql) {
    for (int i = 0; i < s->ncache; i++)
        if (s->cache[i].sql == sql) {
            sqlite3_reset(s->cache[i].st);
            sqlite3_clear_bindings(s->cache[i].st);
            return s->cache[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        store__db_fail(s);
        return NULL;
    }
    if (s->ncache == s->capcache) {
        int cap = s->capcache ? 2 * s->capcache : 32;
        struct cached_stmt *c = realloc(s->cache, (size_t)cap * sizeof *c);
        if (!c) {
            sqlite3_finalize(st);
            store__fail(s, STORE_EDB, "out of memory");
            return NULL;
        }
        s->cache = c;
        s->capcache = cap;
    }
    s->cache[s->ncache++] = (struct cached_stmt){sql, st};
    return st;
}

/* Binds parameters 1..n from fmt, one letter each:
 *   s  const char * (NULL binds NULL)     i  int     I  int64_t
 *   j  json_t * (serialized; NULL binds NULL) */
static int bind_va(store *s, sqlite3_stmt *st, const char *fmt, va_list ap) {
    /* The arguments are not type-checked, so at least their count is. */
    if ((int)strlen(fmt) != sqlite3_bind_parameter_count(st))
        return store__fail(s, STORE_EDB,
                           "internal error: %d values for the %d parameters of: %.200s",
                           (int)strlen(fmt), sqlite3_bind_parameter_count(st), sqlite3_sql(st));
    for (int i = 0; fmt[i]; i++) {
        int rc, k = i + 1;
        switch (fmt[i]) {
        case 's': {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(st, k, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, k);
            break;
        }
        case 'i': rc = sqlite3_bind_int(st, k, va_arg(ap, int)); break;
        case 'I': rc = sqlite3_bind_int64(st, k, va_arg(ap, int64_t)); break;
        case 'j': {
            json_t *v = va_arg(ap, json_t *);
            char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            if (v && !text) return store__fail(s, STORE_EDB, "out of memory");
            rc = text ? sqlite3_bind_text(st, k, text, -1, free) : sqlite3_bind_null(st, k);
            break;
        }
        default: return store__fail(s, STORE_EDB, "internal error: bad bind letter '%c'", fmt[i]);
        }
        if (rc != SQLITE_OK) return store__db_fail(s);
    }
    return STORE_OK;
}

/* A prepared, bound statement ready to step, or NULL with the message set. The caller steps it
 * and must end with sqlite3_reset: a statement left mid-way holds its read snapshot open. */
sqlite3_stmt *store__query(store *s, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *st = prep(s, sql);
    if (!st) return NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    return rc ? NULL : st;
}

/* Runs a statement to its end (rows, if any, are ignored). */
int store__exec(store *s, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (step != SQLITE_DONE) {
        rc = store__db_fail(s);
        sqlite3_reset(st);
        return rc;
    }
    sqlite3_reset(st);
    return STORE_OK;
}

/* Runs a query and converts its first row with fn into *out (new reference).
 * STORE_ENOTFOUND (message not set: the caller knows what was missing) if there is none. */
int store__query_one(store *s, store__row_fn fn, json_t **out, const char *sql,
                     const char *fmt, ...) {
    *out = NULL;
    sqlite3_stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *out = fn(st);
    else if (step == SQLITE_DONE)
        rc = STORE_ENOTFOUND;
    else
        rc = store__db_fail(s);
    sqlite3_reset(st);
    if (!rc && !*out) rc = store__fail(s, STORE_EDB, "out of memory");
    return rc;
}

/* Runs a query and appends every row, converted with fn, to *out_array (a new array). */
int store__query_all(store *s, store__row_fn fn, json_t **out_array, const char *sql,
                     const char *fmt, ...) {
    *out_array = NULL;
    sqlite3_stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    json_t *arr = json_array();
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) json_array_append_new(arr, fn(st));
    if (step != SQLITE_DONE) {
        rc = store__db_fail(s);
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_reset(st);
    *out_array = arr;
    return rc;
}

/* ---- transactions ---- */

int store__tx_begin(store *s) { return store__exec(s, "BEGIN IMMEDIATE", ""); }

/* Ends the transaction begun by store__tx_begin: commits when commit is nonzero, else rolls back.
 * Returns rc, or STORE_EDB if the commit itself failed (the change is then rolled back). */
int store__tx_end(store *s, int rc, int commit) {
    if (commit) {
        int c = store__exec(s, "COMMIT", "");
        if (c == STORE_OK) return rc;
        rc = c;
    }
    /* Keep the message of whatever failed, not of the rollback. */
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int store__tx_end_out(store *s, int rc, json_t **out) {
    int committing = rc == STORE_OK;
    rc = store__tx_end(s, rc, committing);
    if (committing && rc != STORE_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- columns to JSON ---- */

json_t *store__col_str(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? json_string((const char *)t) : json_null();
}

/* A column holding serialized JSON; null if NULL (or, which we never write, not JSON). */
json_t *store__col_json(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    json_t *v = t ? json_loads((const char *)t, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

json_t *store__col_int(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                      : json_integer(sqlite3_column_int64(st, i));
}

json_t *store__col_json_0(sqlite3_stmt *st) { return store__col_json(st, 0); }

json_t *store__col_time(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                      : iso_time(sqlite3_column_int64(st, i));
}

/* Copies a text column into buf (n bytes); "" if NULL. */
void store__col_copy(sqlite3_stmt *st, int i, char *buf, size_t n) {
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, n, "%s", t ? (const char *)t : "");
}

/* ---- the schema ----
 * Migration i takes the database from user_version i to i + 1, in one transaction. A new
 * schema change is a new entry at the end; an entry already released never changes, since
 * databases in the field have run it. */
static const char *const migrations[] = {
    /* 1: models, datasets, jobs, artifacts, events. */
    "CREATE TABLE models ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  config TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE (owner, sha256));"
    "CREATE INDEX models_sha256 ON models (sha256);"

    "CREATE TABLE datasets ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('builtin', 'upload')),"
    "  sha256 TEXT,"
    "  bytes INTEGER NOT NULL DEFAULT 0,"
    "  summary TEXT,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX datasets_owner ON datasets (owner);"
    "CREATE INDEX datasets_sha256 ON datasets (sha256);"

    /* seq orders jobs (newest first in lists, oldest first to claim) and is the list cursor;
     * AUTOINCREMENT so a deleted newest job's number is never handed out again. model_id and
     * dataset_id are not foreign keys: an ended job keeps naming a model deleted since. */
    "CREATE TABLE jobs ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  model_id TEXT NOT NULL,"
    "  dataset_id TEXT NOT NULL,"
    "  spec TEXT,"
    "  state TEXT NOT NULL DEFAULT 'queued'"
    "    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),"
    "  stage TEXT,"
    "  progress TEXT,"
    "  metrics TEXT,"
    "  error TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts INTEGER NOT NULL,"
    "  idempotency_key TEXT,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  lease_worker TEXT,"
    "  lease_expires_ms INTEGER,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER,"
    "  finished_ms INTEGER);"
    "CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key)"
    "  WHERE idempotency_key IS NOT NULL;"
    "CREATE INDEX jobs_state ON jobs (state, seq);"
    "CREATE INDEX jobs_owner ON jobs (owner, seq);"
    "CREATE INDEX jobs_model ON jobs (model_id);"
    "CREATE INDEX jobs_dataset ON jobs (dataset_id);"

    "CREATE TABLE artifacts ("
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (job_id, name));"
    "CREATE INDEX artifacts_sha256 ON artifacts (sha256);"

    /* AUTOINCREMENT: event ids are SSE Last-Event-IDs and must never go backwards, even after
     * the newest events are deleted with their job. */
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE INDEX events_job ON events (job_id, id);",

    /* 2: API tokens (issue 5). Only the SHA-256 of a token is kept; id is the non-secret part
     * the token starts with, so a lookup finds one row and the hash is compared in constant
     * time. name is the owner: every row a token's requests create carries it, so tokens that
     * share a name (a rotation) share the data. */
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  admin INTEGER NOT NULL DEFAULT 0,"
    "  hash TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  revoked_ms INTEGER);"
    "CREATE INDEX tokens_name ON tokens (name);",

    /* 3: webhooks (issue 5). A job's webhook lives beside the job, not in its spec, so its
     * secret never shows in a job object. The outbox holds one row per event to deliver,
     * written in the transaction of the change it reports (a crash loses none), with the
     * payload as it will be sent (every retry sends the same bytes); each try is a row of
     * webhook_attempts. All of it goes with the job. */
    "CREATE TABLE job_webhooks ("
    "  job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  progress_every_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_progress_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE webhook_outbox ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  event_id TEXT NOT NULL UNIQUE,"
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  type TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (status IN ('pending', 'delivered', 'failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER);"
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_ms);"
    "CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id, id);"
    "CREATE TABLE webhook_attempts ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  outbox_id INTEGER NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  status_code INTEGER,"
    "  latency_ms INTEGER NOT NULL,"
    "  error TEXT);"
    "CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id, id);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int store_schema_version(void) { return N_MIGRATIONS; }

static int user_version(store *s, int *v) {
    sqlite3_stmt *st = store__query(s, "PRAGMA user_version", "");
    if (!st) return STORE_EDB;
    int rc = sqlite3_step(st) == SQLITE_ROW ? STORE_OK : store__db_fail(s);
    if (!rc) *v = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return rc;
}

static int refuse_newer(store *s, const char *path, int v) {
    return store__fail(
        s, STORE_EDB,
        "the database %s has schema version %d, newer than the version %d this build "
        "understands; run a newer gplqd (or restore a backup made before the upgrade)",
        path, v, N_MIGRATIONS);
}

/* Applies the missing migrations, each in its own transaction. The version is re-read under
 * the write lock, so two processes starting at once apply each step exactly once. */
static int migrate(store *s, const char *path) {
    for (;;) {
        int rc = store__tx_begin(s), v = 0;
        if (rc) return rc;
        if ((rc = user_version(s, &v))) return store__tx_end(s, rc, 0);
        if (v > N_MIGRATIONS) return store__tx_end(s, refuse_newer(s, path, v), 0);
        if (v == N_MIGRATIONS) return store__tx_end(s, STORE_OK, 1);
        char *emsg = NULL;
        if (sqlite3_exec(s->db, migrations[v], NULL, NULL, &emsg) != SQLITE_OK) {
            store__fail(s, STORE_EDB, "cannot upgrade the database %s to schema version %d: %s",
                        path, v + 1, emsg ? emsg : sqlite3_errmsg(s->db));
            sqlite3_free(emsg);
            return store__tx_end(s, STORE_EDB, 0);
        }
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(s->db, set, NULL, NULL, NULL) != SQLITE_OK)
            return store__tx_end(s, store__db_fail(s), 0);
        if ((rc = store__tx_end(s, STORE_OK, 1))) return rc;
    }
}

/* Connection settings, before any migration. */
static int configure(store *s, const char *path) {
    /* Off by default in SQLite, and what makes deleting a job delete its events and
     * artifacts. */
    int rc = store__exec(s, "PRAGMA foreign_keys = ON", "");
    if (rc) return rc;
    /* Refuse a newer schema before changing anything in the file. */
    int v = 0;
    if ((rc = user_version(s, &v))) return rc;
    if (v > N_MIGRATIONS) return refuse_newer(s, path, v);
    /* WAL: readers never block the writer and the writer never blocks readers, which is what
     * lets gplqd's HTTP threads read while workers write progress. The mode is stored in the
     * file, so this is a no-op after the first open. */
    sqlite3_stmt *st = store__query(s, "PRAGMA journal_mode = WAL", "");
    if (!st) return STORE_EDB;
    char mode[32] = "";
    if (sqlite3_step(st) == SQLITE_ROW) store__col_copy(st, 0, mode, sizeof mode);
    else rc = store__db_fail(s);
    sqlite3_reset(st);
    if (rc) return rc;
    if (strcmp(mode, "wal") != 0)
        return store__fail(
            s, STORE_EDB,
            "the database %s cannot use write-ahead logging (journal mode is '%s'); it "
            "needs a local file system",
            path, mode);
    /* NORMAL in WAL mode syncs at checkpoints, not at each commit: a committed transaction
     * survives any crash of the process (the WAL is in the OS's page cache) and the database
     * is never corrupted; only a power cut or OS crash can lose the last few commits, and
     * those leave an older consistent state (a job seen as running again, whose lease then
     * expires). FULL would fsync every progress heartbeat for no gain we need. */
    return store__exec(s, "PRAGMA synchronous = NORMAL", "");
}

int store_open(store **out, const char *path, int busy_ms, char *err, size_t errlen) {
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s) {
        if (errlen) snprintf(err, errlen, "out of memory");
        return STORE_EDB;
    }
    s->busy_ms = busy_ms > 0 ? busy_ms : 0;
    int rc = STORE_OK;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        store__fail(s, STORE_EDB, "cannot open the database %s: %s", path,
                    s->db ? sqlite3_errmsg(s->db) : "out of memory");
        rc = STORE_EDB;
    } else {
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, s->busy_ms);
        rc = configure(s, path);
        if (!rc) rc = migrate(s, path);
    }
    if (rc) {
        if (errlen) {
            /* A bare "database error: ..." from a helper gets the path, so the operator knows
             * which file. */
            if (!strncmp(s->msg, "database error:", 15))
                snprintf(err, errlen, "cannot open the database %s: %s", path, s->msg + 16);
            else
                snprintf(err, errlen, "%s", s->msg);
        }
        store_close(s);
        return rc;
    }
    *out = s;
    return STORE_OK;
}

int store__counts(store *s, const char *sql, json_t *c, json_t **out) {
    sqlite3_stmt *st = store__query(s, sql, "");
    if (!st) {
        json_decref(c);
        return STORE_EDB;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(c, (const char *)sqlite3_column_text(st, 0),
                            json_integer(sqlite3_column_int64(st, 1)));
    int rc = step == SQLITE_DONE ? STORE_OK : store__db_fail(s);
    sqlite3_reset(st);
    if (rc) json_decref(c);
    else *out = c;
    return rc;
}

void store_set_secret_key(store *s, const uint8_t *key) {
    memcpy(s->key, key, sizeof s->key);
    s->has_key = 1;
}

void store_close(store *s) {
    if (!s) return;
    for (int i = 0; i < s->ncache; i++) sqlite3_finalize(s->cache[i].st);
    free(s->cache);
    sqlite3_close(s->db);
    explicit_bzero(s->key, sizeof s->key);
    free(s);
}

