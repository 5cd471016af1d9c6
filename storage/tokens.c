/*
 * tokens.c: the tokens table, the API's credentials (see store.h). Only a token's SHA-256 is
 * stored; the id it starts with finds its row, and the caller compares the hashes (api/auth.h).
 */
#include "storage/store_int.h"

#include <string.h>

/* ---- tokens ---- */

static json_t *token_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:b, s:o, s:o}", "id", store__col_str(st, 0), "name",
                     store__col_str(st, 1), "admin", (int)store__col_int64(st, 2), "created_at",
                     store__col_time(st, 3), "revoked_at", store__col_time(st, 4));
}

#define TOKEN_COLS "id, name, admin, created_ms, revoked_ms"

/* The insert, inside the caller's transaction; first: only into an empty table. */
static int token_insert_tx(store *s, const char *id, const char *name, int admin,
                           const char *hash_hex, int first, json_t **out) {
    int rc = STORE_OK;
    if (first) {
        int64_t n = 0;
        rc = store_token_count(s, &n);
        if (!rc && n > 0) rc = store__fail(s, STORE_EEXISTS, "the database has tokens already");
        if (rc) return rc;
    }
    rc = store__exec(
        s, "INSERT INTO tokens (id, name, admin, hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        "ssisI", id, name, admin ? 1 : 0, hash_hex, store_now_ms());
    if (rc == STORE_EDB && s->ops->unique_violation(s))
        rc = store__fail(s, STORE_ECONFLICT, "token id %s is taken", id);
    if (!rc)
        rc = store__query_one(s, token_row, out, "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?1",
                              "s", id);
    return rc;
}

static int token_insert(store *s, const char *id, const char *name, int admin,
                        const char *hash_hex, int first, json_t **out) {
    *out = NULL;
    if (!id || !*id || !name || !*name || !hash_hex || strlen(hash_hex) != 64)
        return store__fail(s, STORE_EINVAL, "a token needs an id, a name and a SHA-256 hash");
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc = token_insert_tx(s, id, name, admin, hash_hex, first, out);
    return store__tx_end_out(s, rc, out);
}

int store_token_insert(store *s, const char *id, const char *name, int admin,
                       const char *hash_hex, json_t **out) {
    return token_insert(s, id, name, admin, hash_hex, 0, out);
}

int store_token_insert_first(store *s, const char *id, const char *name, int admin,
                             const char *hash_hex, json_t **out) {
    return token_insert(s, id, name, admin, hash_hex, 1, out);
}

int store_token_list(store *s, json_t **out_array) {
    return store__query_all(s, token_row, out_array,
                            "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_ms, rowid", "");
}

int store_token_revoke(store *s, const char *id, json_t **out) {
    *out = NULL;
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc = store__query_one(s, token_row, out, "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?1", "s",
                          id);
    if (rc == STORE_ENOTFOUND) rc = store__fail(s, rc, "there is no token %s", id);
    if (!rc && !json_is_null(json_object_get(*out, "revoked_at")))
        rc = store__fail(s, STORE_ECONFLICT, "token %s is already revoked", id);
    json_decref(*out);
    *out = NULL;
    if (!rc)
        rc = store__exec(s, "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1", "sI", id,
                         store_now_ms());
    if (!rc)
        rc = store__query_one(s, token_row, out, "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?1",
                              "s", id);
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_token_find(store *s, const char *id, char hash_hex[65], char *name, size_t namelen,
                     int *admin) {
    store__stmt *st = store__query(s,
                                    "SELECT hash, name, admin FROM tokens"
                                    " WHERE id = ?1 AND revoked_ms IS NULL",
                                    "s", id);
    if (!st) return STORE_EDB;
    int rc = STORE_OK, step = store__step(st);
    if (step == STORE__ROW) {
        store__col_copy(st, 0, hash_hex, 65);
        store__col_copy(st, 1, name, namelen);
        *admin = (int)store__col_int64(st, 2);
    } else {
        rc = step == STORE__DONE ? store__fail(s, STORE_ENOTFOUND, "no live token %s", id)
                                 : store__db_fail(s);
    }
    store__reset(st);
    return rc;
}

int store_token_count(store *s, int64_t *n) {
    *n = 0;
    store__stmt *st = store__query(s, "SELECT COUNT(*) FROM tokens", "");
    if (!st) return STORE_EDB;
    int rc = store__step(st) == STORE__ROW ? STORE_OK : store__db_fail(s);
    if (!rc) *n = store__col_int64(st, 0);
    store__reset(st);
    return rc;
}
