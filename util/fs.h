/*
 * fs.h: making folders, for the daemon's data directory, the worker's job folders and the
 * client's --out: mkdir that accepts a folder already there, and mkdir -p. And the two things
 * every writer of the data dir needs when its disk fills up: telling "no space" apart from
 * other failures, and a small file written whole or not at all.
 */
#ifndef GPLQ_FS_H
#define GPLQ_FS_H

#include <stddef.h>

/* Creates the folder path (one level, mode 0755) unless it is one already.
 * 0, or -1 with errno set (ENOTDIR where a file stands in the way). */
int fs_mkdir(const char *path);
/* Creates path and its missing parents (mkdir -p).
 * 0, or -1 with errno set (ENOTDIR where a file stands in the way). */
int fs_mkdirs(const char *path);

/* 1 if errnum says the file system (or the user's quota on it) has no room: ENOSPC, EDQUOT.
 * Such a failure passes once space is freed, so callers retry it rather than give up. */
int fs_is_full(int errnum);
/* Writes n bytes of data to path whole or not at all: into path.tmp beside it, fsynced, then
 * renamed over path and the folder fsynced, so path names either its old bytes or all the new
 * ones, also after a crash. 0, or -1 with errno set (path.tmp removed). */
int fs_write_atomic(const char *path, const void *data, size_t n);

#endif
