/*
 * blob.c: the content-addressed file store under DATA_DIR/blobs (see blob.h).
 *
 * A blob's path names its SHA-256, so the rename into place is the commit point: before it the
 * bytes are a temp file nobody references, after it they are complete and synced. The order
 * is write, fsync the file, rename, fsync the folder; without the last step a power cut could
 * forget the rename even though the database row naming the blob survived.
 */
#include "storage/blob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"

/* Leaves errno as it was: callers tell a full disk from other failures by it (blob.h). */
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    errno = e;
}

/* A rename or a new entry is durable only once its folder is synced. */
static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* 64 lowercase hex digits: the only names that may become a path (a name from elsewhere must
 * not walk out of the blob folder with "../"). */
static int is_sha_hex(const char *s) {
    if (!s) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == '\0';
}

int blob_init(const char *data_dir, char *err, size_t errlen) {
    char path[4096];
    if (fs_mkdir(data_dir)) {
        set_err(err, errlen, "cannot create the data folder %s: %s", data_dir, strerror(errno));
        return -1;
    }
    const char *subs[] = {"blobs", "tmp"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", data_dir, subs[i]);
        if (fs_mkdir(path)) {
            set_err(err, errlen, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int blob_sweep_tmp(const char *data_dir) {
    char dir[4096], path[4096 + 256];
    snprintf(dir, sizeof dir, "%s/tmp", data_dir);
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) n++;
    }
    closedir(d);
    return n;
}

int blob_begin(blob_writer *w, const char *data_dir, char *err, size_t errlen) {
    w->fd = -1;
    w->bytes = 0;
    w->flushed = 0;
    w->sha256_hex[0] = '\0';
    sha256_init(&w->sha);
    int len = snprintf(w->tmp_path, sizeof w->tmp_path, "%s/tmp/blob-XXXXXX", data_dir);
    if (len < 0 || (size_t)len >= sizeof w->tmp_path) {
        w->tmp_path[0] = '\0';
        errno = ENAMETOOLONG;
        set_err(err, errlen, "the data folder's path is too long: %s", data_dir);
        return -1;
    }
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        set_err(err, errlen, "cannot create a temp file in %s/tmp: %s", data_dir, strerror(errno));
        w->tmp_path[0] = '\0';
        return -1;
    }
    return 0;
}

int blob_write(blob_writer *w, const void *data, size_t n, char *err, size_t errlen) {
    if (w->fd < 0) {
        errno = EBADF;
        set_err(err, errlen, "the blob is not open for writing");
        return -1;
    }
    sha256_update(&w->sha, data, n);
    const char *p = data;
    while (n) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            set_err(err, errlen, "cannot write %s: %s", w->tmp_path, strerror(errno));
            return -1;
        }
        p += k;
        n -= (size_t)k;
        w->bytes += k;
    }
    /* Start the disk write-back of each full 8 MB as it arrives (asynchronous: it does not
     * wait), so the fsync of blob_commit finds little left to do and a large upload is
     * answered at about the disk's speed rather than receive time plus a whole-file flush.
     * A hint only: where it is not supported, fsync does all the work, as before. */
    const int64_t step = 8 << 20;
    if (w->bytes - w->flushed >= step) {
        int64_t len = (w->bytes - w->flushed) / step * step;
        (void)sync_file_range(w->fd, w->flushed, len, SYNC_FILE_RANGE_WRITE);
        w->flushed += len;
    }
    return 0;
}

int blob_finish(blob_writer *w, char sha256_hex_out[65], char *err, size_t errlen) {
    if (w->fd < 0) {
        errno = EBADF;
        set_err(err, errlen, "the blob is not open for writing");
        blob_abort(w);
        return -1;
    }
    uint8_t digest[32];
    sha256_final(&w->sha, digest);
    sha256_hex(digest, w->sha256_hex);
    if (sha256_hex_out) memcpy(sha256_hex_out, w->sha256_hex, sizeof w->sha256_hex);
    if (fsync(w->fd)) {
        int e = errno;
        set_err(err, errlen, "cannot sync %s: %s", w->tmp_path, strerror(e));
        blob_abort(w);
        errno = e;
        return -1;
    }
    close(w->fd);
    w->fd = -1;
    return 0;
}

int blob_commit(blob_writer *w, const char *data_dir, char sha256_hex_out[65], char *err,
                size_t errlen) {
    /* Open: finish it now. Closed: finished before, unless it never began or is already
     * committed or dropped (no temp file left, which blob_abort leaves as it was). */
    if (w->fd >= 0) {
        if (blob_finish(w, NULL, err, errlen)) return -1;
    } else if (w->tmp_path[0] == '\0' || w->sha256_hex[0] == '\0') {
        errno = EBADF;
        set_err(err, errlen, "the blob is not open for writing");
        blob_abort(w);
        return -1;
    }
    memcpy(sha256_hex_out, w->sha256_hex, sizeof w->sha256_hex);

    char dir[4096], path[4096 + 128];
    snprintf(dir, sizeof dir, "%s/blobs/%.2s", data_dir, sha256_hex_out);
    if (fs_mkdir(dir)) {
        int e = errno;
        set_err(err, errlen, "cannot create the blob folder %s: %s", dir, strerror(e));
        blob_abort(w);
        errno = e;
        return -1;
    }
    blob_path(path, sizeof path, data_dir, sha256_hex_out);
    struct stat st;
    if (stat(path, &st) == 0) {
        /* The same bytes are already stored (the name is their hash): keep the old file, whose
         * inode other readers may hold open, and drop the copy. */
        blob_abort(w);
        return 0;
    }
    if (rename(w->tmp_path, path)) {
        int e = errno;
        set_err(err, errlen, "cannot move %s to %s: %s", w->tmp_path, path, strerror(e));
        blob_abort(w);
        errno = e;
        return -1;
    }
    w->tmp_path[0] = '\0';
    /* Sync the two-hex folder (the new name) and blobs/ (the folder may itself be new). */
    char top[4096 + 16];
    snprintf(top, sizeof top, "%s/blobs", data_dir);
    if (fsync_dir(dir) || fsync_dir(top)) {
        set_err(err, errlen, "cannot sync the folder of %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void blob_abort(blob_writer *w) {
    /* tmp_path is empty on a writer that never began or is already finished; checking it
     * (not only fd) keeps a zero-initialized writer from closing fd 0. */
    if (w->tmp_path[0] == '\0') {
        w->fd = -1;
        return;
    }
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    unlink(w->tmp_path);
    w->tmp_path[0] = '\0';
}

void blob_path(char *out, size_t n, const char *data_dir, const char *sha256_hex_in) {
    if (!is_sha_hex(sha256_hex_in)) {
        /* Not a blob name: an empty path, which every open() refuses. */
        if (n) out[0] = '\0';
        return;
    }
    snprintf(out, n, "%s/blobs/%.2s/%s", data_dir, sha256_hex_in, sha256_hex_in);
}

int blob_remove(const char *data_dir, const char *sha256_hex_in) {
    char path[4096 + 128];
    blob_path(path, sizeof path, data_dir, sha256_hex_in);
    if (!path[0] || unlink(path)) return -1;
    return 0;
}
