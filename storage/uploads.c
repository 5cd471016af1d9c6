/*
 * uploads.c: models and datasets, the rows that name uploaded files, and the upload itself: a
 * blob and its row committed together under the write lock (see store.h), with the per-owner
 * byte count the upload limit is checked against.
 */
#include "storage/store_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "storage/blob.h"
#include "util/fs.h"

/* ---- models ---- */

json_t *store__model_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "id", store__col_str(st, 0), "name",
                     store__col_str(st, 1), "sha256", store__col_str(st, 2), "bytes",
                     store__col_int(st, 3), "config", store__col_json(st, 4), "created_at",
                     store__col_time(st, 5));
}

/* Inside a transaction: STORE_EEXISTS with *out set when owner (not NULL) already has a model
 * of these bytes, STORE_ENOTFOUND (*out NULL) when not, or an error. */
static int model_existing(store *s, const char *owner, const char *sha256, json_t **out) {
    int rc = store__query_one(s, store__model_row, out,
                              "SELECT " MODEL_COLS " FROM models WHERE owner = ?1 AND sha256 = ?2",
                              "ss", owner, sha256);
    if (rc == STORE_OK)
        rc = store__fail(s, STORE_EEXISTS, "this model is already uploaded, as %s",
                         json_string_value(json_object_get(*out, "id")));
    return rc;
}

/* Inside a transaction, once model_existing said STORE_ENOTFOUND: the new row into *out. */
static int model_add(store *s, const char *owner, const char *name, const char *sha256,
                     int64_t bytes, json_t *config, json_t **out) {
    char id[32];
    store_new_id(id, "m_");
    int rc = store__exec(s,
                         "INSERT INTO models (id, owner, name, sha256, bytes, config, created_ms)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                         "ssssIjI", id, owner, name, sha256, bytes, config, store_now_ms());
    if (!rc)
        rc = store__query_one(s, store__model_row, out,
                              "SELECT " MODEL_COLS " FROM models WHERE id = ?1", "s", id);
    if (rc == STORE_ENOTFOUND) rc = store__fail(s, STORE_EDB, "the new model row vanished");
    return rc;
}

int store_model_insert(store *s, const char *owner, const char *name, const char *sha256,
                       int64_t bytes, json_t *config, json_t **out) {
    *out = NULL;
    if (!owner) owner = "";
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc = model_existing(s, owner, sha256, out);
    if (rc == STORE_ENOTFOUND) rc = model_add(s, owner, name, sha256, bytes, config, out);
    return store__tx_end_out(s, rc, out);
}

int store_model_get(store *s, const char *owner, const char *id, json_t **out) {
    int rc = store__query_one(s, store__model_row, out,
                              "SELECT " MODEL_COLS " FROM models WHERE id = ?1 AND " OWNED,
                              "ss", id, owner);
    if (rc == STORE_ENOTFOUND) store__fail(s, rc, "there is no model %s", id);
    return rc;
}

int store_model_by_sha256(store *s, const char *owner, const char *sha256, json_t **out) {
    return store__query_one(s, store__model_row, out,
                            "SELECT " MODEL_COLS " FROM models WHERE owner = ?1 AND sha256 = ?2",
                            "ss", owner ? owner : "", sha256);
}

int store_model_list(store *s, const char *owner, json_t **out_array) {
    return store__query_all(s, store__model_row, out_array,
                            "SELECT " MODEL_COLS " FROM models WHERE ?1 IS NULL OR owner = ?1"
                            " ORDER BY created_ms DESC, rowid DESC",
                            "s", owner);
}

/* STORE_ECONFLICT naming the first queued or running job that uses the model or dataset. */
static int check_unused(store *s, const char *sql, const char *what, const char *id) {
    store__stmt *st = store__query(s, sql, "s", id);
    if (!st) return STORE_EDB;
    int rc = STORE_OK, step = store__step(st);
    if (step == STORE__ROW) {
        char job[64], state[16];
        store__col_copy(st, 0, job, sizeof job);
        store__col_copy(st, 1, state, sizeof state);
        rc = store__fail(
            s, STORE_ECONFLICT,
            "%s %s is used by job %s, which is %s; cancel that job or wait for it to end", what, id,
            job, state);
    } else if (step != STORE__DONE) {
        rc = store__db_fail(s);
    }
    store__reset(st);
    return rc;
}

int store_model_delete(store *s, const char *owner, const char *id, char *sha256_out) {
    int rc = store__tx_begin(s);
    if (rc) return rc;
    store__stmt *st =
        store__query(s, "SELECT sha256 FROM models WHERE id = ?1 AND " OWNED, "ss", id, owner);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    char sha[65] = "";
    int step = store__step(st);
    if (step == STORE__ROW)
        store__col_copy(st, 0, sha, sizeof sha);
    else
        rc = step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "there is no model %s", id)
                                 : store__db_fail(s);
    store__reset(st);
    if (!rc)
        rc = check_unused(s,
                          "SELECT id, state FROM jobs WHERE model_id = ?1"
                          " AND state IN ('queued', 'running') ORDER BY seq LIMIT 1",
                          "model", id);
    if (!rc) rc = store__exec(s, "DELETE FROM models WHERE id = ?1", "s", id);
    rc = store__tx_end(s, rc, rc == STORE_OK);
    if (!rc && sha256_out) memcpy(sha256_out, sha, sizeof sha);
    return rc;
}

/* ---- datasets ---- */

json_t *store__dataset_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", store__col_str(st, 0), "name",
                     store__col_str(st, 1), "kind", store__col_str(st, 2), "sha256",
                     store__col_str(st, 3), "bytes", store__col_int(st, 4), "summary",
                     store__col_json(st, 5), "created_at", store__col_time(st, 6));
}

/* Inside a transaction: the row with this (free) id into *out. */
static int dataset_add(store *s, const char *id, const char *owner, const char *name,
                       const char *kind, const char *sha256, int64_t bytes, json_t *summary,
                       json_t **out) {
    int rc = store__exec(
        s,
        "INSERT INTO datasets (id, owner, name, kind, sha256, bytes, summary, created_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        "sssssIjI", id, owner, name, kind, sha256, bytes, summary, store_now_ms());
    if (!rc)
        rc = store__query_one(s, store__dataset_row, out,
                              "SELECT " DATASET_COLS " FROM datasets WHERE id = ?1", "s", id);
    if (rc == STORE_ENOTFOUND) rc = store__fail(s, STORE_EDB, "the new dataset row vanished");
    return rc;
}

int store_dataset_insert(store *s, const char *owner, const char *id_or_null, const char *name,
                         const char *kind, const char *sha256, int64_t bytes, json_t *summary,
                         json_t **out) {
    *out = NULL;
    if (!owner) owner = "";
    if (!kind || (strcmp(kind, "builtin") && strcmp(kind, "upload")))
        return store__fail(s, STORE_EINVAL, "a dataset's kind is 'builtin' or 'upload', not '%s'",
                           kind ? kind : "(none)");
    char id[64];
    if (id_or_null && (!*id_or_null || strlen(id_or_null) >= sizeof id))
        return store__fail(s, STORE_EINVAL, "a dataset id is 1 to 63 characters");
    int rc = store__tx_begin(s);
    if (rc) return rc;
    if (id_or_null) {
        snprintf(id, sizeof id, "%s", id_or_null);
        /* A fixed id (a built-in registered at every start-up) that is already there. */
        rc = store__query_one(
            s, store__dataset_row, out,
            "SELECT " DATASET_COLS " FROM datasets WHERE id = ?1 AND " DATASET_VISIBLE, "ss", id,
            owner);
        if (rc == STORE_OK) {
            store__fail(s, STORE_EEXISTS, "dataset %s already exists", id);
            return store__tx_end(s, STORE_EEXISTS, 0);
        }
        if (rc != STORE_ENOTFOUND) return store__tx_end(s, rc, 0);
        /* The id may belong to another owner's row, which this owner must not see. */
        store__stmt *st = store__query(s, "SELECT 1 FROM datasets WHERE id = ?1", "s", id);
        if (!st) return store__tx_end(s, STORE_EDB, 0);
        int step = store__step(st);
        rc = step == STORE__ROW
                 ? store__fail(s, STORE_ECONFLICT, "the dataset id %s is taken", id)
             : step == STORE__DONE ? STORE_OK
                                   : store__db_fail(s);
        store__reset(st);
        if (rc) return store__tx_end(s, rc, 0);
    } else {
        store_new_id(id, "d_");
    }
    rc = dataset_add(s, id, owner, name, kind, sha256, bytes, summary, out);
    return store__tx_end_out(s, rc, out);
}

int store_dataset_get(store *s, const char *owner, const char *id, json_t **out) {
    int rc =
        store__query_one(s, store__dataset_row, out,
                         "SELECT " DATASET_COLS " FROM datasets WHERE id = ?1 AND " DATASET_VISIBLE,
                         "ss", id, owner);
    if (rc == STORE_ENOTFOUND) store__fail(s, rc, "there is no dataset %s", id);
    return rc;
}

int store_dataset_list(store *s, const char *owner, json_t **out_array) {
    /* Built-ins first (they are the ones everybody starts with), then newest first. */
    return store__query_all(s, store__dataset_row, out_array,
                            "SELECT " DATASET_COLS " FROM datasets WHERE ?1 IS NULL OR owner = ?1"
                            " OR kind = 'builtin'"
                            " ORDER BY kind = 'builtin' DESC, created_ms DESC, rowid DESC",
                            "s", owner);
}

int store_dataset_delete(store *s, const char *owner, const char *id, char *sha256_out) {
    int rc = store__tx_begin(s);
    if (rc) return rc;
    store__stmt *st = store__query(
        s, "SELECT kind, sha256 FROM datasets WHERE id = ?1 AND " DATASET_VISIBLE, "ss", id, owner);
    if (!st) return store__tx_end(s, STORE_EDB, 0);
    char kind[16] = "", sha[65] = "";
    int step = store__step(st);
    if (step == STORE__ROW) {
        store__col_copy(st, 0, kind, sizeof kind);
        store__col_copy(st, 1, sha, sizeof sha);
    } else {
        rc = step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "there is no dataset %s", id)
                                 : store__db_fail(s);
    }
    store__reset(st);
    if (!rc && !strcmp(kind, "builtin"))
        rc = store__fail(s, STORE_ECONFLICT, "dataset %s is built in and cannot be deleted", id);
    if (!rc)
        rc = check_unused(s,
                          "SELECT id, state FROM jobs WHERE dataset_id = ?1"
                          " AND state IN ('queued', 'running') ORDER BY seq LIMIT 1",
                          "dataset", id);
    if (!rc) rc = store__exec(s, "DELETE FROM datasets WHERE id = ?1", "s", id);
    rc = store__tx_end(s, rc, rc == STORE_OK);
    if (!rc && sha256_out) memcpy(sha256_out, sha, sizeof sha);
    return rc;
}

int store_blob_in_use(store *s, const char *sha256) {
    store__stmt *st = store__query(s,
                                    "SELECT EXISTS (SELECT 1 FROM models WHERE sha256 = ?1)"
                                    " OR EXISTS (SELECT 1 FROM datasets WHERE sha256 = ?1)"
                                    " OR EXISTS (SELECT 1 FROM artifacts WHERE sha256 = ?1)",
                                    "s", sha256);
    /* On a database error say "in use": the caller would otherwise delete a file that a row
     * may still name. */
    if (!st) return 1;
    int used = 1;
    if (store__step(st) == STORE__ROW) used = (int)store__col_int64(st, 0) != 0;
    else store__db_fail(s);
    store__reset(st);
    return used;
}

/* ---- uploads: a blob and the row that names it ----
 *
 * The invariant: a blob file that a model or dataset row names is there; a blob that no row
 * names does not stay; an owner's rows hold at most the per-owner limit. Uploads are the only
 * writers of blob files, and they place a file, and remove one, only while holding the
 * database's write lock (BEGIN IMMEDIATE). That lock, not a mutex of one process, orders a
 * placement against a removal and a quota check against the rows other uploads commit, so the
 * invariant holds for several gplqd processes on one database as for the threads of one. */

/* Removes blob sha256 unless a committed row names it, under the write lock, so that no upload
 * can record a row for the file between the check and the unlink. Runs after the transaction
 * that dropped the row (or failed to add it) has ended. A failure keeps the file: an orphan
 * costs disk, a missing blob loses data. The handle's message is left as it was. */
static void blob_release(store *s, const char *data_dir, const char *sha256) {
    char msg[sizeof s->msg];
    memcpy(msg, s->msg, sizeof msg);
    if (store__tx_begin(s) == STORE_OK) {
        if (!store_blob_in_use(s, sha256)) blob_remove(data_dir, sha256);
        store__tx_end(s, STORE_OK, 0); /* nothing written: the rollback only releases the lock */
    }
    memcpy(s->msg, msg, sizeof msg);
}

/* The code of a blob file that could not be synced or placed, from its errno (blob.h): a
 * full disk passes once space is freed, as does, often, an I/O error. */
static int blob_fault(int errnum) {
    if (fs_is_full(errnum)) return STORE_EFULL;
    return errnum == EIO ? STORE_EIO : STORE_EDB;
}

int store_upload_commit(store *s, const char *data_dir, blob_writer *w, const store_upload *u,
                        json_t **out, int64_t *held) {
    *out = NULL;
    if (held) *held = 0;
    const char *owner = u->owner ? u->owner : "";
    char sha[65], err[512];
    /* The fsync, the slow part, before the lock. */
    if (blob_finish(w, sha, err, sizeof err)) return store__fail(s, blob_fault(errno), "%s", err);
    int64_t bytes = w->bytes;
    int rc = store__tx_begin(s);
    if (rc) {
        blob_abort(w);
        return rc;
    }
    /* The same bytes as a model the owner has are that model again: they hold nothing new,
     * so the limit does not apply. Anything else counts against the rows committed so far,
     * which, with the write lock held, are all the rows there will be until this one is in. */
    if (u->is_model) {
        rc = model_existing(s, owner, sha, out);
        if (rc == STORE_ENOTFOUND) rc = STORE_OK;
    }
    if (rc == STORE_OK && u->quota_owner && u->max_owner_bytes > 0) {
        int64_t h = 0;
        rc = store_owner_upload_bytes(s, u->quota_owner, &h);
        if (rc == STORE_OK && h + bytes > u->max_owner_bytes) {
            if (held) *held = h;
            rc = store__fail(
                s, STORE_ELIMIT,
                "owner '%s' holds %lld bytes of models and datasets; %lld more would pass "
                "the limit of %lld bytes per owner",
                u->quota_owner, (long long)h, (long long)bytes, (long long)u->max_owner_bytes);
        }
    }
    /* placed: the file may be in place (a failed blob_commit may have renamed it before
     * failing to sync its folder). */
    int placed = 0;
    if (rc == STORE_OK || rc == STORE_EEXISTS) {
        /* A model the owner has gets its file too: kept if present, put back if missing. */
        placed = 1;
        if (blob_commit(w, data_dir, sha, err, sizeof err)) {
            int code = blob_fault(errno);
            json_decref(*out);
            *out = NULL;
            rc = store__fail(s, code, "%s", err);
        }
    } else {
        blob_abort(w);
    }
    if (rc == STORE_OK && u->is_model) {
        rc = model_add(s, owner, u->name, sha, bytes, u->info, out);
    } else if (rc == STORE_OK) {
        char id[32];
        store_new_id(id, "d_");
        rc = dataset_add(s, id, owner, u->name, "upload", sha, bytes, u->info, out);
    }
    if (rc != STORE_OK) {
        store__tx_end(s, rc, 0);
        /* A file placed for a row that is not there: gone, unless another row names it. */
        if (placed && rc != STORE_EEXISTS) blob_release(s, data_dir, sha);
        return rc;
    }
    rc = store__tx_end(s, STORE_OK, 1);
    if (rc != STORE_OK) {
        json_decref(*out);
        *out = NULL;
        blob_release(s, data_dir, sha);
    }
    return rc;
}

int store_upload_delete(store *s, const char *data_dir, int is_model, const char *owner,
                        const char *id) {
    char sha[65] = "";
    int rc = is_model ? store_model_delete(s, owner, id, sha)
                      : store_dataset_delete(s, owner, id, sha);
    /* The row is gone for good; the file follows unless another row shares it. */
    if (rc == STORE_OK && sha[0]) blob_release(s, data_dir, sha);
    return rc;
}

/* ---- per-owner usage ---- */

int store_owner_upload_bytes(store *s, const char *owner, int64_t *bytes) {
    *bytes = 0;
    store__stmt *st =
        store__query(s,
                     "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM models WHERE owner = ?1)"
                     " + (SELECT COALESCE(SUM(bytes), 0) FROM datasets"
                     " WHERE owner = ?1 AND kind = 'upload')",
                     "s", owner ? owner : "");
    if (!st) return STORE_EDB;
    int rc = store__step(st) == STORE__ROW ? STORE_OK : store__db_fail(s);
    if (!rc) *bytes = store__col_int64(st, 0);
    store__reset(st);
    return rc;
}
