/*
 * sqlite_db.c: the SQLite backend of the store (store_int.h's store__ops): one database file
 * under the data dir, in WAL mode, shared by the processes of one machine (gplqd's threads and
 * its workers). The schema is migrations[] below, its version PRAGMA user_version; pg_db.c
 * holds the same schema in PostgreSQL's dialect. The only SQL text built at run time is
 * `PRAGMA user_version = <our own integer>`, because PRAGMA cannot take a parameter.
 *
 * Transactions are BEGIN IMMEDIATE, which takes the database's write lock up front (waiting up
 * to the busy timeout). Taking it late, in a deferred transaction, could fail with SQLITE_BUSY
 * when upgrading a read snapshot that another writer made stale. A claim takes the same lock:
 * SQLite has no lock finer than the database's.
 */
#include "storage/store_int.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

#define DB(s) ((sqlite3 *)(s)->db)
#define ST(st) ((sqlite3_stmt *)(st)->impl)

/* ---- errors ---- */

/* A timeout on the write lock gets its own sentence: it is the one failure an operator can act
 * on (another process holds the lock too long). So do a full disk and an I/O error, with codes
 * of their own: the request that meets one is worth retrying, not a bug. SQLite says
 * SQLITE_FULL for ENOSPC only; a quota (EDQUOT) comes as an I/O error, which the system errno
 * tells apart. */
static int sq_fail(store *s) {
    int code = sqlite3_errcode(DB(s)) & 0xff;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        return store__fail(
            s, STORE_EDB,
            "the database is busy: another process held its write lock for more than "
            "%d ms",
            s->busy_ms);
    int sys = sqlite3_system_errno(DB(s));
    if (code == SQLITE_FULL || (code == SQLITE_IOERR && fs_is_full(sys)))
        return store__fail(s, STORE_EFULL, "the disk is full: the database cannot grow (%s)",
                           sqlite3_errmsg(DB(s)));
    if (code == SQLITE_IOERR)
        return store__fail(s, STORE_EIO, "database I/O error: %s (extended code %d%s%s)",
                           sqlite3_errmsg(DB(s)), sqlite3_extended_errcode(DB(s)),
                           sys ? ", " : "", sys ? strerror(sys) : "");
    return store__fail(s, STORE_EDB, "database error: %s", sqlite3_errmsg(DB(s)));
}

static int sq_unique_violation(store *s) {
    int x = sqlite3_extended_errcode(DB(s));
    return x == SQLITE_CONSTRAINT_PRIMARYKEY || x == SQLITE_CONSTRAINT_UNIQUE;
}

/* ---- statements ---- */

static int sq_prepare(store *s, store__stmt *st) {
    sqlite3_stmt *x = NULL;
    if (sqlite3_prepare_v3(DB(s), st->sql, -1, SQLITE_PREPARE_PERSISTENT, &x, NULL) != SQLITE_OK)
        return sq_fail(s);
    st->impl = x;
    return STORE_OK;
}

static void sq_finalize(store__stmt *st) { sqlite3_finalize(ST(st)); }

static void sq_reset(store__stmt *st) {
    sqlite3_reset(ST(st));
    sqlite3_clear_bindings(ST(st));
}

static int sq_param_count(store__stmt *st) { return sqlite3_bind_parameter_count(ST(st)); }

static int sq_bind_text(store__stmt *st, int k, const char *v) {
    int rc = v ? sqlite3_bind_text(ST(st), k, v, -1, SQLITE_TRANSIENT)
               : sqlite3_bind_null(ST(st), k);
    return rc == SQLITE_OK ? STORE_OK : sq_fail(st->s);
}

static int sq_bind_int64(store__stmt *st, int k, int64_t v) {
    return sqlite3_bind_int64(ST(st), k, v) == SQLITE_OK ? STORE_OK : sq_fail(st->s);
}

static int sq_step(store__stmt *st) {
    int rc = sqlite3_step(ST(st));
    return rc == SQLITE_ROW ? STORE__ROW : rc == SQLITE_DONE ? STORE__DONE : rc;
}

static int sq_col_null(store__stmt *st, int i) {
    return sqlite3_column_type(ST(st), i) == SQLITE_NULL;
}

static const char *sq_col_text(store__stmt *st, int i) {
    return (const char *)sqlite3_column_text(ST(st), i);
}

static int64_t sq_col_int64(store__stmt *st, int i) { return sqlite3_column_int64(ST(st), i); }

static double sq_col_double(store__stmt *st, int i) { return sqlite3_column_double(ST(st), i); }

/* ---- transactions ---- */

static int sq_tx_begin(store *s, int shared) {
    (void)shared;
    return store__exec(s, "BEGIN IMMEDIATE", "");
}

static int sq_tx_commit(store *s) { return store__exec(s, "COMMIT", ""); }

static void sq_tx_rollback(store *s) {
    if (!sqlite3_get_autocommit(DB(s))) sqlite3_exec(DB(s), "ROLLBACK", NULL, NULL, NULL);
}

/* ---- the schema ----
 * Migration i takes the database from user_version i to i + 1, in one transaction. A new
 * schema change is a new entry at the end (and the same change in pg_db.c's list); an entry
 * already released never changes, since databases in the field have run it. */
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
_Static_assert(sizeof migrations / sizeof migrations[0] == STORE__SCHEMA_VERSION,
               "sqlite_db.c's migrations must reach STORE__SCHEMA_VERSION");

static int user_version(store *s, int *v) {
    store__stmt *st = store__query(s, "PRAGMA user_version", "");
    if (!st) return STORE_EDB;
    int rc = store__step(st) == STORE__ROW ? STORE_OK : sq_fail(s);
    if (!rc) *v = (int)store__col_int64(st, 0);
    store__reset(st);
    return rc;
}

static int refuse_newer(store *s, int v) {
    return store__fail(
        s, STORE_EDB,
        "the database %s has schema version %d, newer than the version %d this build "
        "understands; run a newer gplqd (or restore a backup made before the upgrade)",
        s->target, v, N_MIGRATIONS);
}

/* Applies the missing migrations, each in its own transaction. The version is re-read under
 * the write lock, so two processes starting at once apply each step exactly once. */
static int migrate(store *s) {
    for (;;) {
        int rc = store__tx_begin(s), v = 0;
        if (rc) return rc;
        if ((rc = user_version(s, &v))) return store__tx_end(s, rc, 0);
        if (v > N_MIGRATIONS) return store__tx_end(s, refuse_newer(s, v), 0);
        if (v == N_MIGRATIONS) return store__tx_end(s, STORE_OK, 1);
        char *emsg = NULL;
        if (sqlite3_exec(DB(s), migrations[v], NULL, NULL, &emsg) != SQLITE_OK) {
            store__fail(s, STORE_EDB, "cannot upgrade the database %s to schema version %d: %s",
                        s->target, v + 1, emsg ? emsg : sqlite3_errmsg(DB(s)));
            sqlite3_free(emsg);
            return store__tx_end(s, STORE_EDB, 0);
        }
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(DB(s), set, NULL, NULL, NULL) != SQLITE_OK)
            return store__tx_end(s, sq_fail(s), 0);
        if ((rc = store__tx_end(s, STORE_OK, 1))) return rc;
    }
}

/* Connection settings, before any migration. *from: the version found. */
static int configure(store *s, int *from) {
    /* Off by default in SQLite, and what makes deleting a job delete its events and
     * artifacts. */
    int rc = store__exec(s, "PRAGMA foreign_keys = ON", "");
    if (rc) return rc;
    /* Refuse a newer schema before changing anything in the file. */
    int v = 0;
    if ((rc = user_version(s, &v))) return rc;
    if (from) *from = v;
    if (v > N_MIGRATIONS) return refuse_newer(s, v);
    /* WAL: readers never block the writer and the writer never blocks readers, which is what
     * lets gplqd's HTTP threads read while workers write progress. The mode is stored in the
     * file, so this is a no-op after the first open. */
    store__stmt *st = store__query(s, "PRAGMA journal_mode = WAL", "");
    if (!st) return STORE_EDB;
    char mode[32] = "";
    if (store__step(st) == STORE__ROW) store__col_copy(st, 0, mode, sizeof mode);
    else rc = sq_fail(s);
    store__reset(st);
    if (rc) return rc;
    if (strcmp(mode, "wal") != 0)
        return store__fail(
            s, STORE_EDB,
            "the database %s cannot use write-ahead logging (journal mode is '%s'); it "
            "needs a local file system",
            s->target, mode);
    /* NORMAL in WAL mode syncs at checkpoints, not at each commit: a committed transaction
     * survives any crash of the process (the WAL is in the OS's page cache) and the database
     * is never corrupted; only a power cut or OS crash can lose the last few commits, and
     * those leave an older consistent state (a job seen as running again, whose lease then
     * expires). FULL would fsync every progress heartbeat for no gain we need. */
    return store__exec(s, "PRAGMA synchronous = NORMAL", "");
}

/* SQLite's process-wide settings, made before its first use. Its allocator keeps statistics
 * we never read, under one mutex every connection takes at each allocation: gplqd's HTTP
 * threads contended on it (a GET is two queries). Where SQLite was initialized already (a
 * program that used it before the store), this fails and changes nothing. */
static void sq_configure_once(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

static int sq_open(store *s, const char *path, int do_migrate, int *from) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sq_configure_once);
    sqlite3 *db = NULL;
    /* NOMUTEX: a handle is never used by two threads at once (store.h), so SQLite need not
     * lock each connection at every call. */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        store__fail(s, STORE_EDB, "cannot open the database %s: %s", path,
                    db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return STORE_EDB;
    }
    s->db = db;
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, s->busy_ms);
    int rc = configure(s, from);
    if (!rc && do_migrate) rc = migrate(s);
    return rc;
}

static void sq_close(store *s) {
    sqlite3_close(DB(s));
    s->db = NULL;
}

const store__ops store__sqlite_ops = {
    .name = "sqlite",
    .dialect = STORE__DIALECT_SQLITE,
    .open = sq_open,
    .close = sq_close,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .param_count = sq_param_count,
    .bind_text = sq_bind_text,
    .bind_int64 = sq_bind_int64,
    .step = sq_step,
    .col_null = sq_col_null,
    .col_text = sq_col_text,
    .col_int64 = sq_col_int64,
    .col_double = sq_col_double,
    .tx_begin = sq_tx_begin,
    .tx_commit = sq_tx_commit,
    .tx_rollback = sq_tx_rollback,
    .fail = sq_fail,
    .unique_violation = sq_unique_violation,
};
