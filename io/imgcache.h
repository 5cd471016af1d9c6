/*
 * imgcache.h: the packed dataset cache, a versioned binary file (.gds) holding the train and
 * val sets imgf_load decoded, so that a resumed job or the next job at the same image size
 * reads them back instead of decoding the archive again. The byte layout is in imgcache.c.
 */
#ifndef GPLQ_IMGCACHE_H
#define GPLQ_IMGCACHE_H

#include <stddef.h>

#include "io/dataset.h"

/* Writes train and val (borrowed) to path: a header with magic, version, shapes and a checksum
 * of the header, then pixels and labels with a checksum of their own. Atomic: a temp file next
 * to path, fsync, rename, so readers see the old file or the whole new one. Refuses sets whose
 * shape is not a dataset's. Returns 0, or -1 with a message in err. */
int imgcache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                   size_t errlen);

/* Reads path into train and val (new: ds_free each; zeroed on failure). Rejects, naming the
 * problem, a wrong magic, another version, a corrupt header, shapes that do not match the file
 * size (truncated or trailing bytes), a payload checksum mismatch or a label out of range.
 * Returns 0, or -1 with a message in err. */
int imgcache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen);

#endif
