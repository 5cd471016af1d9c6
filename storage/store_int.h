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
 * Naming: every name here starts with store__ (two underscores, libuv's uv__ habit), so that an
 * internal helper is never mistaken for part of store.h's contract. They are ordinary (not
 * static) functions: one definition, linked into each file that calls them.
 *
 * The files: store.c (the handle, these helpers, the schema and its migrations), uploads.c
 * (models, datasets, their blobs, per-owner usage), jobs.c (jobs, and the worker's side:
 * claims, leases, progress), artifacts.c, events.c (events, the webhook outbox and its
 * deliveries), tokens.c.
 */
#ifndef GPLQ_STORE_INT_H
#define GPLQ_STORE_INT_H

#include <sqlite3.h>

#include "storage/store.h"
#include "util/secretbox.h"

struct store {
    sqlite3 *db;
    int busy_ms;
    char msg[512];
    /* Prepared statements, keyed by the address of their (static) SQL text: each statement is
     * compiled once per connection. */
    struct cached_stmt {
        const char *sql;
        sqlite3_stmt *st;
    } *cache;
    int ncache, capcache;
    /* The key webhook secrets are sealed under (store_set_secret_key); has_key 0: none given. */
    uint8_t key[SECRETBOX_KEY_BYTES];
    int has_key;
};

/* ---- counts ----
 * Runs sql, a "SELECT key, COUNT(*) ... GROUP BY key", into c (owned: given to *out on success,
 * freed on failure), whose keys start at 0 so that an empty group still shows. */
int store__counts(store *s, const char *sql, json_t *c, json_t **out);

/* ---- errors ---- */

/* Sets the handle's message (printf-style) and returns rc, so a failing path is one line. */
int store__fail(store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets the message for a failed SQLite call and returns STORE_EDB. */
int store__db_fail(store *s);

/* ---- prepare, bind, step ----
 * sql is a string constant: the statement cache is keyed by its address. fmt binds
 * parameters 1..n, one letter each: s const char * (NULL binds NULL), i int, I int64_t,
 * j json_t * (serialized; NULL binds NULL). */

/* A prepared, bound statement ready to step (borrowed: it stays in the handle's cache), or NULL
 * with the message set. The caller steps it and must end with sqlite3_reset. */
sqlite3_stmt *store__query(store *s, const char *sql, const char *fmt, ...);
/* Runs a statement to its end (rows, if any, are ignored). */
int store__exec(store *s, const char *sql, const char *fmt, ...);

/* Converts the current row of a statement to a new JSON value. */
typedef json_t *(*store__row_fn)(sqlite3_stmt *st);
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
/* Ends the transaction: commits when commit is nonzero, else rolls back. Returns rc, or
 * STORE_EDB if the commit itself failed. */
int store__tx_end(store *s, int rc, int commit);
/* store__tx_end(s, rc, rc == STORE_OK) for a function that set *out (a new reference) inside
 * the transaction: when the commit itself fails (a full disk) nothing was written, so *out is
 * released and NULL, as for any other failure. */
int store__tx_end_out(store *s, int rc, json_t **out);

/* ---- columns to JSON (new references; a NULL column is JSON null) ---- */

json_t *store__col_str(sqlite3_stmt *st, int i);
json_t *store__col_json(sqlite3_stmt *st, int i); /* a column holding serialized JSON */
json_t *store__col_int(sqlite3_stmt *st, int i);
json_t *store__col_json_0(sqlite3_stmt *st);      /* store__col_json of column 0: a row_fn */
json_t *store__col_time(sqlite3_stmt *st, int i); /* Unix ms as an ISO-8601 string */
/* Copies a text column into buf (n bytes); "" if NULL. */
void store__col_copy(sqlite3_stmt *st, int i, char *buf, size_t n);

/* ---- SQL fragments that several files' statements use ---- */

#define MODEL_COLS "id, name, sha256, bytes, config, created_ms"
/* The owner filter of every read: parameter ?2 is the owner, NULL for the admin. */
#define OWNED "(?2 IS NULL OR owner = ?2)"

#define DATASET_COLS "id, name, kind, sha256, bytes, summary, created_ms"
/* Built-in datasets belong to everyone. */
#define DATASET_VISIBLE "(?2 IS NULL OR owner = ?2 OR kind = 'builtin')"

/* ---- what one table's file uses of another's ---- */

/* uploads.c: a row of MODEL_COLS, of DATASET_COLS, as the API shows it. */
json_t *store__model_row(sqlite3_stmt *st);
json_t *store__dataset_row(sqlite3_stmt *st);

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
