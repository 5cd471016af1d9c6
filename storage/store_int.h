/*
 * store_int.h: what the files of storage/ share with each other and with nobody else. Internal:
 * only storage/'s own .c files include it; every caller outside storage/ includes
 * storage/store.h, the one interface of the database.
 *
 * It holds the handle's layout, the "prepare, bind, step" helpers every statement goes through,
 * the transaction and column helpers, the SQL fragments that the statements of several tables
 * repeat, and the few functions one table's file calls in another's (every state change of a
 * job writes an event and, maybe, a webhook delivery). The functions are defined in store.c
 * unless said otherwise.
 *
 * Two backends, one set of statements. The tables' files (jobs.c, events.c, ...) hold every
 * statement once, written in the SQL that SQLite and PostgreSQL share: parameters as ?N (the
 * PostgreSQL backend rewrites them to $N when it prepares a statement; its tables have a rowid
 * column where SQLite's implicit one orders rows), and where the two dialects differ, both
 * texts side by side through STORE__SQL(s, sqlite, pg) (a JSON function, GREATEST for MAX). The backend itself (connection, schema and migrations,
 * transactions, prepare/bind/step, column access, the mapping of its errors to STORE_E*) is
 * one store__ops table per dialect: storage/sqlite_db.c and storage/pg_db.c, beside each other,
 * each with its own list of migrations to the same schema version.
 *
 * Naming: every name here starts with store__ (two underscores, libuv's uv__ habit), so that an
 * internal helper is never mistaken for part of store.h's contract. They are ordinary (not
 * static) functions: one definition, linked into each file that calls them.
 *
 * The files: store.c (the handle, these helpers, store_open choosing the backend), sqlite_db.c
 * and pg_db.c (the backends), uploads.c (models, datasets, their blobs, per-owner usage),
 * jobs.c (jobs, and the worker's side: claims, leases, progress), artifacts.c, events.c
 * (events, the webhook outbox and its deliveries), tokens.c.
 */
#ifndef GPLQ_STORE_INT_H
#define GPLQ_STORE_INT_H

#include <stdarg.h>

#include "storage/store.h"
#include "util/secretbox.h"

/* The schema version both backends' migration lists reach (each file checks its list's length
 * against it at compile time). */
#define STORE__SCHEMA_VERSION 3

/* What store__step returns: a row is ready, or the statement has run to its end; anything else
 * is a failure whose message store__db_fail sets. */
#define STORE__ROW 100
#define STORE__DONE 101

/* A prepared statement of either backend: borrowed from the handle's cache, keyed by the
 * address of its (static) SQL text. impl is the backend's own (sqlite3_stmt *, or the PostgreSQL
 * backend's statement: name, bound values, result and row). */
typedef struct store__stmt {
    store *s;
    const char *sql;
    void *impl;
} store__stmt;

enum { STORE__DIALECT_SQLITE, STORE__DIALECT_PG };

/* One backend. Every function sets the handle's message on failure (store__db_fail, from the
 * backend's last error). */
typedef struct store__ops {
    const char *name; /* "sqlite", "postgresql" */
    int dialect;
    /* Connects to target (a file path, a postgresql:// URL), migrates when migrate is nonzero,
     * and always refuses a schema newer than STORE__SCHEMA_VERSION. *from (may be NULL): the
     * version found before migrating. STORE_OK, or a code with the message set. */
    int (*open)(store *s, const char *target, int migrate, int *from);
    void (*close)(store *s);
    /* Compiles st->sql into st->impl. */
    int (*prepare)(store *s, store__stmt *st);
    void (*finalize)(store__stmt *st);
    /* Forgets the previous run's rows and values. */
    void (*reset)(store__stmt *st);
    /* The number of ?N parameters the statement has. */
    int (*param_count)(store__stmt *st);
    /* Binds parameter k (1-based): NULL text binds NULL. */
    int (*bind_text)(store__stmt *st, int k, const char *v);
    int (*bind_int64)(store__stmt *st, int k, int64_t v);
    /* STORE__ROW, STORE__DONE or a failure (see store__db_fail). */
    int (*step)(store__stmt *st);
    int (*col_null)(store__stmt *st, int i);
    const char *(*col_text)(store__stmt *st, int i); /* NULL for a NULL column */
    int64_t (*col_int64)(store__stmt *st, int i);    /* a boolean column: 1 or 0 */
    double (*col_double)(store__stmt *st, int i);
    /* Transactions: shared is 0 for every writer (the database-wide write lock, as SQLite's
     * BEGIN IMMEDIATE takes it) and 1 for a claim (store_job_claim), which PostgreSQL lets run
     * beside other claims: they pick their rows with FOR UPDATE SKIP LOCKED. */
    int (*tx_begin)(store *s, int shared);
    int (*tx_commit)(store *s);
    void (*tx_rollback)(store *s); /* keeps the message of what failed */
    /* The message and code for the last failed call; returns the STORE_E* code. */
    int (*fail)(store *s);
    /* 1 if the last failure was a unique or primary key conflict. */
    int (*unique_violation)(store *s);
    /* Cluster wake-ups (PostgreSQL's LISTEN/NOTIFY; NULL for SQLite: one machine). */
    int (*notify)(store *s, const char *channel);
    int (*listen)(store *s, const char *channel);
    int (*wait_fd)(store *s);
    int (*drain)(store *s);
} store__ops;

extern const store__ops store__sqlite_ops;
extern const store__ops store__pg_ops;

struct store {
    const store__ops *ops;
    void *db; /* sqlite3 * or PGconn * */
    int busy_ms;
    char msg[512];
    char target[512]; /* the file or URL, for messages (a URL without its password) */
    /* Prepared statements, keyed by the address of their (static) SQL text: each statement is
     * compiled once per connection. */
    struct cached_stmt {
        const char *sql;
        store__stmt *st;
    } *cache;
    int ncache, capcache;
    /* The key webhook secrets are sealed under (store_set_secret_key); has_key 0: none given. */
    uint8_t key[SECRETBOX_KEY_BYTES];
    int has_key;
    void *be; /* the backend's own state */
};

/* The text for this handle's dialect: the same statement written for SQLite and PostgreSQL
 * where the two differ. Both are string constants, so either is a stable cache key. */
#define STORE__SQL(s, sqlite_text, pg_text) \
    ((s)->ops->dialect == STORE__DIALECT_PG ? (pg_text) : (sqlite_text))

/* Drops every cached statement (at store_close). */
void store__cache_clear(store *s);

/* ---- stepping a statement and reading its columns (the backend's, through s->ops) ---- */

int store__step(store__stmt *st);
/* Ends a run of the statement: rows not read are dropped. Every store__query ends with it. */
void store__reset(store__stmt *st);
int store__col_null(store__stmt *st, int i);
const char *store__col_text(store__stmt *st, int i);
int64_t store__col_int64(store__stmt *st, int i);
double store__col_double(store__stmt *st, int i);

/* ---- counts ----
 * Runs sql, a "SELECT key, COUNT(*) ... GROUP BY key", into c (owned: given to *out on success,
 * freed on failure), whose keys start at 0 so that an empty group still shows. */
int store__counts(store *s, const char *sql, json_t *c, json_t **out);

/* ---- errors ---- */

/* Sets the handle's message (printf-style) and returns rc, so a failing path is one line. */
int store__fail(store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets the message for the backend's last failed call and returns its STORE_E* code. */
int store__db_fail(store *s);

/* ---- prepare, bind, step ----
 * sql is a string constant: the statement cache is keyed by its address. fmt binds
 * parameters 1..n, one letter each: s const char * (NULL binds NULL), i int, I int64_t,
 * j json_t * (serialized; NULL binds NULL). */

/* A prepared, bound statement ready to step (borrowed: it stays in the handle's cache), or NULL
 * with the message set. The caller steps it and must end with store__reset. */
store__stmt *store__query(store *s, const char *sql, const char *fmt, ...);
/* Runs a statement to its end (rows, if any, are ignored). */
int store__exec(store *s, const char *sql, const char *fmt, ...);

/* Converts the current row of a statement to a new JSON value. */
typedef json_t *(*store__row_fn)(store__stmt *st);
/* The first row, converted with fn, into *out (new reference); STORE_ENOTFOUND, with the
 * message not set, if there is none. */
int store__query_one(store *s, store__row_fn fn, json_t **out, const char *sql,
                     const char *fmt, ...);
/* Every row, converted with fn, into *out_array (a new array). */
int store__query_all(store *s, store__row_fn fn, json_t **out_array, const char *sql,
                     const char *fmt, ...);

/* ---- transactions ---- */

/* BEGIN IMMEDIATE: the write lock up front (store.c's header comment says why). */
int store__tx_begin(store *s);
/* The claim's transaction: the write lock shared with other claims only (see store__ops). */
int store__tx_begin_claim(store *s);
/* Ends the transaction: commits when commit is nonzero, else rolls back. Returns rc, or
 * STORE_EDB if the commit itself failed. */
int store__tx_end(store *s, int rc, int commit);
/* store__tx_end(s, rc, rc == STORE_OK) for a function that set *out (a new reference) inside
 * the transaction: when the commit itself fails (a full disk) nothing was written, so *out is
 * released and NULL, as for any other failure. */
int store__tx_end_out(store *s, int rc, json_t **out);

/* ---- columns to JSON (new references; a NULL column is JSON null) ---- */

json_t *store__col_str(store__stmt *st, int i);
json_t *store__col_json(store__stmt *st, int i); /* a column holding serialized JSON */
json_t *store__col_int(store__stmt *st, int i);
json_t *store__col_json_0(store__stmt *st);      /* store__col_json of column 0: a row_fn */
json_t *store__col_time(store__stmt *st, int i); /* Unix ms as an ISO-8601 string */
/* Copies a text column into buf (n bytes); "" if NULL. */
void store__col_copy(store__stmt *st, int i, char *buf, size_t n);

/* ---- SQL fragments that several files' statements use ---- */

#define MODEL_COLS "id, name, sha256, bytes, config, created_ms"
/* The owner filter of every read: parameter ?2 is the owner, NULL for the admin. */
#define OWNED "(?2 IS NULL OR owner = ?2)"

#define DATASET_COLS "id, name, kind, sha256, bytes, summary, created_ms"
/* Built-in datasets belong to everyone. */
#define DATASET_VISIBLE "(?2 IS NULL OR owner = ?2 OR kind = 'builtin')"

/* ---- what one table's file uses of another's ---- */

/* uploads.c: a row of MODEL_COLS, of DATASET_COLS, as the API shows it. */
json_t *store__model_row(store__stmt *st);
json_t *store__dataset_row(store__stmt *st);

/* jobs.c: job id as owner (NULL: any) sees it, into *out (new); STORE_ENOTFOUND with the
 * message. */
int store__job_fetch(store *s, const char *owner, const char *id, json_t **out);
/* jobs.c: STORE_OK if job id exists and owner may see it, else STORE_ENOTFOUND with the
 * message. */
int store__job_visible(store *s, const char *owner, const char *id);

/* events.c, inside the caller's transaction. An event of the job; data is stolen. */
int store__event_add(store *s, const char *job_id, const char *type, json_t *data);
/* A webhook event of type for the job, if it has a webhook, with job (borrowed) as it is now. */
int store__webhook_enqueue(store *s, const char *job_id, const char *type, json_t *job);
/* After a change of the job's state: the "state" event, and the webhook event of a job that
 * starts or ends. */
int store__state_event(store *s, const char *job_id, const char *state, const char *stage,
                       const char *error);

#endif
