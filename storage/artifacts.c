/*
 * artifacts.c: the artifacts table, the files a job exported (see store.h). A row names a file
 * under the job's folder and its SHA-256; the rows go with their job (ON DELETE CASCADE), and
 * every read first checks that the caller may see the job.
 */
#include "storage/store_int.h"

/* ---- artifacts ---- */

static json_t *artifact_row(store__stmt *st) {
    return json_pack("{s:o, s:o, s:o}", "name", store__col_str(st, 0), "bytes",
                     store__col_int(st, 1), "sha256", store__col_str(st, 2));
}

int store_artifact_add(store *s, const char *job_id, const char *name, int64_t bytes,
                       const char *sha256) {
    int rc = store__tx_begin(s);
    if (rc) return rc;
    rc = store__job_visible(s, NULL, job_id);
    /* A retried job exports again: the newer file replaces the row of the same name. */
    if (!rc)
        rc = store__exec(s,
                         "INSERT INTO artifacts (job_id, name, bytes, sha256, created_ms)"
                         " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, name) DO UPDATE SET"
                         " bytes = excluded.bytes, sha256 = excluded.sha256,"
                         " created_ms = excluded.created_ms",
                         "ssIsI", job_id, name, bytes, sha256, store_now_ms());
    return store__tx_end(s, rc, rc == STORE_OK);
}

int store_artifact_list(store *s, const char *owner, const char *job_id, json_t **out_array) {
    *out_array = NULL;
    int rc = store__job_visible(s, owner, job_id);
    if (rc) return rc;
    return store__query_all(
        s, artifact_row, out_array,
        "SELECT name, bytes, sha256 FROM artifacts WHERE job_id = ?1 ORDER BY name", "s", job_id);
}

int store_artifact_get(store *s, const char *owner, const char *job_id, const char *name,
                       json_t **out) {
    *out = NULL;
    int rc = store__job_visible(s, owner, job_id);
    if (rc) return rc;
    rc = store__query_one(
        s, artifact_row, out,
        "SELECT name, bytes, sha256 FROM artifacts WHERE job_id = ?1 AND name = ?2", "ss", job_id,
        name);
    if (rc == STORE_ENOTFOUND) store__fail(s, rc, "job %s has no artifact named %s", job_id, name);
    return rc;
}
