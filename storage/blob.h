/*
 * blob.h: the content-addressed file store under DATA_DIR/blobs.
 *
 * An uploaded model or dataset is streamed into a temporary file under DATA_DIR/tmp while its
 * SHA-256 is computed, then fsynced and renamed to DATA_DIR/blobs/<first 2 hex>/<64 hex>, so a
 * blob path only ever names complete bytes: a cut-off upload leaves at most a temp file, which
 * blob_abort (or blob_sweep_tmp at start-up) removes. The same bytes twice are one file.
 *
 * Errors: -1 with a message in err (it names paths: for the log, not for clients) and errno
 * saying why, so that a caller can tell a full disk (util/fs.h's fs_is_full) from the rest.
 */
#ifndef GPLQ_BLOB_H
#define GPLQ_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "util/sha256.h"

typedef struct {
    int fd;
    char tmp_path[4096];
    sha256_ctx sha;
    int64_t bytes;
    int64_t flushed;   /* bytes whose write-back to disk has been started (blob_write) */
    char sha256_hex[65]; /* the bytes' name, once blob_finish has run ("" before) */
} blob_writer;

/* Creates DATA_DIR (one level), DATA_DIR/blobs and DATA_DIR/tmp if missing. 0 or -1 with err. */
int blob_init(const char *data_dir, char *err, size_t errlen);
/* Removes every leftover temp file (start-up: uploads that a crash cut off). Returns the count
 * (0 if there is no tmp folder), -1 if the folder cannot be read. Call it before anything else
 * (workers included) writes blobs: it cannot tell a live upload from a dead one. */
int blob_sweep_tmp(const char *data_dir);

/* Starts a blob: a new temp file. 0 or -1 with err (w is then closed). */
int blob_begin(blob_writer *w, const char *data_dir, char *err, size_t errlen);
/* Appends n bytes (hashing them). 0 or -1 with err and errno (ENOSPC etc.). */
int blob_write(blob_writer *w, const void *data, size_t n, char *err, size_t errlen);
/* Ends the writing: the hash into w->sha256_hex (and sha256_hex, which may be NULL), fsync
 * and close. The temp file stays until blob_commit moves it or blob_abort drops it; syncing
 * first keeps the slow part out of whatever lock the caller takes for the rename (store.h's
 * store_upload_commit). 0, or -1 with err and the temp file dropped. */
int blob_finish(blob_writer *w, char sha256_hex[65], char *err, size_t errlen);
/* Finishes (blob_finish, unless already done), renames into place (kept if already
 * present), fsyncs the folder. sha256_hex receives the 64-hex name. 0 or -1 with err; either
 * way w is closed. */
int blob_commit(blob_writer *w, const char *data_dir, char sha256_hex[65], char *err,
                size_t errlen);
/* Drops the temp file; safe on a closed or never-begun writer (fd < 0, or an all-zero
 * blob_writer: an empty tmp_path means nothing to drop). */
void blob_abort(blob_writer *w);

/* The path of blob sha256_hex into out; "" if sha256_hex is not 64 lowercase hex digits (a
 * name that could walk out of the blob folder never becomes a path). */
void blob_path(char *out, size_t n, const char *data_dir, const char *sha256_hex);
/* Unlinks the blob (when no row references it any more). 0, or -1 if it did not exist (or the
 * name is not a hash). */
int blob_remove(const char *data_dir, const char *sha256_hex);

#endif
