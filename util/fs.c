/*
 * fs.c: see fs.h.
 */
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

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
