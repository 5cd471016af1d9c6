/*
 * test_store.c: the storage layer on real files in a fresh temp folder per case: blobs
 * (chunked writes, deduplication, abort, sweep), the SQLite schema and its migrations, owner
 * isolation, uploads (blob and row together under the per-owner limit, also from three
 * processes at once), the job state machine with its events, lease fencing, expiry, idempotency,
 * pagination, and four processes claiming from one queue at once; a full disk and I/O errors
 * (blob writes, SQLite writes through tests/sqlite_fault.h): their codes, and nothing changed.
 *
 * Both backends: with GPLQ_TEST_DB set to a postgresql:// URL (tests/integration/
 * test_store_pg.py starts a server and sets it) every case runs on that database instead of a
 * SQLite file, emptied before each case; the few that test SQLite itself (its WAL mode, its
 * file header, faults injected in its VFS) say so and pass by without checking anything there.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "storage/blob.h"
#include "storage/store.h"
#include "util/secretbox.h"
#include "tests/sqlite_fault.h"
#include "tests/test.h"
#include "util/fs.h"

/* ---- fixtures ---- */

static char tmpdir[256];

/* The PostgreSQL database the cases run on, or NULL: a SQLite file in the case's folder. */
static const char *pg_url(void) {
    const char *u = getenv("GPLQ_TEST_DB");
    return u && store_is_url(u) ? u : NULL;
}

/* A case about SQLite itself: nothing to check on PostgreSQL. */
#define SQLITE_ONLY()                                                                            \
    do {                                                                                          \
        if (pg_url()) {                                                                           \
            fprintf(stderr, "  (%s: SQLite only)\n", __func__);                                 \
            return;                                                                               \
        }                                                                                         \
    } while (0)

static void db_path(char *out, size_t n) {
    if (pg_url()) snprintf(out, n, "%s", pg_url());
    else snprintf(out, n, "%s/gplq.db", tmpdir);
}

/* Runs sql (SQLite's text or PostgreSQL's, for the case's backend) on the case's database on a
 * connection of its own, as another program would. The first column of the first row goes to
 * text (n bytes; "" if none) when text is not NULL. 0, -1 if there was no row, -2 on an
 * error. */
static int raw_query(const char *sqlite_sql, const char *pg_sql, char *text, size_t n) {
    int v = -1;
    if (text) text[0] = '\0';
    if (pg_url()) {
        PGconn *c = PQconnectdb(pg_url());
        PGresult *r = PQexec(c, pg_sql);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
            if (text) snprintf(text, n, "%s", PQgetvalue(r, 0, 0));
            v = 0;
        } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            fprintf(stderr, "  raw_query: %s", PQresultErrorMessage(r));
            v = -2;
        }
        PQclear(r);
        PQfinish(c);
        return v;
    }
    char path[512];
    db_path(path, sizeof path);
    sqlite3 *db;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sqlite_sql, -1, &st, NULL) == SQLITE_OK) {
            int step = sqlite3_step(st);
            if (step == SQLITE_ROW) {
                const unsigned char *x = sqlite3_column_text(st, 0);
                if (text) snprintf(text, n, "%s", x ? (const char *)x : "");
                v = 0;
            } else if (step != SQLITE_DONE) {
                v = -2;
            }
            sqlite3_finalize(st);
        } else {
            v = -2;
        }
    } else {
        v = -2;
    }
    sqlite3_close(db);
    return v;
}

/* raw_query for a statement: 0 when it ran. */
static int raw_exec(const char *sqlite_sql, const char *pg_sql) {
    return raw_query(sqlite_sql, pg_sql, NULL, 0) == -2 ? -1 : 0;
}

/* raw_query for an integer: the value, -1 if no row or an error. */
static int raw_int(const char *sqlite_sql, const char *pg_sql) {
    char buf[64];
    return raw_query(sqlite_sql, pg_sql, buf, sizeof buf) ? -1 : atoi(buf);
}


static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tmpdir(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

/* A fresh empty folder for the case; the previous case's is removed (the last one at exit;
 * forked children leave with _exit and so never remove it). */
static const char *fresh_dir(void) {
    static int registered;
    if (!registered) registered = !atexit(remove_tmpdir);
    remove_tmpdir();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gplq-test-store-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
    /* The PostgreSQL database starts each case empty too. */
    if (pg_url() && raw_exec(NULL, "SET client_min_messages = warning;"
                                       " DROP SCHEMA public CASCADE; CREATE SCHEMA public")) {
        fprintf(stderr, "cannot empty the database %s\n", pg_url());
        exit(1);
    }
    return tmpdir;
}

static store *open_fresh(void) {
    fresh_dir();
    char path[512], err[512];
    db_path(path, sizeof path);
    store *s = NULL;
    int rc = store_open(&s, path, 5000, err, sizeof err);
    CHECK_MSG(rc == STORE_OK && s, "store_open: %s", err);
    if (!s) exit(1);
    return s;
}

static const char *str(json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}
static json_int_t num(json_t *o, const char *key) {
    return json_integer_value(json_object_get(o, key));
}

/* A model with a made-up hash (the store never reads the blob); returns its id in id. */
static void add_model(store *s, const char *owner, char fill, char id[32]) {
    char sha[65];
    memset(sha, fill, 64);
    sha[64] = '\0';
    json_t *m = NULL;
    int rc = store_model_insert(s, owner, "vit", sha, 1000, NULL, &m);
    CHECK_MSG(rc == STORE_OK, "model insert: %s", store_errmsg(s));
    snprintf(id, 32, "%s", m ? str(m, "id") : "");
    json_decref(m);
}

/* The built-in dataset every test can use. */
static void add_builtin(store *s) {
    json_t *d = NULL;
    int rc = store_dataset_insert(s, "", "fashion-mnist", "Fashion-MNIST", "builtin", NULL, 0,
                                  NULL, &d);
    CHECK_MSG(rc == STORE_OK, "dataset insert: %s", store_errmsg(s));
    json_decref(d);
}

static void add_job(store *s, const char *owner, const char *model, const char *key,
                    int max_attempts, char id[32]) {
    json_t *spec = json_pack("{s:i, s:s}", "bits", 4, "method", "gplq");
    json_t *j = NULL;
    int rc = store_job_insert(s, owner, model, "fashion-mnist", spec, max_attempts, key, &j);
    CHECK_MSG(rc == STORE_OK, "job insert: %s", store_errmsg(s));
    snprintf(id, 32, "%s", j ? str(j, "id") : "");
    json_decref(j);
    json_decref(spec);
}

/* The job's events as "type:state" / "type" strings joined with spaces. */
static void event_trail(store *s, const char *job, char *out, size_t n) {
    json_t *ev = NULL;
    out[0] = '\0';
    CHECK(store_event_list(s, NULL, job, 0, 0, &ev) == STORE_OK);
    size_t i;
    json_t *e;
    json_int_t last = 0;
    json_array_foreach(ev, i, e) {
        CHECK(num(e, "id") > last);
        last = num(e, "id");
        CHECK(!strcmp(str(e, "job_id"), job));
        const char *type = str(e, "type");
        size_t len = strlen(out);
        if (!strcmp(type, "state"))
            snprintf(out + len, n - len, "%s%s", len ? " " : "",
                     str(json_object_get(e, "data"), "state"));
        else
            snprintf(out + len, n - len, "%s%s", len ? " " : "", type);
    }
    json_decref(ev);
}

static int nfiles;
static int count_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)path, (void)st, (void)ftw;
    if (flag == FTW_F) nfiles++;
    return 0;
}

/* Regular files under dir, at any depth. */
static int count_files(const char *dir) {
    nfiles = 0;
    if (nftw(dir, count_one, 16, FTW_PHYS)) return -1;
    return nfiles;
}

/* ---- blobs ---- */

TEST(blob_chunks_commit_and_dedupe) {
    const char *dir = fresh_dir();
    char err[512], sha[65], sha2[65], path[4096];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    uint8_t data[10000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7 + i / 251);
    blob_writer w;
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    for (size_t off = 0; off < sizeof data; off += 999) {
        size_t n = sizeof data - off < 999 ? sizeof data - off : 999;
        CHECK(blob_write(&w, data + off, n, err, sizeof err) == 0);
    }
    CHECK(w.bytes == (int64_t)sizeof data);
    CHECK(blob_commit(&w, dir, sha, err, sizeof err) == 0);
    CHECK(w.fd < 0);
    uint8_t d[32];
    char want[65];
    sha256(data, sizeof data, d);
    sha256_hex(d, want);
    CHECK(!strcmp(sha, want));
    blob_path(path, sizeof path, dir, sha);
    char expect[4096];
    snprintf(expect, sizeof expect, "%s/blobs/%.2s/%s", dir, want, want);
    CHECK(!strcmp(path, expect));
    /* the path holds exactly the bytes */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        static uint8_t back[20000];
        size_t got = fread(back, 1, sizeof back, f);
        fclose(f);
        CHECK(got == sizeof data && memcmp(back, data, sizeof data) == 0);
    }
    /* the same bytes again: one file, and tmp/ is empty */
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    CHECK(blob_write(&w, data, sizeof data, err, sizeof err) == 0);
    CHECK(blob_commit(&w, dir, sha2, err, sizeof err) == 0);
    CHECK(!strcmp(sha, sha2));
    char sub[600];
    snprintf(sub, sizeof sub, "%s/blobs", dir);
    CHECK(count_files(sub) == 1);
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    CHECK(count_files(sub) == 0);
    /* the empty blob is a blob too */
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    CHECK(blob_commit(&w, dir, sha2, err, sizeof err) == 0);
    CHECK(!strcmp(sha2, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    /* removal */
    CHECK(blob_remove(dir, sha) == 0);
    CHECK(blob_remove(dir, sha) == -1);
    CHECK(access(path, F_OK) != 0);
    /* a name that is not a hash never becomes a path */
    blob_path(path, sizeof path, dir, "../../etc/passwd");
    CHECK(path[0] == '\0');
    CHECK(blob_remove(dir, "../gplq.db") == -1);
}

TEST(blob_abort_leaves_nothing) {
    const char *dir = fresh_dir();
    char err[512], sub[600];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    blob_writer w;
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    CHECK(blob_write(&w, "partial upload", 14, err, sizeof err) == 0);
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    CHECK(count_files(sub) == 1);
    blob_abort(&w);
    CHECK(w.fd < 0);
    CHECK(count_files(sub) == 0);
    blob_abort(&w); /* twice is harmless */
    blob_writer never = {0};
    blob_abort(&never); /* and so is a writer that never began: fd 0 stays open */
    CHECK(fcntl(0, F_GETFD) != -1 || errno != EBADF);
    snprintf(sub, sizeof sub, "%s/blobs", dir);
    CHECK(count_files(sub) == 0);
}

/* A write to a full disk fails with errno ENOSPC (which the callers turn into a 507), and the
 * temp file goes with the abort. /dev/full stands in for the disk. */
TEST(blob_write_on_a_full_disk_says_enospc) {
    const char *dir = fresh_dir();
    char err[512], sub[600];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    blob_writer w;
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    CHECK(full >= 0 && dup2(full, w.fd) == w.fd);
    close(full);
    errno = 0;
    CHECK(blob_write(&w, "no room", 7, err, sizeof err) == -1);
    CHECK_MSG(errno == ENOSPC && fs_is_full(errno), "errno %d", errno);
    CHECK(strstr(err, "cannot write"));
    blob_abort(&w);
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    CHECK(count_files(sub) == 0);
    CHECK(!fs_is_full(EIO) && fs_is_full(EDQUOT));
}

TEST(blob_sweep_removes_leftovers) {
    const char *dir = fresh_dir();
    char err[512], sub[600];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    /* two uploads cut off by a crash: the writers are simply forgotten */
    for (int i = 0; i < 2; i++) {
        blob_writer w;
        CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
        CHECK(blob_write(&w, "abc", 3, err, sizeof err) == 0);
        close(w.fd);
    }
    CHECK(blob_sweep_tmp(dir) == 2);
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    CHECK(count_files(sub) == 0);
    CHECK(blob_sweep_tmp(dir) == 0);
    CHECK(blob_sweep_tmp("/nonexistent/gplq") == 0);
}

TEST(blob_commit_into_missing_dir_fails) {
    const char *dir = fresh_dir();
    char err[512] = "", sha[65], sub[600], missing[600];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    blob_writer w;
    CHECK(blob_begin(&w, dir, err, sizeof err) == 0);
    CHECK(blob_write(&w, "abc", 3, err, sizeof err) == 0);
    snprintf(missing, sizeof missing, "%s/no/such/dir", dir);
    CHECK(blob_commit(&w, missing, sha, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "no/such/dir") != NULL, "message: %s", err);
    CHECK(w.fd < 0);
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    CHECK(count_files(sub) == 0); /* the temp is gone with the failure */
    /* and beginning in a folder that does not exist says so */
    err[0] = '\0';
    CHECK(blob_begin(&w, missing, err, sizeof err) == -1);
    CHECK(w.fd < 0 && strlen(err) > 0);
    blob_abort(&w);
    /* a file where blobs/ should be: refused at start, not a 500 on every upload later */
    const char *other = fresh_dir();
    char blobs[600];
    snprintf(blobs, sizeof blobs, "%s/blobs", other);
    FILE *f = fopen(blobs, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    err[0] = '\0';
    CHECK(blob_init(other, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "blobs") && strstr(err, "Not a directory"), "message: %s", err);
    /* and mkdir -p of that path says so too, rather than "done" */
    errno = 0;
    CHECK(fs_mkdirs(blobs) == -1 && errno == ENOTDIR);
}

/* ---- schema ---- */

TEST(migrates_from_empty_and_reopens) {
    store *s = open_fresh();
    char path[512], err[512], model[32];
    db_path(path, sizeof path);
    CHECK(store_schema_version() >= 1);
    CHECK(raw_int("PRAGMA user_version", "SELECT version FROM gplq_schema") ==
          store_schema_version());
    CHECK(!strcmp(store_backend(s), pg_url() ? "postgresql" : "sqlite"));
    add_model(s, "", 'a', model);
    store_close(s);
    if (!pg_url()) {
        /* WAL is stored in the file */
        sqlite3 *db;
        CHECK(sqlite3_open(path, &db) == SQLITE_OK);
        sqlite3_stmt *st;
        CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK(!strcmp((const char *)sqlite3_column_text(st, 0), "wal"));
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    /* reopening keeps the data and does not migrate again */
    s = NULL;
    CHECK(store_open(&s, path, 1000, err, sizeof err) == STORE_OK);
    if (!s) return;
    json_t *m = NULL;
    CHECK(store_model_get(s, NULL, model, &m) == STORE_OK);
    CHECK(m && !strcmp(str(m, "name"), "vit"));
    json_decref(m);
    store_close(s);
    CHECK(raw_int("PRAGMA user_version", "SELECT version FROM gplq_schema") ==
          store_schema_version());
    /* gplqd migrate on a database at the version: from = to = this build's */
    int from = -1, to = -1;
    CHECK(store_migrate(path, 1000, &from, &to, err, sizeof err) == STORE_OK);
    CHECK(from == store_schema_version() && to == store_schema_version());
}

TEST(newer_schema_is_refused) {
    store *s = open_fresh();
    store_close(s);
    char path[512], err[512] = "";
    db_path(path, sizeof path);
    CHECK(raw_exec("PRAGMA user_version = 99", "UPDATE gplq_schema SET version = 99") == 0);
    s = (store *)1;
    CHECK(store_open(&s, path, 1000, err, sizeof err) == STORE_EDB);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err, "99") && strstr(err, "newer"), "message: %s", err);
    /* gplqd migrate refuses it too, and says from which version */
    int from = -1;
    CHECK(store_migrate(path, 1000, &from, NULL, err, sizeof err) == STORE_EDB && from == 99);
    CHECK_MSG(strstr(err, "newer"), "message: %s", err);
    CHECK(raw_int("PRAGMA user_version", "SELECT version FROM gplq_schema") == 99);
}

TEST(not_a_database_is_refused) {
    SQLITE_ONLY();
    fresh_dir();
    char path[512], err[512] = "";
    db_path(path, sizeof path);
    FILE *f = fopen(path, "w");
    fputs("this is not a SQLite file, just some text long enough to have a header....\n", f);
    fclose(f);
    store *s = NULL;
    CHECK(store_open(&s, path, 100, err, sizeof err) == STORE_EDB);
    CHECK_MSG(strstr(err, path) != NULL, "message: %s", err);
}

TEST(ids_and_times) {
    char a[32], b[32];
    store_new_id(a, "j_");
    store_new_id(b, "j_");
    CHECK(strlen(a) == 18 && !strncmp(a, "j_", 2) && strcmp(a, b) != 0);
    for (int i = 2; i < 18; i++) CHECK(strchr("0123456789abcdef", a[i]) != NULL);
    int64_t t = store_now_ms();
    CHECK(t > 1700000000000LL);
    store *s = open_fresh();
    char model[32];
    add_model(s, "", 'a', model);
    json_t *m = NULL;
    CHECK(store_model_get(s, "", model, &m) == STORE_OK);
    const char *at = str(m, "created_at");
    /* 2026-11-27T14:03:05.123Z */
    CHECK_MSG(at && strlen(at) == 24 && at[4] == '-' && at[10] == 'T' && at[19] == '.' &&
                  at[23] == 'Z',
              "created_at %s", at ? at : "(null)");
    json_decref(m);
    store_close(s);
}

/* ---- models and datasets ---- */

TEST(models_insert_get_list_delete) {
    store *s = open_fresh();
    add_builtin(s);
    char sha[65];
    memset(sha, 'c', 64);
    sha[64] = '\0';
    json_t *cfg = json_pack("{s:i, s:i}", "depth", 6, "dim", 192);
    json_t *m1 = NULL, *m2 = NULL, *x = NULL;
    CHECK(store_model_insert(s, "b", "vit-b", sha, 4242, cfg, &m1) == STORE_OK);
    CHECK(m1 && !strncmp(str(m1, "id"), "m_", 2) && num(m1, "bytes") == 4242);
    CHECK(num(json_object_get(m1, "config"), "depth") == 6);
    CHECK(!strcmp(str(m1, "sha256"), sha));
    /* the same bytes by the same owner: the same row */
    CHECK(store_model_insert(s, "b", "other name", sha, 4242, cfg, &m2) == STORE_EEXISTS);
    CHECK(m2 && !strcmp(str(m1, "id"), str(m2, "id")) && !strcmp(str(m2, "name"), "vit-b"));
    json_decref(m2);
    /* ...but another owner gets its own row */
    CHECK(store_model_insert(s, "a", "vit-a", sha, 4242, NULL, &m2) == STORE_OK);
    CHECK(strcmp(str(m1, "id"), str(m2, "id")) != 0);
    CHECK(json_is_null(json_object_get(m2, "config")));
    const char *id_b = str(m1, "id"), *id_a = str(m2, "id");
    /* owner isolation */
    CHECK(store_model_get(s, "a", id_b, &x) == STORE_ENOTFOUND && x == NULL);
    CHECK(strstr(store_errmsg(s), id_b) != NULL);
    CHECK(store_model_get(s, "b", id_b, &x) == STORE_OK);
    json_decref(x);
    CHECK(store_model_get(s, NULL, id_b, &x) == STORE_OK);
    json_decref(x);
    CHECK(store_model_list(s, "a", &x) == STORE_OK);
    CHECK(json_array_size(x) == 1 && !strcmp(str(json_array_get(x, 0), "id"), id_a));
    json_decref(x);
    CHECK(store_model_list(s, NULL, &x) == STORE_OK);
    CHECK(json_array_size(x) == 2);
    json_decref(x);
    CHECK(store_model_list(s, "nobody", &x) == STORE_OK && json_array_size(x) == 0);
    json_decref(x);
    char got[65] = "";
    CHECK(store_model_delete(s, "a", id_b, got) == STORE_ENOTFOUND);
    /* a queued job holds the model */
    char job[32];
    add_job(s, "b", id_b, NULL, 3, job);
    CHECK(store_model_delete(s, "b", id_b, got) == STORE_ECONFLICT);
    CHECK_MSG(strstr(store_errmsg(s), job) != NULL, "message: %s", store_errmsg(s));
    /* ...until it ends */
    json_t *j = NULL;
    CHECK(store_job_cancel(s, "b", job, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_blob_in_use(s, sha) == 1);
    CHECK(store_model_delete(s, "b", id_b, got) == STORE_OK);
    CHECK(!strcmp(got, sha));
    CHECK(store_blob_in_use(s, sha) == 1); /* owner a's row still names it */
    CHECK(store_model_delete(s, NULL, id_a, NULL) == STORE_OK);
    CHECK(store_blob_in_use(s, sha) == 0);
    CHECK(store_model_get(s, NULL, id_b, &x) == STORE_ENOTFOUND);
    /* the ended job still names its model */
    CHECK(store_job_get(s, "b", job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "model_id"), id_b));
    json_decref(j);
    json_decref(m1);
    json_decref(m2);
    json_decref(cfg);
    store_close(s);
}

TEST(datasets_builtin_and_uploads) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    json_t *d = NULL, *x = NULL;
    /* registering the built-in again (every start-up) finds it */
    CHECK(store_dataset_insert(s, "", "fashion-mnist", "Fashion-MNIST", "builtin", NULL, 0, NULL,
                               &d) == STORE_EEXISTS);
    CHECK(d && !strcmp(str(d, "id"), "fashion-mnist") && !strcmp(str(d, "kind"), "builtin"));
    json_decref(d);
    CHECK(store_dataset_insert(s, "a", NULL, "x", "zip", NULL, 0, NULL, &d) == STORE_EINVAL);
    char sha[65];
    memset(sha, 'd', 64);
    sha[64] = '\0';
    json_t *summary = json_pack("{s:i}", "classes", 3);
    CHECK(store_dataset_insert(s, "b", NULL, "flowers", "upload", sha, 777, summary, &d) ==
          STORE_OK);
    const char *id = d ? str(d, "id") : "";
    CHECK(!strncmp(id, "d_", 2) && num(json_object_get(d, "summary"), "classes") == 3);
    /* everyone sees the built-in; only b (and admin) sees b's upload */
    CHECK(store_dataset_get(s, "a", "fashion-mnist", &x) == STORE_OK);
    json_decref(x);
    CHECK(store_dataset_get(s, "a", id, &x) == STORE_ENOTFOUND);
    CHECK(store_dataset_list(s, "a", &x) == STORE_OK && json_array_size(x) == 1);
    json_decref(x);
    CHECK(store_dataset_list(s, "b", &x) == STORE_OK && json_array_size(x) == 2);
    json_decref(x);
    CHECK(store_dataset_list(s, NULL, &x) == STORE_OK && json_array_size(x) == 2);
    json_decref(x);
    /* the built-in cannot be deleted, by anyone */
    CHECK(store_dataset_delete(s, "a", "fashion-mnist", NULL) == STORE_ECONFLICT);
    CHECK(store_dataset_delete(s, NULL, "fashion-mnist", NULL) == STORE_ECONFLICT);
    CHECK(strstr(store_errmsg(s), "built in") != NULL);
    CHECK(store_dataset_delete(s, "a", id, NULL) == STORE_ENOTFOUND);
    /* a running job holds the upload */
    char model[32];
    add_model(s, "b", 'e', model);
    json_t *j = NULL;
    CHECK(store_job_insert(s, "b", model, id, NULL, 1, NULL, &j) == STORE_OK);
    char job[32];
    snprintf(job, sizeof job, "%s", str(j, "id"));
    json_decref(j);
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    CHECK(!strcmp(cl.dataset_sha256, sha) && !strcmp(cl.dataset_kind, "upload"));
    store_claim_free(&cl);
    CHECK(store_dataset_delete(s, "b", id, NULL) == STORE_ECONFLICT);
    CHECK(strstr(store_errmsg(s), job) && strstr(store_errmsg(s), "running"));
    CHECK(store_job_finish(s, job, "w1", "succeeded", NULL) == STORE_OK);
    char got[65] = "";
    CHECK(store_dataset_delete(s, "b", id, got) == STORE_OK && !strcmp(got, sha));
    CHECK(store_blob_in_use(s, sha) == 0);
    /* a job cannot use another owner's dataset or model */
    CHECK(store_job_insert(s, "a", model, "fashion-mnist", NULL, 1, NULL, &j) == STORE_ENOTFOUND);
    CHECK(j == NULL);
    json_decref(d);
    json_decref(summary);
    store_close(s);
}

/* ---- uploads: a blob and its row, under the per-owner limit ---- */

/* An upload of n bytes of fill, written and not yet committed (as an HTTP upload leaves it). */
static void stage(blob_writer *w, const char *dir, char fill, size_t n) {
    char data[4096], err[512];
    memset(data, fill, n < sizeof data ? n : sizeof data);
    CHECK_MSG(blob_begin(w, dir, err, sizeof err) == 0, "blob_begin: %s", err);
    CHECK_MSG(blob_write(w, data, n, err, sizeof err) == 0, "blob_write: %s", err);
}

/* Files under DATA/sub. */
static int files_in(const char *dir, const char *sub) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    return count_files(path);
}

TEST(upload_commit_checks_the_quota_against_committed_rows) {
    store *s = open_fresh();
    const char *dir = tmpdir;
    char err[512], m1[32], m2[32];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    add_model(s, "u", 'a', m1); /* 1000 bytes each: u holds 2000 */
    add_model(s, "u", 'b', m2);
    store_upload u = {.owner = "u", .quota_owner = "u", .max_owner_bytes = 2500, .is_model = 1,
                      .name = "m"};
    blob_writer w;
    json_t *row = NULL;
    int64_t held = -1, bytes = -1;
    /* 600 more would pass 2500: refused, and nothing of it stays */
    stage(&w, dir, 'x', 600);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_ELIMIT);
    CHECK(row == NULL && held == 2000 && w.fd < 0);
    CHECK_MSG(strstr(store_errmsg(s), "2500") != NULL, "message: %s", store_errmsg(s));
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 0);
    CHECK(store_owner_upload_bytes(s, "u", &bytes) == STORE_OK && bytes == 2000);
    /* 500 fit exactly */
    stage(&w, dir, 'y', 500);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_OK);
    CHECK(row && num(row, "bytes") == 500 && !strncmp(str(row, "id"), "m_", 2));
    char sha[65], path[4096], id[32];
    snprintf(sha, sizeof sha, "%s", row ? str(row, "sha256") : "");
    snprintf(id, sizeof id, "%s", row ? str(row, "id") : "");
    json_decref(row);
    blob_path(path, sizeof path, dir, sha);
    CHECK(access(path, F_OK) == 0 && files_in(dir, "tmp") == 0);
    /* the same bytes as a model again, with the quota full: that model, holding nothing new */
    stage(&w, dir, 'y', 500);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_EEXISTS);
    CHECK(row && !strcmp(str(row, "id"), id));
    json_decref(row);
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 1);
    /* ...but as a dataset they are a new row, and count */
    u.is_model = 0;
    stage(&w, dir, 'y', 500);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_ELIMIT && held == 2500);
    /* another owner has its own limit; its dataset shares the blob */
    store_upload v = {.owner = "v", .quota_owner = "v", .max_owner_bytes = 2500, .name = "d"};
    stage(&w, dir, 'y', 500);
    CHECK(store_upload_commit(s, dir, &w, &v, &row, &held) == STORE_OK);
    CHECK(row && !strncmp(str(row, "id"), "d_", 2) && !strcmp(str(row, "sha256"), sha));
    char did[32];
    snprintf(did, sizeof did, "%s", row ? str(row, "id") : "");
    json_decref(row);
    CHECK(files_in(dir, "blobs") == 1);
    /* the admin (no quota owner) is not limited */
    store_upload adm = {.owner = "ops", .name = "big", .max_owner_bytes = 2500};
    stage(&w, dir, 'z', 3000);
    CHECK(store_upload_commit(s, dir, &w, &adm, &row, NULL) == STORE_OK);
    json_decref(row);
    CHECK(files_in(dir, "blobs") == 2);
    /* deleting: the shared blob stays while v's dataset names it, and goes with the last row */
    CHECK(store_upload_delete(s, dir, 1, "v", id) == STORE_ENOTFOUND);
    CHECK(store_upload_delete(s, dir, 1, "u", id) == STORE_OK);
    CHECK(access(path, F_OK) == 0);
    CHECK(store_upload_delete(s, dir, 0, "v", did) == STORE_OK);
    CHECK(access(path, F_OK) != 0 && files_in(dir, "blobs") == 1);
    store_close(s);
}

TEST(upload_commit_failed_insert_leaves_no_blob) {
    store *s = open_fresh();
    const char *dir = tmpdir;
    char err[512], db[512];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    /* another connection makes every dataset insert fail */
    (void)db;
    CHECK(raw_exec("CREATE TRIGGER no_datasets BEFORE INSERT ON datasets"
                  " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                  "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                  " $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$;"
                  " CREATE TRIGGER no_datasets BEFORE INSERT ON datasets"
                  " FOR EACH ROW EXECUTE FUNCTION refuse()") == 0);
    store_upload u = {.owner = "u", .name = "d"};
    blob_writer w;
    json_t *row = NULL;
    stage(&w, dir, 'q', 100);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, NULL) == STORE_EDB && row == NULL);
    CHECK_MSG(strstr(store_errmsg(s), "refused by the test"), "message: %s", store_errmsg(s));
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 0);
    /* a blob another row names is kept through a failed insert of the same bytes */
    u.is_model = 1;
    stage(&w, dir, 'q', 100);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, NULL) == STORE_OK);
    json_decref(row);
    u.is_model = 0;
    stage(&w, dir, 'q', 100);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, NULL) == STORE_EDB);
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 1);
    store_close(s);
}

/* Three processes, each with its own connection, upload distinct bytes for one owner at once
 * where two fit: the write lock of the transaction, not anything in one process, keeps the
 * third out. */
TEST(upload_commit_quota_holds_across_processes) {
    enum { NPROC = 3 };
    store *s = open_fresh();
    const char *dir = tmpdir;
    char err[512], path[512];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    db_path(path, sizeof path);
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            close(go[1]);
            store *c = NULL;
            if (store_open(&c, path, 10000, err, sizeof err)) _exit(9);
            blob_writer w;
            stage(&w, dir, (char)('k' + p), 1000);
            char b;
            (void)!read(go[0], &b, 1); /* all start together when the parent closes the pipe */
            store_upload u = {.owner = "u", .quota_owner = "u", .max_owner_bytes = 2500,
                              .name = "d"};
            json_t *row = NULL;
            int rc = store_upload_commit(c, dir, &w, &u, &row, NULL);
            json_decref(row);
            store_close(c);
            _exit(rc == STORE_OK ? 0 : rc == STORE_ELIMIT ? 1 : 2);
        }
    }
    close(go[0]);
    usleep(100000); /* let the children reach the pipe */
    close(go[1]);
    int ok = 0, refused = 0;
    for (int p = 0; p < NPROC; p++) {
        int st = -1;
        waitpid(pids[p], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) <= 1, "child %d status %d", p, st);
        if (WIFEXITED(st)) ok += WEXITSTATUS(st) == 0, refused += WEXITSTATUS(st) == 1;
    }
    CHECK_MSG(ok == 2 && refused == 1, "%d accepted, %d refused", ok, refused);
    int64_t bytes = -1;
    CHECK(store_owner_upload_bytes(s, "u", &bytes) == STORE_OK && bytes == 2000);
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 2);
    store_close(s);
}

/* ---- jobs ---- */

/* store_job_get_text reads as the tree store_job_get gives, on either backend (on PostgreSQL
 * the spliced columns keep the database's spacing, so the parsed values are compared; the API
 * test holds SQLite's to the bytes). */
static void check_job_text(store *s, const char *owner, const char *job) {
    json_t *tree = NULL;
    jtext t;
    jtext_begin(&t, 17);
    CHECK(store_job_get(s, owner, job, &tree) == STORE_OK);
    CHECK(store_job_get_text(s, owner, job, &t) == STORE_OK);
    char *text = jtext_end(&t, 0, NULL);
    json_error_t e;
    json_t *read = text ? json_loads(text, 0, &e) : NULL;
    CHECK_MSG(read && json_equal(read, tree), "text %s", text);
    json_decref(read);
    json_decref(tree);
    free(text);
    /* and the owner's whole list */
    char *next = NULL;
    CHECK(store_job_list(s, owner, NULL, 0, NULL, &tree, &next) == STORE_OK && !next);
    jtext_begin(&t, 17);
    jtext_array(&t, "jobs");
    CHECK(store_job_list_text(s, owner, NULL, 0, NULL, &t, &next) == STORE_OK && !next);
    text = jtext_end(&t, 0, NULL);
    read = text ? json_loads(text, 0, &e) : NULL;
    CHECK_MSG(read && json_array_size(tree) > 0 && json_equal(json_object_get(read, "jobs"), tree),
              "list %s", text);
    json_decref(read);
    json_decref(tree);
    free(text);
}

TEST(job_lifecycle_with_events) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32], trail[512];
    add_model(s, "u", 'a', model);
    add_job(s, "u", model, NULL, 3, job);
    json_t *j = NULL;
    CHECK(store_job_get(s, "u", job, &j) == STORE_OK);
    /* exactly the documented keys, null where not known */
    const char *keys[] = {"id", "model_id", "dataset_id", "spec", "state", "stage", "progress",
                          "metrics", "error", "attempts", "max_attempts", "created_at",
                          "started_at", "finished_at", "webhook", "last_event_id"};
    CHECK(json_object_size(j) == sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECK_MSG(json_object_get(j, keys[i]) != NULL, "key %s missing", keys[i]);
    CHECK(!strcmp(str(j, "state"), "queued") && num(j, "attempts") == 0);
    CHECK(json_is_null(json_object_get(j, "started_at")) &&
          json_is_null(json_object_get(j, "stage")) && json_is_null(json_object_get(j, "webhook")));
    CHECK(num(json_object_get(j, "spec"), "bits") == 4);
    json_decref(j);
    CHECK(store_job_get(s, "other", job, &j) == STORE_ENOTFOUND);
    check_job_text(s, "u", job);
    jtext none;
    jtext_begin(&none, 17);
    CHECK(store_job_get_text(s, "other", job, &none) == STORE_ENOTFOUND);
    free(jtext_end(&none, 0, NULL));

    CHECK(store_job_claim(s, "w1:100", 1000, &cl) == STORE_OK);
    CHECK(!strcmp(cl.id, job) && cl.attempts == 1 && !strcmp(cl.owner, "u"));
    CHECK(store_job_get(s, "u", job, &j) == STORE_OK && !strcmp(str(j, "state"), "running"));
    CHECK(!strcmp(cl.dataset_id, "fashion-mnist"));
    CHECK(!strcmp(cl.dataset_kind, "builtin"));
    CHECK(!*cl.dataset_sha256 && cl.val_fraction == -1);
    CHECK(strlen(cl.model_sha256) == 64 && json_is_object(cl.spec));
    CHECK(json_is_string(json_object_get(j, "started_at")));
    json_decref(j);
    store_claim_free(&cl);
    CHECK(store_job_claim(s, "w2:200", 1000, &cl) == STORE_ENONE && cl.spec == NULL);

    /* progress: stored, lease extended, an event appended only when asked */
    int64_t t0 = store_now_ms();
    json_t *p = json_pack("{s:i, s:i}", "epoch", 1, "of", 5);
    CHECK(store_job_progress(s, job, "w1:100", 600000, "stage1", p, 1) == STORE_OK);
    CHECK(store_job_progress(s, job, "w1:100", 600000, NULL, NULL, 0) == STORE_OK);
    json_decref(p);
    int nr = -1, nf = -1;
    /* a lease that was 1 s is now 10 min: an expiry 5 s from now leaves it alone */
    CHECK(store_job_expire(s, t0 + 5000, NULL, &nr, &nf) == STORE_OK);
    CHECK(nr == 0 && nf == 0);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "stage"), "stage1") && num(json_object_get(j, "progress"), "epoch") == 1);
    json_decref(j);

    /* metrics merge, nested objects key by key */
    json_t *m1 = json_pack("{s:f, s:{s:f}}", "fp32_top1", 90.45, "stage1", "top1", 88.0);
    json_t *m2 = json_pack("{s:{s:f}, s:f}", "stage1", "loss", 0.5, "w4a4_top1", 89.5);
    CHECK(store_job_metrics(s, job, "w1:100", m1) == STORE_OK);
    CHECK(store_job_metrics(s, job, "w1:100", m2) == STORE_OK);
    CHECK(store_job_metrics(s, job, "w9", m2) == STORE_ELEASE);
    json_decref(m1);
    json_decref(m2);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    json_t *met = json_object_get(j, "metrics");
    CHECK(json_object_size(met) == 3);
    CHECK(json_real_value(json_object_get(met, "fp32_top1")) == 90.45);
    CHECK(json_object_size(json_object_get(met, "stage1")) == 2);
    json_decref(j);
    check_job_text(s, NULL, job);

    /* artifacts */
    char sha[65];
    memset(sha, '7', 64);
    sha[64] = '\0';
    CHECK(store_artifact_add(s, job, "model.q", 100, sha) == STORE_OK);
    CHECK(store_artifact_add(s, job, "report.json", 10, sha) == STORE_OK);
    CHECK(store_artifact_add(s, job, "model.q", 120, sha) == STORE_OK); /* replaced */
    CHECK(store_artifact_add(s, "j_nope", "x", 1, sha) == STORE_ENOTFOUND);
    CHECK(store_artifact_list(s, "u", job, &j) == STORE_OK && json_array_size(j) == 2);
    CHECK(num(json_array_get(j, 0), "bytes") == 120);
    json_decref(j);
    CHECK(store_artifact_list(s, "other", job, &j) == STORE_ENOTFOUND);
    CHECK(store_artifact_get(s, "u", job, "report.json", &j) == STORE_OK);
    CHECK(!strcmp(str(j, "sha256"), sha));
    json_decref(j);
    CHECK(store_artifact_get(s, "u", job, "nope", &j) == STORE_ENOTFOUND);
    CHECK(store_blob_in_use(s, sha) == 1);

    CHECK(store_job_delete(s, "u", job) == STORE_ECONFLICT); /* still running */
    CHECK(store_job_finish(s, job, "w1:100", "done", NULL) == STORE_EINVAL);
    CHECK(store_job_finish(s, job, "w2:200", "succeeded", NULL) == STORE_ELEASE);
    CHECK(store_job_finish(s, job, "w1:100", "succeeded", NULL) == STORE_OK);
    CHECK(store_job_finish(s, job, "w1:100", "succeeded", NULL) == STORE_ELEASE);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "succeeded"));
    CHECK(json_is_string(json_object_get(j, "finished_at")));
    CHECK(json_is_null(json_object_get(j, "error")));
    check_job_text(s, "u", job);
    json_decref(j);
    event_trail(s, job, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued running progress succeeded"), "events: %s", trail);

    /* events after an id, with a limit; the state event carries stage and error */
    json_t *ev = NULL;
    CHECK(store_event_list(s, "u", job, 0, 2, &ev) == STORE_OK && json_array_size(ev) == 2);
    json_int_t second = num(json_array_get(ev, 1), "id");
    json_decref(ev);
    CHECK(store_event_list(s, "u", job, second, 0, &ev) == STORE_OK && json_array_size(ev) == 2);
    json_t *last = json_object_get(json_array_get(ev, 1), "data");
    CHECK(!strcmp(str(last, "state"), "succeeded") && !strcmp(str(last, "stage"), "stage1"));
    CHECK(json_is_null(json_object_get(last, "error")));
    json_t *prog = json_object_get(json_array_get(ev, 0), "data");
    CHECK(num(prog, "epoch") == 1);
    json_decref(ev);
    CHECK(store_event_list(s, "other", job, 0, 0, &ev) == STORE_ENOTFOUND);
    /* the job names its newest event: following from there gets nothing old */
    CHECK(store_job_get(s, "u", job, &j) == STORE_OK);
    json_int_t newest = num(j, "last_event_id");
    json_decref(j);
    CHECK(store_event_list(s, "u", job, 0, 0, &ev) == STORE_OK);
    CHECK(newest == num(json_array_get(ev, json_array_size(ev) - 1), "id"));
    json_decref(ev);
    CHECK(store_event_list(s, "u", job, newest, 0, &ev) == STORE_OK && json_array_size(ev) == 0);
    json_decref(ev);
    /* ... which the snapshots in events leave out (there it would name the event before) */
    CHECK(store_event_list(s, "u", job, 0, 1, &ev) == STORE_OK);
    json_t *snap = json_object_get(json_object_get(json_array_get(ev, 0), "data"), "job");
    CHECK(snap && json_object_get(snap, "id") && !json_object_get(snap, "last_event_id"));
    json_decref(ev);

    /* delete takes events and artifacts along */
    CHECK(store_job_delete(s, "other", job) == STORE_ENOTFOUND);
    CHECK(store_job_delete(s, "u", job) == STORE_OK);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_ENOTFOUND);
    CHECK(store_blob_in_use(s, sha) == 0);
    char path[512];
    db_path(path, sizeof path);
    CHECK(raw_int("SELECT COUNT(*) FROM events", "SELECT COUNT(*) FROM events") == 0);
    CHECK(raw_int("SELECT COUNT(*) FROM artifacts", "SELECT COUNT(*) FROM artifacts") == 0);
    store_close(s);
}

TEST(cancel_queued_and_running) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], q[32], r[32], trail[256];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 3, r);
    add_job(s, "", model, NULL, 3, q);
    json_t *j = NULL;
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    CHECK(!strcmp(cl.id, r)); /* the oldest first */
    store_claim_free(&cl);
    /* queued: canceled at once */
    CHECK(store_job_cancel(s, "", q, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "canceled"));
    CHECK(json_is_string(json_object_get(j, "finished_at")));
    json_decref(j);
    CHECK(store_job_cancel(s, "", q, &j) == STORE_ECONFLICT && j == NULL);
    CHECK(strstr(store_errmsg(s), "already ended") != NULL);
    event_trail(s, q, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued canceled"), "events: %s", trail);
    CHECK(store_job_claim(s, "w2", 60000, &cl) == STORE_ENONE);
    /* running: the worker learns at its next progress write, which still counts */
    CHECK(store_job_cancel(s, "someone", r, &j) == STORE_ENOTFOUND);
    CHECK(store_job_cancel(s, "", r, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "running"));
    json_decref(j);
    CHECK(store_job_cancel(s, "", r, &j) == STORE_OK); /* asking twice is fine */
    json_decref(j);
    json_t *p = json_pack("{s:i}", "step", 7);
    CHECK(store_job_progress(s, r, "w1", 60000, "stage2", p, 1) == STORE_ECONFLICT);
    json_decref(p);
    CHECK(store_job_get(s, NULL, r, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "stage"), "stage2"));
    json_decref(j);
    CHECK(store_job_finish(s, r, "w1", "canceled", NULL) == STORE_OK);
    event_trail(s, r, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued running progress canceled"), "events: %s", trail);
    /* a running job whose worker dies after the cancel request ends canceled, not requeued */
    char d[32];
    add_job(s, "", model, NULL, 3, d);
    CHECK(store_job_claim(s, "w3", 60000, &cl) == STORE_OK);
    store_claim_free(&cl);
    CHECK(store_job_cancel(s, NULL, d, &j) == STORE_OK);
    json_decref(j);
    int nr = -1, nf = -1;
    CHECK(store_job_expire(s, store_now_ms(), "w3", &nr, &nf) == STORE_OK);
    CHECK(nr == 0 && nf == 0);
    CHECK(store_job_get(s, NULL, d, &j) == STORE_OK && !strcmp(str(j, "state"), "canceled"));
    json_decref(j);
    store_close(s);
}

TEST(fencing_after_expiry_and_reclaim) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 3, job);
    CHECK(store_job_claim(s, "A", 1000, &cl) == STORE_OK);
    store_claim_free(&cl);
    int nr = -1, nf = -1;
    /* A stops heartbeating; two seconds later its lease is gone */
    CHECK(store_job_expire(s, store_now_ms() + 2000, NULL, &nr, &nf) == STORE_OK);
    CHECK(nr == 1 && nf == 0);
    CHECK(store_job_claim(s, "B", 60000, &cl) == STORE_OK);
    CHECK(!strcmp(cl.id, job) && cl.attempts == 2);
    store_claim_free(&cl);
    /* A wakes up: every write is refused, B's are not */
    CHECK(store_job_progress(s, job, "A", 60000, "stage1", NULL, 1) == STORE_ELEASE);
    CHECK(strstr(store_errmsg(s), "no longer leased") != NULL);
    json_t *m = json_pack("{s:i}", "x", 1);
    CHECK(store_job_metrics(s, job, "A", m) == STORE_ELEASE);
    json_decref(m);
    CHECK(store_job_finish(s, job, "A", "failed", "oops") == STORE_ELEASE);
    CHECK(store_job_release(s, job, "A") == STORE_ELEASE);
    CHECK(store_job_progress(s, job, "B", 60000, "stage2", NULL, 0) == STORE_OK);
    CHECK(store_job_finish(s, job, "B", "succeeded", NULL) == STORE_OK);
    char trail[256];
    event_trail(s, job, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued running queued running succeeded"), "events: %s", trail);
    /* and a deleted job's lease is gone too */
    CHECK(store_job_delete(s, NULL, job) == STORE_OK);
    CHECK(store_job_progress(s, job, "B", 60000, NULL, NULL, 0) == STORE_ELEASE);
    store_close(s);
}

TEST(expire_requeues_then_gives_up) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 2, job);
    json_t *j = NULL;
    int nr = -1, nf = -1;
    CHECK(store_job_claim(s, "w1", 1000, &cl) == STORE_OK);
    store_claim_free(&cl);
    /* a live lease is left alone */
    CHECK(store_job_expire(s, store_now_ms(), NULL, &nr, &nf) == STORE_OK && nr == 0 && nf == 0);
    /* a worker seen to die releases its job at once, the attempt counted */
    CHECK(store_job_expire(s, store_now_ms(), "w1", &nr, &nf) == STORE_OK && nr == 1 && nf == 0);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "queued") && num(j, "attempts") == 1);
    json_decref(j);
    CHECK(store_job_claim(s, "w2", 1000, &cl) == STORE_OK);
    store_claim_free(&cl);
    CHECK(store_job_progress(s, job, "w2", 1000, "stage2", NULL, 0) == STORE_OK);
    /* the second (last) attempt's worker stops responding: the job fails, saying why */
    CHECK(store_job_expire(s, store_now_ms() + 60000, NULL, &nr, &nf) == STORE_OK);
    CHECK(nr == 0 && nf == 1);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "failed") && num(j, "attempts") == 2);
    char err[512];
    snprintf(err, sizeof err, "%s", str(j, "error") ? str(j, "error") : "(null)");
    CHECK_MSG(strstr(err, "gave up after 2 attempts") && strstr(err, "stopped responding") &&
                  strstr(err, "stage2"),
              "error: %s", err);
    CHECK(json_is_string(json_object_get(j, "finished_at")));
    json_decref(j);
    char trail[256];
    event_trail(s, job, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued running queued running failed"), "events: %s", trail);
    json_t *ev = NULL;
    CHECK(store_event_list(s, NULL, job, 0, 0, &ev) == STORE_OK);
    json_t *data = json_object_get(json_array_get(ev, json_array_size(ev) - 1), "data");
    CHECK(str(data, "error") && !strcmp(str(data, "error"), err));
    json_decref(ev);
    CHECK(store_job_claim(s, "w3", 1000, &cl) == STORE_ENONE);
    CHECK(store_job_expire(s, store_now_ms() + 60000, NULL, NULL, NULL) == STORE_OK);
    store_close(s);
}

TEST(release_does_not_count_the_attempt) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 1, job);
    json_t *j = NULL;
    for (int i = 0; i < 3; i++) {
        CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
        CHECK(cl.attempts == 1);
        store_claim_free(&cl);
        CHECK(store_job_release(s, job, "w1") == STORE_OK);
        CHECK(store_job_release(s, job, "w1") == STORE_ELEASE);
    }
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "queued") && num(j, "attempts") == 0);
    /* started_at is the first start, kept across releases */
    CHECK(json_is_string(json_object_get(j, "started_at")));
    json_decref(j);
    store_close(s);
}

/* An attempt that failed for the disk goes back to the queue, counted, with the reason on the
 * job and its event; after the last attempt the job fails saying so. */
TEST(retry_requeues_with_the_reason_then_gives_up) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 2, job);
    json_t *j = NULL;
    int again = -1;
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    store_claim_free(&cl);
    CHECK(store_job_progress(s, job, "w1", 60000, "export", NULL, 0) == STORE_OK);
    CHECK(store_job_retry(s, job, "w2", "the disk was full", &again) == STORE_ELEASE);
    CHECK(store_job_retry(s, job, "w1", "the disk was full", &again) == STORE_OK && again == 1);
    CHECK(store_job_retry(s, job, "w1", "the disk was full", &again) == STORE_ELEASE);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "queued") && num(j, "attempts") == 1);
    CHECK_MSG(!strcmp(str(j, "error"), "the disk was full (attempt 1 of 2; it is retried)"),
              "error: %s", str(j, "error"));
    json_decref(j);
    json_t *ev = NULL;
    CHECK(store_event_list(s, NULL, job, 0, 0, &ev) == STORE_OK);
    json_t *data = json_object_get(json_array_get(ev, json_array_size(ev) - 1), "data");
    CHECK(!strcmp(str(data, "state"), "queued") && strstr(str(data, "error"), "disk was full"));
    json_decref(ev);
    /* the last attempt: failed, and the next claim finds nothing */
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK && cl.attempts == 2);
    store_claim_free(&cl);
    CHECK(store_job_retry(s, job, "w1", "the disk was full", &again) == STORE_OK && again == 0);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "failed"));
    CHECK_MSG(!strcmp(str(j, "error"), "gave up after 2 attempts: the disk was full"), "error: %s",
              str(j, "error"));
    json_decref(j);
    char trail[256];
    event_trail(s, job, trail, sizeof trail);
    CHECK_MSG(!strcmp(trail, "queued running queued running failed"), "events: %s", trail);
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_ENONE);
    /* a job whose cancel was asked for ends canceled instead */
    add_job(s, "", model, NULL, 3, job);
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    store_claim_free(&cl);
    CHECK(store_job_cancel(s, NULL, job, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_job_retry(s, job, "w1", "the disk was full", &again) == STORE_OK && again == 0);
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK);
    CHECK(!strcmp(str(j, "state"), "canceled"));
    json_decref(j);
    store_close(s);
}

/* A full disk and an I/O error, made by sqlite_fault.h where a real one strikes (SQLite's
 * writes): their own codes and messages, nothing changed, and the same handle works again
 * once the fault is gone. */
TEST(disk_full_and_io_errors_change_nothing) {
    SQLITE_ONLY();
    sqlite_fault_install();
    store *s = open_fresh();
    add_builtin(s);
    char model[32], job[32];
    add_model(s, "", 'a', model);
    add_job(s, "", model, NULL, 3, job);
    json_t *spec = json_object(), *j = NULL, *list = NULL;
    char *next = NULL;
    sqlite_fault = SQLITE_FAULT_FULL;
    sqlite_fault_hits = 0;
    CHECK(store_job_insert(s, "", model, "fashion-mnist", spec, 3, NULL, &j) == STORE_EFULL);
    CHECK(j == NULL && sqlite_fault_hits > 0);
    CHECK_MSG(strstr(store_errmsg(s), "disk is full"), "message: %s", store_errmsg(s));
    CHECK(store_job_cancel(s, NULL, job, &j) == STORE_EFULL);
    json_decref(j);
    sqlite_fault = SQLITE_FAULT_IOERR;
    CHECK(store_job_cancel(s, NULL, job, &j) == STORE_EIO);
    json_decref(j);
    CHECK_MSG(strstr(store_errmsg(s), "I/O error"), "message: %s", store_errmsg(s));
    /* reads need no write: they go on, and see nothing of the failed calls */
    CHECK(store_job_get(s, NULL, job, &j) == STORE_OK && !strcmp(str(j, "state"), "queued"));
    json_decref(j);
    CHECK(store_job_list(s, NULL, NULL, 0, NULL, &list, &next) == STORE_OK);
    CHECK(json_array_size(list) == 1);
    json_decref(list);
    free(next);
    sqlite_fault = SQLITE_FAULT_NONE;
    /* the same calls, the same handle */
    CHECK(store_job_insert(s, "", model, "fashion-mnist", spec, 3, NULL, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_job_cancel(s, NULL, job, &j) == STORE_OK && !strcmp(str(j, "state"), "canceled"));
    json_decref(j);
    json_decref(spec);
    char path[512];
    db_path(path, sizeof path);
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open(path, &raw) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW &&
          !strcmp((const char *)sqlite3_column_text(st, 0), "ok"));
    sqlite3_finalize(st);
    sqlite3_close(raw);
    store_close(s);
}

/* An upload whose row cannot be committed for want of space: STORE_EFULL, and neither the
 * blob nor its temp file stays; the same upload succeeds once there is room. */
TEST(upload_commit_on_a_full_disk_leaves_no_blob) {
    SQLITE_ONLY();
    sqlite_fault_install();
    store *s = open_fresh();
    const char *dir = tmpdir;
    char err[512];
    CHECK(blob_init(dir, err, sizeof err) == 0);
    store_upload u = {.owner = "u", .quota_owner = "u", .max_owner_bytes = 5000, .is_model = 1,
                      .name = "m"};
    blob_writer w;
    json_t *row = NULL;
    int64_t held = -1;
    stage(&w, dir, 'f', 1000);
    sqlite_fault = SQLITE_FAULT_FULL;
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_EFULL && row == NULL);
    sqlite_fault = SQLITE_FAULT_NONE;
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 0);
    CHECK(store_owner_upload_bytes(s, "u", &held) == STORE_OK && held == 0);
    stage(&w, dir, 'f', 1000);
    CHECK(store_upload_commit(s, dir, &w, &u, &row, &held) == STORE_OK && row);
    json_decref(row);
    CHECK(files_in(dir, "tmp") == 0 && files_in(dir, "blobs") == 1);
    CHECK(store_owner_upload_bytes(s, "u", &held) == STORE_OK && held == 1000);
    store_close(s);
}

TEST(idempotency_key) {
    store *s = open_fresh();
    add_builtin(s);
    char model_a[32], model_b[32], j1[32], j2[32], j3[32];
    add_model(s, "a", 'a', model_a);
    add_model(s, "b", 'b', model_b);
    add_job(s, "a", model_a, "key-1", 3, j1);
    json_t *j = NULL;
    CHECK(store_job_insert(s, "a", model_a, "fashion-mnist", NULL, 3, "key-1", &j) ==
          STORE_EEXISTS);
    CHECK(j && !strcmp(str(j, "id"), j1));
    json_decref(j);
    add_job(s, "b", model_b, "key-1", 3, j2); /* the key is per owner */
    add_job(s, "a", model_a, "key-2", 3, j3);
    CHECK(strcmp(j1, j2) && strcmp(j1, j3) && strcmp(j2, j3));
    char *next = NULL;
    CHECK(store_job_list(s, NULL, NULL, 0, NULL, &j, &next) == STORE_OK);
    CHECK(json_array_size(j) == 3 && next == NULL);
    json_decref(j);
    /* a model that is not there, or not the owner's */
    CHECK(store_job_insert(s, "a", model_b, "fashion-mnist", NULL, 3, NULL, &j) == STORE_ENOTFOUND);
    CHECK(store_job_insert(s, "a", model_a, "d_missing", NULL, 3, NULL, &j) == STORE_ENOTFOUND);
    CHECK(strstr(store_errmsg(s), "d_missing") != NULL);
    /* the default number of attempts */
    CHECK(store_job_insert(s, "a", model_a, "fashion-mnist", NULL, 0, NULL, &j) == STORE_OK);
    CHECK(num(j, "max_attempts") == STORE_DEFAULT_MAX_ATTEMPTS);
    json_decref(j);
    /* a new key under a per-owner queue limit (every non-admin's, by default) makes its job;
     * the lookup's "not found" once leaked out as the answer (found by fuzzing) */
    store_job_new lim = {.owner = "a", .scope = "a", .model_id = model_a,
                         .dataset_id = "fashion-mnist", .idempotency_key = "key-3",
                         .max_queued = 100};
    CHECK_MSG(store_job_submit(s, &lim, &j) == STORE_OK, "%s", store_errmsg(s));
    CHECK(j && json_is_string(json_object_get(j, "id")));
    json_decref(j);
    CHECK(store_job_submit(s, &lim, &j) == STORE_EEXISTS);
    json_decref(j);
    store_close(s);
}

TEST(pagination_and_counts) {
    store_claim cl;
    store *s = open_fresh();
    add_builtin(s);
    char model[32], ids[25][32], mine[32];
    add_model(s, "u", 'a', model);
    for (int i = 0; i < 25; i++) add_job(s, "u", model, NULL, 3, ids[i]);
    char other_model[32];
    add_model(s, "v", 'b', other_model);
    add_job(s, "v", other_model, NULL, 3, mine);
    int seen[25] = {0}, sizes[4] = {0}, pages = 0, expect = 24;
    char *cursor = NULL;
    do {
        json_t *arr = NULL;
        char *next = NULL;
        CHECK(store_job_list(s, "u", NULL, 10, cursor, &arr, &next) == STORE_OK);
        free(cursor);
        cursor = next;
        if (!arr) break;
        sizes[pages] = (int)json_array_size(arr);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            /* newest first */
            CHECK_MSG(!strcmp(str(e, "id"), ids[expect]), "page %d item %zu", pages, i);
            for (int k = 0; k < 25; k++)
                if (!strcmp(str(e, "id"), ids[k])) seen[k]++;
            expect--;
        }
        json_decref(arr);
        pages++;
    } while (cursor && pages < 4);
    CHECK(pages == 3 && sizes[0] == 10 && sizes[1] == 10 && sizes[2] == 5);
    for (int k = 0; k < 25; k++) CHECK(seen[k] == 1);
    free(cursor);
    /* the state filter, the admin view, a bad cursor */
    json_t *arr = NULL, *j = NULL;
    char *next = NULL;
    CHECK(store_job_claim(s, "w", 60000, &cl) == STORE_OK);
    CHECK(!strcmp(cl.id, ids[0]));
    store_claim_free(&cl);
    CHECK(store_job_list(s, "u", "running", 10, NULL, &arr, &next) == STORE_OK);
    CHECK(json_array_size(arr) == 1 && next == NULL);
    json_decref(arr);
    CHECK(store_job_list(s, NULL, NULL, 0, NULL, &arr, &next) == STORE_OK);
    CHECK(json_array_size(arr) == 26 && next == NULL);
    json_decref(arr);
    CHECK(store_job_list(s, "u", NULL, 25, NULL, &arr, &next) == STORE_OK);
    CHECK(json_array_size(arr) == 25 && next == NULL); /* exactly full: no empty next page */
    json_decref(arr);
    CHECK(store_job_list(s, "u", NULL, 10, "x1", &arr, &next) == STORE_EINVAL && arr == NULL);
    CHECK(store_job_list(s, "u", "done", 10, NULL, &arr, &next) == STORE_EINVAL && arr == NULL);
    CHECK(store_job_counts(s, &j) == STORE_OK);
    CHECK(num(j, "queued") == 25 && num(j, "running") == 1 && num(j, "succeeded") == 0 &&
          num(j, "failed") == 0 && num(j, "canceled") == 0 && json_object_size(j) == 5);
    json_decref(j);
    store_close(s);
}

/* Four processes, each with its own connection, drain one queue of 40 jobs at once. Each
 * child reports the ids it claimed through a pipe (a line is one write, under PIPE_BUF, so
 * lines never interleave); the parent checks every job was claimed exactly once. */
TEST(four_processes_claim_each_job_once) {
    enum { NJOBS = 40, NPROC = 4 };
    store *s = open_fresh();
    add_builtin(s);
    char model[32], ids[NJOBS][32], path[512];
    add_model(s, "", 'a', model);
    for (int i = 0; i < NJOBS; i++) add_job(s, "", model, NULL, 3, ids[i]);
    store_close(s);
    db_path(path, sizeof path);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            close(fds[0]);
            char err[512], worker[32];
            snprintf(worker, sizeof worker, "w%d:%d", p, (int)getpid());
            store *c = NULL;
            if (store_open(&c, path, 10000, err, sizeof err)) {
                fprintf(stderr, "  child %d: %s\n", p, err);
                _exit(2);
            }
            int status = 0;
            for (;;) {
                store_claim j;
                int rc = store_job_claim(c, worker, 60000, &j);
                if (rc == STORE_ENONE) break;
                if (rc) {
                    fprintf(stderr, "  child %d: claim: %s\n", p, store_errmsg(c));
                    status = 3;
                    break;
                }
                char line[64];
                int n = snprintf(line, sizeof line, "%s\n", j.id);
                if (write(fds[1], line, (size_t)n) != n) status = 4;
                /* some work on it, so claims and other writes interleave */
                if (store_job_progress(c, j.id, worker, 60000, "stage1", NULL, 1) ||
                    store_job_finish(c, j.id, worker, "succeeded", NULL)) {
                    fprintf(stderr, "  child %d: %s\n", p, store_errmsg(c));
                    status = 5;
                }
                store_claim_free(&j);
            }
            store_close(c);
            close(fds[1]);
            _exit(status);
        }
    }
    close(fds[1]);
    static char buf[NJOBS * 64 + 1];
    size_t len = 0;
    ssize_t k;
    while (len < sizeof buf - 1 && (k = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    buf[len] = '\0';
    close(fds[0]);
    for (int p = 0; p < NPROC; p++) {
        int st = -1;
        waitpid(pids[p], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %d", p, st);
    }
    int claimed[NJOBS] = {0}, lines = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        int found = 0;
        for (int i = 0; i < NJOBS; i++)
            if (!strcmp(line, ids[i])) claimed[i]++, found = 1;
        CHECK_MSG(found, "unknown id %s", line);
    }
    CHECK_MSG(lines == NJOBS, "%d claims for %d jobs", lines, NJOBS);
    for (int i = 0; i < NJOBS; i++)
        CHECK_MSG(claimed[i] == 1, "job %d claimed %d times", i, claimed[i]);
    /* and the database agrees: every job succeeded on its first attempt */
    char err[512];
    CHECK(store_open(&s, path, 1000, err, sizeof err) == STORE_OK);
    json_t *c = NULL;
    CHECK(store_job_counts(s, &c) == STORE_OK && num(c, "succeeded") == NJOBS);
    json_decref(c);
    CHECK(raw_int("SELECT COUNT(*) FROM jobs WHERE attempts = 1", "SELECT COUNT(*) FROM jobs WHERE attempts = 1") == NJOBS);
    CHECK(raw_int("SELECT COUNT(*) FROM events", "SELECT COUNT(*) FROM events") == 4 * NJOBS);
    store_close(s);
}

/* gplqd and its workers may start together on a database that does not exist yet: every
 * process must open it (the schema created once) and be able to write. */
TEST(four_processes_create_one_database) {
    enum { NPROC = 4 };
    fresh_dir();
    char path[512];
    db_path(path, sizeof path);
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            char err[512], id[32];
            store *c = NULL;
            if (store_open(&c, path, 10000, err, sizeof err)) {
                fprintf(stderr, "  child %d: %s\n", p, err);
                _exit(2);
            }
            int before = test_failed_checks_;
            add_model(c, "", (char)('a' + p), id);
            store_close(c);
            _exit(test_failed_checks_ == before ? 0 : 3);
        }
    }
    for (int p = 0; p < NPROC; p++) {
        int st = -1;
        waitpid(pids[p], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %d", p, st);
    }
    CHECK(raw_int("SELECT COUNT(*) FROM models", "SELECT COUNT(*) FROM models") == NPROC);
    CHECK(raw_int("PRAGMA user_version", "SELECT version FROM gplq_schema") ==
          store_schema_version());
}

/* The types of the webhook rows due now (each then leased), space-separated. */
static void due_types(store *s, char *out, size_t n, json_t **rows) {
    out[0] = '\0';
    json_t *arr = NULL;
    CHECK(store_webhook_due(s, store_now_ms(), 60000, 10, &arr) == STORE_OK);
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r) {
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", used ? " " : "", str(r, "type"));
    }
    *rows = arr;
}

/* Each job's webhook events go out in order, one at a time: a later one waits while an earlier
 * one is in flight or waiting to retry (a receiver must never see job.progress before
 * job.started). */
static const uint8_t test_key[32] = {42};

TEST(webhook_events_of_a_job_go_out_in_order) {
    store_claim cl;
    store *s = open_fresh();
    store_set_secret_key(s, test_key);
    add_builtin(s);
    char model[32], id[32], types[256];
    add_model(s, "u", 'b', model);
    store_job_new nj = {.owner = "u", .model_id = model, .dataset_id = "fashion-mnist",
                        .webhook_url = "http://127.0.0.1:9/hook",
                        .webhook_secret = "0123456789abcdef", .webhook_progress_ms = 1};
    json_t *j = NULL, *rows = NULL;
    CHECK(store_job_submit(s, &nj, &j) == STORE_OK);
    snprintf(id, sizeof id, "%s", str(j, "id"));
    json_decref(j);
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    store_claim_free(&cl);
    usleep(5000);
    json_t *p = json_pack("{s:s, s:f}", "stage", "stage1", "fraction", 0.5);
    CHECK(store_job_progress(s, id, "w1", 60000, "stage1", p, 1) == STORE_OK);
    json_decref(p);
    CHECK(store_job_finish(s, id, "w1", "succeeded", NULL) == STORE_OK);

    due_types(s, types, sizeof types, &rows);
    CHECK_MSG(!strcmp(types, "job.started"), "due: '%s'", types);
    int64_t started = num(json_array_get(rows, 0), "outbox_id");
    json_decref(rows);
    due_types(s, types, sizeof types, &rows); /* in flight (leased): nothing else may go */
    CHECK_MSG(!strcmp(types, ""), "due while the first is in flight: '%s'", types);
    json_decref(rows);
    /* a failed attempt to retry later still holds the line */
    CHECK(store_webhook_record(s, started, 1, store_now_ms(), 500, 3, "HTTP 500", "retry",
                               store_now_ms() + 60000) == STORE_OK);
    due_types(s, types, sizeof types, &rows);
    CHECK_MSG(!strcmp(types, ""), "due while the first waits to retry: '%s'", types);
    json_decref(rows);
    CHECK(store_webhook_record(s, started, 2, store_now_ms(), 204, 3, NULL, "delivered", 0) ==
          STORE_OK);
    due_types(s, types, sizeof types, &rows);
    CHECK_MSG(!strcmp(types, "job.progress"), "due: '%s'", types);
    int64_t progress = num(json_array_get(rows, 0), "outbox_id");
    json_decref(rows);
    /* given up on: the next one goes */
    CHECK(store_webhook_record(s, progress, 1, store_now_ms(), 0, 3, "refused", "failed", 0) ==
          STORE_OK);
    due_types(s, types, sizeof types, &rows);
    CHECK_MSG(!strcmp(types, "job.succeeded"), "due: '%s'", types);
    json_decref(rows);
    store_close(s);
}

TEST(tokens_and_per_owner_limits) {
    store *s = open_fresh();
    add_builtin(s);
    char hash[65];
    memset(hash, 'a', 64);
    hash[64] = '\0';
    json_t *row = NULL;
    int64_t n = -1;
    CHECK(store_token_count(s, &n) == STORE_OK && n == 0);
    CHECK(store_token_insert(s, "t_1", "ci", 0, hash, &row) == STORE_OK);
    CHECK(!strcmp(str(row, "name"), "ci") && json_is_false(json_object_get(row, "admin")));
    CHECK(json_is_null(json_object_get(row, "revoked_at")) && !json_object_get(row, "hash"));
    json_decref(row);
    CHECK(store_token_insert(s, "t_1", "other", 1, hash, &row) == STORE_ECONFLICT);
    CHECK(store_token_insert(s, "t_2", "", 1, hash, &row) == STORE_EINVAL);
    char got[65] = "", name[72] = "";
    int admin = -1;
    CHECK(store_token_find(s, "t_1", got, name, sizeof name, &admin) == STORE_OK);
    CHECK(!strcmp(got, hash) && !strcmp(name, "ci") && admin == 0);
    CHECK(store_token_revoke(s, "t_1", &row) == STORE_OK);
    json_decref(row);
    CHECK(store_token_find(s, "t_1", got, name, sizeof name, &admin) == STORE_ENOTFOUND);
    CHECK(store_token_count(s, &n) == STORE_OK && n == 1); /* revoked ones count */
    CHECK(store_token_list(s, &row) == STORE_OK && json_array_size(row) == 1);
    json_decref(row);

    /* queued jobs per owner, counted in the insert's transaction; other owners unaffected */
    char model[32], job[32];
    add_model(s, "u", 'a', model);
    store_job_new nj = {.owner = "u", .scope = "u", .model_id = model,
                        .dataset_id = "fashion-mnist", .max_queued = 2};
    json_t *j = NULL;
    CHECK(store_job_submit(s, &nj, &j) == STORE_OK);
    snprintf(job, sizeof job, "%s", str(j, "id"));
    json_decref(j);
    CHECK(store_job_submit(s, &nj, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_job_submit(s, &nj, &j) == STORE_ELIMIT && j == NULL);
    CHECK(strstr(store_errmsg(s), "2 jobs") != NULL);
    CHECK(store_job_cancel(s, "u", job, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_job_submit(s, &nj, &j) == STORE_OK);
    json_decref(j);
    /* the admin (scope NULL) may use u's model, recorded as its own */
    store_job_new adm = {.owner = "ops", .scope = NULL, .model_id = model,
                         .dataset_id = "fashion-mnist"};
    CHECK(store_job_submit(s, &adm, &j) == STORE_OK);
    json_decref(j);
    CHECK(store_job_list(s, "ops", NULL, 0, NULL, &row, &(char *){NULL}) == STORE_OK &&
          json_array_size(row) == 1);
    json_decref(row);

    int64_t bytes = -1;
    CHECK(store_owner_upload_bytes(s, "u", &bytes) == STORE_OK && bytes == 1000);
    CHECK(store_owner_upload_bytes(s, "nobody", &bytes) == STORE_OK && bytes == 0);
    json_t *m = NULL;
    char sha[65];
    memset(sha, 'a', 64);
    sha[64] = '\0';
    CHECK(store_model_by_sha256(s, "u", sha, &m) == STORE_OK && !strcmp(str(m, "id"), model));
    json_decref(m);
    CHECK(store_model_by_sha256(s, "ops", sha, &m) == STORE_ENOTFOUND);
    store_close(s);
}

/* Webhook secrets are sealed in the database, bound to their job, and open only with the key;
 * a database written before sealing is sealed by store_seal_secrets. */
/* Nodes starting together on a new database: of four processes that each try to make the
 * first admin token, exactly one does. */
TEST(first_token_made_once_by_four_processes) {
    enum { NPROC = 4 };
    store *s = open_fresh();
    store_close(s);
    char path[512];
    db_path(path, sizeof path);
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            char err[512], id[16], hash[65];
            store *c = NULL;
            if (store_open(&c, path, 10000, err, sizeof err)) _exit(9);
            snprintf(id, sizeof id, "t_%d", p);
            memset(hash, 'a' + p, 64);
            hash[64] = '\0';
            json_t *row = NULL;
            int rc = store_token_insert_first(c, id, "admin", 1, hash, &row);
            json_decref(row);
            store_close(c);
            _exit(rc == STORE_OK ? 0 : rc == STORE_EEXISTS ? 1 : 9);
        }
    }
    int made = 0, refused = 0;
    for (int p = 0; p < NPROC; p++) {
        int st = 0;
        waitpid(pids[p], &st, 0);
        made += WIFEXITED(st) && WEXITSTATUS(st) == 0;
        refused += WIFEXITED(st) && WEXITSTATUS(st) == 1;
    }
    CHECK_MSG(made == 1 && refused == NPROC - 1, "made %d, refused %d", made, refused);
    CHECK(raw_int("SELECT COUNT(*) FROM tokens", "SELECT COUNT(*) FROM tokens") == 1);
}

TEST(webhook_secrets_are_sealed_at_rest) {
    store *s = open_fresh();
    add_builtin(s);
    char model[32], id[32], path[512], err[256];
    add_model(s, "u", 'c', model);
    const char *secret = "0123456789abcdef-the-secret";
    store_job_new nj = {.owner = "u", .model_id = model, .dataset_id = "fashion-mnist",
                        .webhook_url = "http://127.0.0.1:9/hook", .webhook_secret = secret};
    json_t *j = NULL, *rows = NULL;
    /* without a key there is nothing to seal with: refused, not stored in the clear */
    CHECK(store_job_submit(s, &nj, &j) == STORE_EINVAL && strstr(store_errmsg(s), "key"));
    store_set_secret_key(s, test_key);
    CHECK(store_job_submit(s, &nj, &j) == STORE_OK);
    snprintf(id, sizeof id, "%s", str(j, "id"));
    json_decref(j);
    store_claim cl;
    CHECK(store_job_claim(s, "w1", 60000, &cl) == STORE_OK);
    store_claim_free(&cl);

    /* the database holds no plaintext secret */
    db_path(path, sizeof path);
    char stored[512];
    CHECK(raw_query("SELECT secret FROM job_webhooks", "SELECT secret FROM job_webhooks", stored,
                    sizeof stored) == 0);
    CHECK(secretbox_is_sealed(stored) && !strstr(stored, "the-secret"));
    char *copy = strdup(stored);

    /* delivery gets the plaintext */
    CHECK(store_webhook_due(s, store_now_ms(), 1, 10, &rows) == STORE_OK);
    CHECK(json_array_size(rows) == 1);
    CHECK(!strcmp(str(json_array_get(rows, 0), "secret"), secret));
    CHECK(!json_object_get(json_array_get(rows, 0), "job_id"));
    json_decref(rows);

    /* with another key (a database moved to another gplqd) it does not open, and says so */
    store_close(s);
    CHECK(store_open(&s, path, 5000, err, sizeof err) == STORE_OK);
    uint8_t other[32] = {43};
    store_set_secret_key(s, other);
    usleep(5000);
    CHECK(store_webhook_due(s, store_now_ms() + 10, 1, 10, &rows) == STORE_OK);
    CHECK(json_array_size(rows) == 1);
    CHECK(!json_object_get(json_array_get(rows, 0), "secret"));
    CHECK(strstr(str(json_array_get(rows, 0), "secret_error"), "key") != NULL);
    json_decref(rows);

    /* a secret stored in the clear by an older gplqd is sealed at the next start */
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE job_webhooks SET secret = 'legacy-secret' WHERE job_id = '%s'", id);
    CHECK(raw_exec(sql, sql) == 0);
    store_set_secret_key(s, test_key);
    int n = -1;
    CHECK(store_seal_secrets(s, &n) == STORE_OK && n == 1);
    CHECK(store_seal_secrets(s, &n) == STORE_OK && n == 0);
    CHECK(raw_query("SELECT secret FROM job_webhooks", "SELECT secret FROM job_webhooks", stored,
                    sizeof stored) == 0);
    CHECK(secretbox_is_sealed(stored));
    CHECK(strcmp(stored, copy)); /* a fresh seal */
    usleep(5000);
    CHECK(store_webhook_due(s, store_now_ms() + 20, 1, 10, &rows) == STORE_OK);
    CHECK(json_array_size(rows) == 1 && !strcmp(str(json_array_get(rows, 0), "secret"), "legacy-secret"));
    json_decref(rows);
    free(copy);
    store_close(s);
}

TEST_MAIN()
