/*
 * fs.c: see fs.h.
 */
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_mkdir(const char *path) {
    if (mkdir(path, 0755) == 0) return 0;
    if (errno != EEXIST) return -1;
    /* EEXIST also means a file of that name: only a folder will do. */
    struct stat st;
    if (stat(path, &st)) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int fs_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (fs_mkdir(buf)) return -1;
        *p = '/';
    }
    return fs_mkdir(buf);
}

int fs_is_full(int errnum) { return errnum == ENOSPC || errnum == EDQUOT; }

int fs_write_atomic(const char *path, const void *data, size_t n) {
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    const char *p = data;
    int ok = 1;
    while (ok && n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) ok = 0;
        else p += k, n -= (size_t)k;
    }
    /* The bytes are on disk before the rename shows them; close reports what a delayed
     * write-back (NFS) found. */
    if (ok && fsync(fd)) ok = 0;
    int e = errno;
    if (close(fd) && ok) ok = 0, e = errno;
    if (ok && rename(tmp, path)) ok = 0, e = errno;
    if (!ok) {
        unlink(tmp);
        errno = e;
        return -1;
    }
    /* The rename is durable once its folder is synced. */
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
