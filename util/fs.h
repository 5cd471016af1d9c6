/*
 * fs.h: making folders, for the daemon's data directory, the worker's job folders and the
 * client's --out: mkdir that accepts a folder already there, and mkdir -p.
 */
#ifndef GPLQ_FS_H
#define GPLQ_FS_H

/* Creates the folder path (one level, mode 0755) unless it is one already.
 * 0, or -1 with errno set (ENOTDIR where a file stands in the way). */
int fs_mkdir(const char *path);
/* Creates path and its missing parents (mkdir -p).
 * 0, or -1 with errno set (ENOTDIR where a file stands in the way). */
int fs_mkdirs(const char *path);

#endif
