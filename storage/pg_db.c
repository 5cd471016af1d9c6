/*
 * pg_db.c: the PostgreSQL backend of the store (store_int.h's store__ops), for a cluster: several
 * gplqd nodes, each with its workers, on one database. libpq, text format both ways.
 *
 * Statements: the tables' files write parameters as ?N; prepare() rewrites them to $N and
 * counts them. A statement is prepared on the server (PQprepare) at its first run on a
 * connection, with its parameters typed by the bind letters (text, or int8 for integers), so
 * that "?2 IS NULL OR owner = ?2" needs no cast. A run fetches the whole result (PQexecPrepared)
 * and step() walks its rows.
 *
 * The write lock: SQLite's BEGIN IMMEDIATE serializes every writer of the database, and the
 * tables' files are written for that (a check and the write that depends on it see the same
 * state). Here the same lock is a transaction-scoped advisory lock, pg_advisory_xact_lock(K),
 * taken first in each writing transaction and let go at its end: writers stay serialized
 * across every node, at READ COMMITTED, and nothing in the tables' files has to know. The claim
 * alone takes K shared (pg_advisory_xact_lock_shared): claims run beside each other, each
 * locking the row it picks with SELECT ... FOR UPDATE SKIP LOCKED, while any other writer
 * (cancel, expire, progress) still excludes them all. The cost is one lock per write
 * transaction, which a cluster of a few nodes and tens of workers does not feel (the bench
 * measures it). lock_timeout is the busy timeout.
 *
 * Reconnection: when the server restarts, the call that meets the broken connection fails
 * (STORE_EDB, "lost the connection"); the next call resets it (PQreset), prepares its
 * statements again and listens on the same channels again. A transaction that the break cut
 * fails to its end, never finishing in autocommit on the new connection.
 *
 * Schema: migrations[] below, the same tables and version numbers as sqlite_db.c's, in this
 * dialect (BIGINT times, BIGSERIAL for AUTOINCREMENT, a rowid column where SQLite's implicit one
 * orders rows). The version is the one row of gplq_schema; migrations run under the advisory
 * lock, so nodes that start together apply each one once.
 */
#include "storage/store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

/* The advisory lock that plays SQLite's write lock: "gplq" in ASCII. */
#define PG_LOCK_KEY "1735420017"
#define PG_OID_TEXT 25
#define PG_OID_INT8 20
#define PG_MAX_CHANNELS 4

typedef struct {
    PGconn *conn;
    unsigned gen;    /* bumped at each reconnection: statements prepared before are gone */
    int in_tx;       /* inside store__tx_begin .. end */
    unsigned tx_gen; /* the connection the transaction began on */
    char sqlstate[6];
    int broken;      /* the last failure was a lost connection */
    char errtext[400];
    char channels[PG_MAX_CHANNELS][32];
    int nchannels;
    int stmt_counter;
} pg_be;

typedef struct {
    char name[24];
    char *text;   /* the statement with $N */
    int nparams;
    Oid *types;
    char **vals;  /* bound values (owned; NULL binds NULL) */
    unsigned gen; /* the connection generation it was prepared on; 0: never */
    PGresult *res;
    int row, nrows, ran;
} pg_stmt;

#define BE(s) ((pg_be *)(s)->be)
#define PST(st) ((pg_stmt *)(st)->impl)

/* ---- errors ---- */

/* Keeps the last failure of res (or of the connection) for pg_fail. */
static void note_error(store *s, const PGresult *res) {
    pg_be *b = BE(s);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(b->sqlstate, sizeof b->sqlstate, "%s", state ? state : "");
    b->broken = PQstatus(b->conn) == CONNECTION_BAD;
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!m || !*m) m = PQerrorMessage(b->conn);
    snprintf(b->errtext, sizeof b->errtext, "%s", m && *m ? m : "unknown error");
    size_t n = strlen(b->errtext);
    while (n && (b->errtext[n - 1] == '\n' || b->errtext[n - 1] == ' ')) b->errtext[--n] = '\0';
}

/* The codes that mean something to a caller: the lock wait that timed out (busy), a full disk
 * (53100 disk_full; 53xxx insufficient resources), an I/O error (58030), a lost connection. */
static int pg_fail(store *s) {
    pg_be *b = BE(s);
    if (b->broken)
        return store__fail(s, STORE_EDB,
                           "lost the connection to the database %s (%s); the next call "
                           "connects again",
                           s->target, b->errtext);
    if (!strcmp(b->sqlstate, "55P03"))
        return store__fail(
            s, STORE_EDB,
            "the database is busy: another process held its write lock for more than %d ms",
            s->busy_ms);
    if (!strcmp(b->sqlstate, "53100"))
        return store__fail(s, STORE_EFULL, "the disk is full: the database cannot grow (%s)",
                           b->errtext);
    if (!strcmp(b->sqlstate, "58030"))
        return store__fail(s, STORE_EIO, "database I/O error: %s", b->errtext);
    return store__fail(s, STORE_EDB, "database error: %s", b->errtext);
}

static int pg_unique_violation(store *s) { return !strcmp(BE(s)->sqlstate, "23505"); }

/* ---- the connection ---- */

static int relisten(store *s);

/* Makes sure the connection is up, resetting a broken one. Inside a transaction begun on an
 * earlier connection it fails: that transaction is gone. */
static int ensure_conn(store *s) {
    pg_be *b = BE(s);
    if (PQstatus(b->conn) == CONNECTION_BAD) {
        PQreset(b->conn);
        if (PQstatus(b->conn) != CONNECTION_OK) {
            note_error(s, NULL);
            b->broken = 1;
            return pg_fail(s);
        }
        b->gen++;
        if (relisten(s)) return STORE_EDB;
    }
    if (b->in_tx && b->tx_gen != b->gen) {
        b->broken = 1;
        snprintf(b->errtext, sizeof b->errtext, "the transaction was cut by a reconnection");
        return pg_fail(s);
    }
    return STORE_OK;
}

/* Runs text (no parameters, maybe several statements) with PQexec. */
static int simple(store *s, const char *text) {
    int rc = ensure_conn(s);
    if (rc) return rc;
    PGresult *res = PQexec(BE(s)->conn, text);
    ExecStatusType t = PQresultStatus(res);
    rc = STORE_OK;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        note_error(s, res);
        rc = pg_fail(s);
    }
    PQclear(res);
    return rc;
}

/* ---- statements ---- */

/* ?N -> $N, outside quoted text; *maxn: the largest N. */
static char *translate(const char *sql, int *maxn) {
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    int quoted = 0;
    *maxn = 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = sql[i];
        if (c == '\'') quoted = !quoted;
        if (c == '?' && !quoted && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            int k = atoi(sql + i + 1);
            if (k > *maxn) *maxn = k;
            out[j++] = '$';
            continue;
        }
        out[j++] = c;
    }
    out[j] = '\0';
    return out;
}

static int pg_prepare(store *s, store__stmt *st) {
    pg_stmt *p = calloc(1, sizeof *p);
    if (!p) return store__fail(s, STORE_EDB, "out of memory");
    p->text = translate(st->sql, &p->nparams);
    p->types = calloc((size_t)p->nparams + 1, sizeof *p->types);
    p->vals = calloc((size_t)p->nparams + 1, sizeof *p->vals);
    if (!p->text || !p->types || !p->vals) {
        free(p->text);
        free(p->types);
        free(p->vals);
        free(p);
        return store__fail(s, STORE_EDB, "out of memory");
    }
    snprintf(p->name, sizeof p->name, "g%d", ++BE(s)->stmt_counter);
    st->impl = p;
    return STORE_OK;
}

static void pg_reset(store__stmt *st) {
    pg_stmt *p = PST(st);
    PQclear(p->res);
    p->res = NULL;
    p->row = p->nrows = p->ran = 0;
    for (int i = 0; i < p->nparams; i++) {
        free(p->vals[i]);
        p->vals[i] = NULL;
    }
}

static void pg_finalize(store__stmt *st) {
    pg_stmt *p = PST(st);
    if (!p) return;
    pg_reset(st);
    /* The server's copy goes with the connection (or is replaced at a reconnection): no
     * DEALLOCATE round trip for each. */
    free(p->text);
    free(p->types);
    free(p->vals);
    free(p);
    st->impl = NULL;
}

static int pg_param_count(store__stmt *st) { return PST(st)->nparams; }

static int pg_bind_text(store__stmt *st, int k, const char *v) {
    pg_stmt *p = PST(st);
    p->types[k - 1] = PG_OID_TEXT;
    free(p->vals[k - 1]);
    p->vals[k - 1] = v ? strdup(v) : NULL;
    if (v && !p->vals[k - 1]) return store__fail(st->s, STORE_EDB, "out of memory");
    return STORE_OK;
}

static int pg_bind_int64(store__stmt *st, int k, int64_t v) {
    pg_stmt *p = PST(st);
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    p->types[k - 1] = PG_OID_INT8;
    free(p->vals[k - 1]);
    p->vals[k - 1] = strdup(buf);
    return p->vals[k - 1] ? STORE_OK : store__fail(st->s, STORE_EDB, "out of memory");
}

/* The first step runs the statement (preparing it on this connection first if need be). */
static int run(store__stmt *st) {
    store *s = st->s;
    pg_stmt *p = PST(st);
    pg_be *b = BE(s);
    int rc = ensure_conn(s);
    if (rc) return rc;
    if (p->gen != b->gen + 1) { /* gen + 1: 0 stays "never prepared" */
        PGresult *r = PQprepare(b->conn, p->name, p->text, p->nparams, p->types);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            note_error(s, r);
            PQclear(r);
            /* Prepared by an earlier handle of this name on this connection cannot happen:
             * names are per handle and the counter only grows. */
            return pg_fail(s);
        }
        PQclear(r);
        p->gen = b->gen + 1;
    }
    p->res = PQexecPrepared(b->conn, p->name, p->nparams, (const char *const *)p->vals, NULL,
                            NULL, 0);
    ExecStatusType t = PQresultStatus(p->res);
    if (t != PGRES_TUPLES_OK && t != PGRES_COMMAND_OK) {
        note_error(s, p->res);
        PQclear(p->res);
        p->res = NULL;
        return pg_fail(s);
    }
    p->nrows = PQntuples(p->res);
    p->row = -1;
    p->ran = 1;
    return STORE_OK;
}

static int pg_step(store__stmt *st) {
    pg_stmt *p = PST(st);
    if (!p->ran && run(st)) return STORE_EDB;
    if (p->row + 1 < p->nrows) {
        p->row++;
        return STORE__ROW;
    }
    p->row = p->nrows;
    return STORE__DONE;
}

static int pg_col_null(store__stmt *st, int i) {
    pg_stmt *p = PST(st);
    return PQgetisnull(p->res, p->row, i);
}

static const char *pg_col_text(store__stmt *st, int i) {
    pg_stmt *p = PST(st);
    return PQgetisnull(p->res, p->row, i) ? NULL : PQgetvalue(p->res, p->row, i);
}

static int64_t pg_col_int64(store__stmt *st, int i) {
    const char *t = pg_col_text(st, i);
    if (!t) return 0;
    if (!strcmp(t, "t")) return 1; /* a boolean (EXISTS ... OR EXISTS ...) */
    if (!strcmp(t, "f")) return 0;
    return strtoll(t, NULL, 10);
}

static double pg_col_double(store__stmt *st, int i) {
    const char *t = pg_col_text(st, i);
    return t ? strtod(t, NULL) : 0.0;
}

/* ---- transactions ---- */

static int pg_tx_begin(store *s, int shared) {
    pg_be *b = BE(s);
    int rc = ensure_conn(s);
    if (rc) return rc;
    b->in_tx = 1;
    b->tx_gen = b->gen;
    rc = simple(s, shared ? "BEGIN; SELECT pg_advisory_xact_lock_shared(" PG_LOCK_KEY ")"
                          : "BEGIN; SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ")");
    if (rc) {
        if (PQstatus(b->conn) == CONNECTION_OK && PQtransactionStatus(b->conn) != PQTRANS_IDLE) {
            PGresult *r = PQexec(b->conn, "ROLLBACK");
            PQclear(r);
        }
        b->in_tx = 0;
    }
    return rc;
}

static int pg_tx_commit(store *s) {
    pg_be *b = BE(s);
    int rc = ensure_conn(s); /* a transaction cut by a reconnection fails here */
    if (!rc) rc = simple(s, "COMMIT");
    if (!rc) b->in_tx = 0;
    return rc;
}

static void pg_tx_rollback(store *s) {
    pg_be *b = BE(s);
    b->in_tx = 0;
    if (PQstatus(b->conn) == CONNECTION_OK && PQtransactionStatus(b->conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(b->conn, "ROLLBACK");
        PQclear(r);
    }
}

/* ---- LISTEN / NOTIFY ---- */

static int listen_one(store *s, const char *channel) {
    char *id = PQescapeIdentifier(BE(s)->conn, channel, strlen(channel));
    if (!id) return store__fail(s, STORE_EDB, "out of memory");
    char text[96];
    snprintf(text, sizeof text, "LISTEN %s", id);
    PQfreemem(id);
    return simple(s, text);
}

static int relisten(store *s) {
    pg_be *b = BE(s);
    for (int i = 0; i < b->nchannels; i++)
        if (listen_one(s, b->channels[i])) return STORE_EDB;
    return STORE_OK;
}

static int pg_listen(store *s, const char *channel) {
    pg_be *b = BE(s);
    for (int i = 0; i < b->nchannels; i++)
        if (!strcmp(b->channels[i], channel)) return STORE_OK;
    if (b->nchannels == PG_MAX_CHANNELS || strlen(channel) >= sizeof b->channels[0])
        return store__fail(s, STORE_EINVAL, "cannot listen on channel %s", channel);
    int rc = listen_one(s, channel);
    if (!rc) snprintf(b->channels[b->nchannels++], sizeof b->channels[0], "%s", channel);
    return rc;
}

/* Delivered at the commit of the caller's transaction (or at once outside one); a transaction
 * that notifies one channel twice delivers once. */
static int pg_notify(store *s, const char *channel) {
    return store__exec(s, "SELECT pg_notify(?1, '')", "s", channel);
}

static int pg_wait_fd(store *s) { return PQsocket(BE(s)->conn); }

static int pg_drain(store *s) {
    pg_be *b = BE(s);
    if (PQstatus(b->conn) == CONNECTION_BAD || !PQconsumeInput(b->conn)) {
        /* The server went away: connect again (what was sent meanwhile is lost, so the caller
         * is told something may have happened). */
        ensure_conn(s);
        return 1;
    }
    int n = 0;
    PGnotify *nt;
    while ((nt = PQnotifies(b->conn))) {
        n++;
        PQfreemem(nt);
    }
    return n;
}

/* ---- the schema ---- */

static const char *const migrations[] = {
    /* 1: models, datasets, jobs, artifacts, events (sqlite_db.c's comments say why each). */
    "CREATE TABLE models ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  bytes BIGINT NOT NULL,"
    "  config TEXT,"
    "  created_ms BIGINT NOT NULL,"
    "  rowid BIGSERIAL,"
    "  UNIQUE (owner, sha256));"
    "CREATE INDEX models_sha256 ON models (sha256);"

    "CREATE TABLE datasets ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('builtin', 'upload')),"
    "  sha256 TEXT,"
    "  bytes BIGINT NOT NULL DEFAULT 0,"
    "  summary TEXT,"
    "  created_ms BIGINT NOT NULL,"
    "  rowid BIGSERIAL);"
    "CREATE INDEX datasets_owner ON datasets (owner);"
    "CREATE INDEX datasets_sha256 ON datasets (sha256);"

    "CREATE TABLE jobs ("
    "  seq BIGSERIAL PRIMARY KEY,"
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
    "  lease_expires_ms BIGINT,"
    "  created_ms BIGINT NOT NULL,"
    "  started_ms BIGINT,"
    "  finished_ms BIGINT);"
    "CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key)"
    "  WHERE idempotency_key IS NOT NULL;"
    "CREATE INDEX jobs_state ON jobs (state, seq);"
    "CREATE INDEX jobs_owner ON jobs (owner, seq);"
    "CREATE INDEX jobs_model ON jobs (model_id);"
    "CREATE INDEX jobs_dataset ON jobs (dataset_id);"

    "CREATE TABLE artifacts ("
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  bytes BIGINT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (job_id, name));"
    "CREATE INDEX artifacts_sha256 ON artifacts (sha256);"

    "CREATE TABLE events ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL);"
    "CREATE INDEX events_job ON events (job_id, id);",

    /* 2: API tokens. */
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  admin INTEGER NOT NULL DEFAULT 0,"
    "  hash TEXT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  revoked_ms BIGINT,"
    "  rowid BIGSERIAL);"
    "CREATE INDEX tokens_name ON tokens (name);",

    /* 3: webhooks. */
    "CREATE TABLE job_webhooks ("
    "  job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  progress_every_ms BIGINT NOT NULL DEFAULT 0,"
    "  last_progress_ms BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE webhook_outbox ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  event_id TEXT NOT NULL UNIQUE,"
    "  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  type TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (status IN ('pending', 'delivered', 'failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms BIGINT NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  finished_ms BIGINT);"
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_ms);"
    "CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id, id);"
    "CREATE TABLE webhook_attempts ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  outbox_id BIGINT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  started_ms BIGINT NOT NULL,"
    "  status_code INTEGER,"
    "  latency_ms BIGINT NOT NULL,"
    "  error TEXT);"
    "CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id, id);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))
_Static_assert(sizeof migrations / sizeof migrations[0] == STORE__SCHEMA_VERSION,
               "pg_db.c's migrations must reach STORE__SCHEMA_VERSION");

/* The version in gplq_schema (0 when the table is not there yet). */
static int schema_version(store *s, int *v) {
    *v = 0;
    PGresult *r = PQexec(BE(s)->conn, "SELECT version FROM gplq_schema");
    int rc = STORE_OK;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) > 0) *v = atoi(PQgetvalue(r, 0, 0));
    } else {
        note_error(s, r);
        /* 42P01 undefined_table: an empty database */
        if (strcmp(BE(s)->sqlstate, "42P01")) rc = pg_fail(s);
    }
    PQclear(r);
    return rc;
}

static int refuse_newer(store *s, int v) {
    return store__fail(
        s, STORE_EDB,
        "the database %s has schema version %d, newer than the version %d this build "
        "understands; run a newer gplqd on every node (or restore a backup made before the "
        "upgrade)",
        s->target, v, N_MIGRATIONS);
}

/* Applies the missing migrations in one transaction under the write lock, which also orders
 * two nodes starting at once (the second finds the work done). */
static int migrate(store *s, int do_migrate, int *from) {
    int rc = pg_tx_begin(s, 0), v = 0;
    if (rc) return rc;
    rc = simple(s, "CREATE TABLE IF NOT EXISTS gplq_schema (version INTEGER NOT NULL)");
    if (!rc) rc = schema_version(s, &v);
    if (from) *from = v;
    if (!rc && v > N_MIGRATIONS) rc = refuse_newer(s, v);
    if (rc || v == N_MIGRATIONS || !do_migrate) {
        pg_tx_rollback(s);
        return rc;
    }
    if (v == 0) rc = simple(s, "INSERT INTO gplq_schema (version) VALUES (0)");
    for (; !rc && v < N_MIGRATIONS; v++) {
        rc = simple(s, migrations[v]);
        if (rc) {
            char m[sizeof s->msg];
            snprintf(m, sizeof m, "%s", s->msg);
            rc = store__fail(s, STORE_EDB, "cannot upgrade the database %s to schema version %d: %s",
                             s->target, v + 1, m);
            break;
        }
        char set[64];
        snprintf(set, sizeof set, "UPDATE gplq_schema SET version = %d", v + 1);
        rc = simple(s, set);
    }
    if (rc) {
        pg_tx_rollback(s);
        return rc;
    }
    return pg_tx_commit(s);
}

static int pg_open(store *s, const char *url, int do_migrate, int *from) {
    pg_be *b = calloc(1, sizeof *b);
    if (!b) return store__fail(s, STORE_EDB, "out of memory");
    s->be = b;
    b->conn = PQconnectdb(url);
    if (!b->conn) return store__fail(s, STORE_EDB, "out of memory");
    if (PQstatus(b->conn) != CONNECTION_OK) {
        char m[400];
        snprintf(m, sizeof m, "%s", PQerrorMessage(b->conn));
        size_t n = strlen(m);
        while (n && m[n - 1] == '\n') m[--n] = '\0';
        return store__fail(s, STORE_EDB, "cannot connect to the database %s: %s", s->target, m);
    }
    /* Session settings: our errors in English-independent codes need nothing, but the busy
     * timeout is SQLite's busy_ms, and the notices of CREATE ... IF NOT EXISTS are noise. */
    char set[160];
    snprintf(set, sizeof set,
             "SET lock_timeout = %d; SET client_min_messages = warning; SET TIME ZONE 'UTC'",
             s->busy_ms);
    int rc = simple(s, set);
    if (!rc) rc = migrate(s, do_migrate, from);
    return rc;
}

static void pg_close(store *s) {
    pg_be *b = BE(s);
    if (!b) return;
    PQfinish(b->conn);
    free(b);
    s->be = NULL;
}

const store__ops store__pg_ops = {
    .name = "postgresql",
    .dialect = STORE__DIALECT_PG,
    .open = pg_open,
    .close = pg_close,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .param_count = pg_param_count,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .step = pg_step,
    .col_null = pg_col_null,
    .col_text = pg_col_text,
    .col_int64 = pg_col_int64,
    .col_double = pg_col_double,
    .tx_begin = pg_tx_begin,
    .tx_commit = pg_tx_commit,
    .tx_rollback = pg_tx_rollback,
    .fail = pg_fail,
    .unique_violation = pg_unique_violation,
    .notify = pg_notify,
    .listen = pg_listen,
    .wait_fd = pg_wait_fd,
    .drain = pg_drain,
};
