/*
 * store.c: gplqd's durable state (see store.h for the contract): the handle, store_open choosing
 * the backend, and the helpers every statement goes through, whichever backend runs it.
 *
 * storage/ holds every SQL statement of the project, one file per group of tables, each
 * statement's text next to the function that runs it: uploads.c (models, datasets), jobs.c,
 * artifacts.c, events.c (events, webhook deliveries), tokens.c. They share what
 * storage/store_int.h declares. The two backends, SQLite (sqlite_db.c: one file under the data
 * dir, one machine) and PostgreSQL (pg_db.c: one database for a cluster of gplqd nodes), each
 * hold their connection, schema migrations, transactions and error mapping behind one
 * store__ops table. Layout of this file: errors, time and ids, "prepare, bind, step",
 * transactions, columns, then store_open. Every statement takes its values as bound
 * parameters.
 *
 * Concurrency: several processes (gplqd's threads, each worker, on one machine or several)
 * write the same database. Every write that reads before it writes runs inside
 * store__tx_begin, which takes the database's write lock up front (SQLite: BEGIN IMMEDIATE;
 * PostgreSQL: a transaction-scoped advisory lock, see pg_db.c), waiting up to the busy
 * timeout. Taking it first means a check such as "is this job still queued" and the write that
 * depends on it see the same state, across processes. The one exception is the claim, which
 * PostgreSQL runs beside other claims (store__tx_begin_claim).
 */
#include "storage/store_int.h"

#include <errno.h>
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

/* The message for the backend's last failed call, and its code (STORE_EFULL, STORE_EIO for
 * faults that pass; STORE_EDB otherwise). */
int store__db_fail(store *s) { return s->ops->fail(s); }

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

/* The cached statement for sql, reset. */
static store__stmt *prep(store *s, const char *sql) {
    for (int i = 0; i < s->ncache; i++)
        if (s->cache[i].sql == sql) {
            s->ops->reset(s->cache[i].st);
            return s->cache[i].st;
        }
    if (s->ncache == s->capcache) {
        int cap = s->capcache ? 2 * s->capcache : 32;
        struct cached_stmt *c = realloc(s->cache, (size_t)cap * sizeof *c);
        if (!c) {
            store__fail(s, STORE_EDB, "out of memory");
            return NULL;
        }
        s->cache = c;
        s->capcache = cap;
    }
    store__stmt *st = calloc(1, sizeof *st);
    if (!st) {
        store__fail(s, STORE_EDB, "out of memory");
        return NULL;
    }
    st->s = s;
    st->sql = sql;
    if (s->ops->prepare(s, st)) {
        free(st);
        return NULL;
    }
    s->cache[s->ncache++] = (struct cached_stmt){sql, st};
    return st;
}

void store__cache_clear(store *s) {
    for (int i = 0; i < s->ncache; i++) {
        s->ops->finalize(s->cache[i].st);
        free(s->cache[i].st);
    }
    s->ncache = 0;
}

/* Binds parameters 1..n from fmt, one letter each:
 *   s  const char * (NULL binds NULL)     i  int     I  int64_t
 *   j  json_t * (serialized; NULL binds NULL) */
static int bind_va(store *s, store__stmt *st, const char *fmt, va_list ap) {
    /* The arguments are not type-checked, so at least their count is. */
    int want = s->ops->param_count(st);
    if ((int)strlen(fmt) != want)
        return store__fail(s, STORE_EDB,
                           "internal error: %d values for the %d parameters of: %.200s",
                           (int)strlen(fmt), want, st->sql);
    for (int i = 0; fmt[i]; i++) {
        int rc, k = i + 1;
        switch (fmt[i]) {
        case 's': rc = s->ops->bind_text(st, k, va_arg(ap, const char *)); break;
        case 'i': rc = s->ops->bind_int64(st, k, va_arg(ap, int)); break;
        case 'I': rc = s->ops->bind_int64(st, k, va_arg(ap, int64_t)); break;
        case 'j': {
            json_t *v = va_arg(ap, json_t *);
            char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            if (v && !text) return store__fail(s, STORE_EDB, "out of memory");
            rc = s->ops->bind_text(st, k, text); /* the backend copies it */
            free(text);
            break;
        }
        default: return store__fail(s, STORE_EDB, "internal error: bad bind letter '%c'", fmt[i]);
        }
        if (rc) return rc;
    }
    return STORE_OK;
}

int store__step(store__stmt *st) { return st->s->ops->step(st); }
void store__reset(store__stmt *st) { st->s->ops->reset(st); }
int store__col_null(store__stmt *st, int i) { return st->s->ops->col_null(st, i); }
const char *store__col_text(store__stmt *st, int i) { return st->s->ops->col_text(st, i); }
int64_t store__col_int64(store__stmt *st, int i) { return st->s->ops->col_int64(st, i); }
double store__col_double(store__stmt *st, int i) { return st->s->ops->col_double(st, i); }

/* A prepared, bound statement ready to step, or NULL with the message set. The caller steps it
 * and must end with store__reset: a statement left mid-way holds its read snapshot open. */
store__stmt *store__query(store *s, const char *sql, const char *fmt, ...) {
    store__stmt *st = prep(s, sql);
    if (!st) return NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    return rc ? NULL : st;
}

/* Runs a statement to its end (rows, if any, are ignored). */
int store__exec(store *s, const char *sql, const char *fmt, ...) {
    store__stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    int step;
    while ((step = store__step(st)) == STORE__ROW) {
    }
    if (step != STORE__DONE) rc = store__db_fail(s);
    store__reset(st);
    return rc;
}

/* Runs a query and converts its first row with fn into *out (new reference).
 * STORE_ENOTFOUND (message not set: the caller knows what was missing) if there is none. */
int store__query_one(store *s, store__row_fn fn, json_t **out, const char *sql,
                     const char *fmt, ...) {
    *out = NULL;
    store__stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    int step = store__step(st);
    if (step == STORE__ROW)
        *out = fn(st);
    else if (step == STORE__DONE)
        rc = STORE_ENOTFOUND;
    else
        rc = store__db_fail(s);
    store__reset(st);
    if (!rc && !*out) rc = store__fail(s, STORE_EDB, "out of memory");
    return rc;
}

/* Runs a query and appends every row, converted with fn, to *out_array (a new array). */
int store__query_all(store *s, store__row_fn fn, json_t **out_array, const char *sql,
                     const char *fmt, ...) {
    *out_array = NULL;
    store__stmt *st = prep(s, sql);
    if (!st) return STORE_EDB;
    va_list ap;
    va_start(ap, fmt);
    int rc = bind_va(s, st, fmt, ap);
    va_end(ap);
    if (rc) return rc;
    json_t *arr = json_array();
    int step;
    while ((step = store__step(st)) == STORE__ROW) json_array_append_new(arr, fn(st));
    if (step != STORE__DONE) {
        rc = store__db_fail(s);
        json_decref(arr);
        arr = NULL;
    }
    store__reset(st);
    *out_array = arr;
    return rc;
}

/* ---- transactions ---- */

int store__tx_begin(store *s) { return s->ops->tx_begin(s, 0); }

int store__tx_begin_claim(store *s) { return s->ops->tx_begin(s, 1); }

/* Ends the transaction begun by store__tx_begin: commits when commit is nonzero, else rolls back.
 * Returns rc, or the commit's code if the commit itself failed (the change is then rolled
 * back). */
int store__tx_end(store *s, int rc, int commit) {
    if (commit) {
        int c = s->ops->tx_commit(s);
        if (c == STORE_OK) return rc;
        rc = c;
    }
    /* Keep the message of whatever failed, not of the rollback. */
    s->ops->tx_rollback(s);
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

json_t *store__col_str(store__stmt *st, int i) {
    const char *t = store__col_text(st, i);
    return t ? json_string(t) : json_null();
}

/* A column holding serialized JSON; null if NULL (or, which we never write, not JSON). */
json_t *store__col_json(store__stmt *st, int i) {
    const char *t = store__col_text(st, i);
    json_t *v = t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

json_t *store__col_int(store__stmt *st, int i) {
    return store__col_null(st, i) ? json_null() : json_integer(store__col_int64(st, i));
}

json_t *store__col_json_0(store__stmt *st) { return store__col_json(st, 0); }

json_t *store__col_time(store__stmt *st, int i) {
    return store__col_null(st, i) ? json_null() : iso_time(store__col_int64(st, i));
}

/* Copies a text column into buf (n bytes); "" if NULL. */
void store__col_copy(store__stmt *st, int i, char *buf, size_t n) {
    const char *t = store__col_text(st, i);
    snprintf(buf, n, "%s", t ? t : "");
}

int store_schema_version(void) { return STORE__SCHEMA_VERSION; }

/* 1 if target names a PostgreSQL database rather than a file. */
int store_is_url(const char *target) {
    return target && (!strncmp(target, "postgresql://", 13) || !strncmp(target, "postgres://", 11));
}

void store_target_redact(char *out, size_t n, const char *target) {
    snprintf(out, n, "%s", target);
    if (!store_is_url(target)) return;
    char *scheme_end = strstr(out, "://"), *at = strchr(out, '@');
    if (!scheme_end || !at) return;
    char *colon = memchr(scheme_end + 3, ':', (size_t)(at - scheme_end - 3));
    if (!colon) return;
    char rest[512];
    snprintf(rest, sizeof rest, "%s", at);
    snprintf(colon, n - (size_t)(colon - out), ":***%s", rest);
}

static int open_target(store **out, const char *target, int busy_ms, int migrate, int *from,
                       char *err, size_t errlen) {
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s) {
        if (errlen) snprintf(err, errlen, "out of memory");
        return STORE_EDB;
    }
    s->busy_ms = busy_ms > 0 ? busy_ms : 0;
    s->ops = store_is_url(target) ? &store__pg_ops : &store__sqlite_ops;
    store_target_redact(s->target, sizeof s->target, target);
    int rc = s->ops->open(s, target, migrate, from);
    if (rc) {
        if (errlen) {
            /* A bare "database error: ..." from a helper gets the target, so the operator knows
             * which database. */
            if (!strncmp(s->msg, "database error:", 15))
                snprintf(err, errlen, "cannot open the database %s: %s", s->target, s->msg + 16);
            else
                snprintf(err, errlen, "%s", s->msg);
        }
        store_close(s);
        return rc;
    }
    *out = s;
    return STORE_OK;
}

int store_open(store **out, const char *path, int busy_ms, char *err, size_t errlen) {
    return open_target(out, path, busy_ms, 1, NULL, err, errlen);
}

int store_migrate(const char *target, int busy_ms, int *from, int *to, char *err,
                  size_t errlen) {
    store *s = NULL;
    int f = 0;
    int rc = open_target(&s, target, busy_ms, 1, &f, err, errlen);
    if (from) *from = f;
    if (to) *to = rc ? f : STORE__SCHEMA_VERSION;
    store_close(s);
    return rc;
}

const char *store_backend(const store *s) { return s->ops->name; }

int store_listen(store *s, const char *channel) {
    return s->ops->listen ? s->ops->listen(s, channel) : STORE_OK;
}

int store_notify(store *s, const char *channel) {
    return s->ops->notify ? s->ops->notify(s, channel) : STORE_OK;
}

int store_wait_fd(store *s) { return s->ops->wait_fd ? s->ops->wait_fd(s) : -1; }

int store_drain(store *s) { return s->ops->drain ? s->ops->drain(s) : 0; }

int store__counts(store *s, const char *sql, json_t *c, json_t **out) {
    store__stmt *st = store__query(s, sql, "");
    if (!st) {
        json_decref(c);
        return STORE_EDB;
    }
    int step;
    while ((step = store__step(st)) == STORE__ROW)
        json_object_set_new(c, store__col_text(st, 0), json_integer(store__col_int64(st, 1)));
    int rc = step == STORE__DONE ? STORE_OK : store__db_fail(s);
    store__reset(st);
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
    store__cache_clear(s);
    free(s->cache);
    s->ops->close(s);
    explicit_bzero(s->key, sizeof s->key);
    free(s);
}
