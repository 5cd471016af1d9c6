/*
 * imagefolder.h: labelled image datasets uploaded as a tar (optionally gzip) of an image folder:
 *     train/<class>/<file>.{jpg,jpeg,png}   and optionally   val/<class>/<file>...
 * read with libarchive, decoded with libjpeg-turbo and libpng.
 *
 * Two steps, as the service uses them:
 *  - imgf_inspect (at upload): walks the whole archive and decodes every image header, so that
 *    a bad upload is refused with a message that names the member (path traversal, absolute
 *    paths, links, non-images, files outside train/ or val/, a class with no images, val/
 *    classes that train/ lacks, too many images) before anything is recorded.
 *  - imgf_load (at job time): decodes every image, converts to the model's channel count
 *    (RGB or gray), resizes the shorter side to size/0.875 (bilinear, antialiased when
 *    shrinking) and center-crops size x size, as timm's eval transform does, into ds_sets.
 *    Without val/, a seeded split holds out val_fraction of each class. The result is written
 *    to a cache file (imgf_cache_*) so a resumed job or the next job at the same size does not
 *    decode again.
 * Classes are the sorted folder names of train/; label i is the i-th name.
 *
 * The rules, as implemented (both functions walk the archive the same way and apply them all):
 *  - Any format and filter libarchive reads (tar, tar.gz, tar.xz, zip, ...). Member names may
 *    start with "./"; one top-level folder common to every image (mydata/train/...) is
 *    dropped, unless it is train or val itself.
 *  - Skipped silently: directories, and anything with a path component starting with '.'
 *    (.DS_Store, ._* resource forks, hidden folders), under __MACOSX/, or named Thumbs.db or
 *    desktop.ini (any case).
 *  - Refused, naming the member: absolute paths, ".." components, symbolic and hard links,
 *    devices, FIFOs, sockets, names not ending in .jpg, .jpeg or .png (any case), content
 *    that is neither a JPEG nor a PNG by its magic bytes (whatever the extension says; a
 *    PNG named .jpg is fine) or whose header does not decode, CMYK JPEGs, images over
 *    max_pixels, the image after the first max_images, files outside train/ and val/, files
 *    directly in train/ or val/, deeper nesting than <split>/<class>/<file>, the same path
 *    twice. Also refused: no images, no train/, an empty train/ class folder, a val/ class
 *    that train/ lacks, a class name that is not UTF-8.
 *  - Refused as soon as the member that passes them is seen, before its data is read: more
 *    than max_members members, a name longer than max_name_bytes, an archive that unpacks to
 *    more than unpack_allowance + unpack_ratio x its size (a member counts with the size its
 *    header declares, so a bomb is refused before it is inflated).
 *  - imgf_inspect reads headers only; image data that is cut short or corrupt is found by
 *    imgf_load, which refuses it the same way.
 *  - Messages are valid UTF-8 without control characters (hostile bytes become '?').
 * Decoding is timm's loader's (PIL's convert("RGB") or convert("L")): io/imgdecode.h says how.
 * EXIF orientation is ignored, as timm's eval transform ignores it.
 * Thread safety: no global state; the walk switches its own thread's locale to C.UTF-8 (so
 * libarchive can convert UTF-8 member names) and restores it.
 */
#ifndef GPLQ_IMAGEFOLDER_H
#define GPLQ_IMAGEFOLDER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "io/dataset.h"

#define IMGF_MAX_SIZE 4096 /* the largest crop size: beyond, a caller's mistake, not a dataset */

/* The limits of an archive, each refused with a message that names it (fill with
 * imgf_limits_default, then change what differs). The last four bound
 * the walk itself against archive bombs (issue 15: a 350 KB tar.gz of folders with huge
 * names took the inspector to 300 MB; a member of 4 GiB of zeros, skipped as hidden, was
 * inflated in full). */
typedef struct {
    int64_t max_images;     /* refuse archives with more (default 2,000,000) */
    int64_t max_pixels;     /* refuse an image with more pixels (default 50e6: decompression bombs) */
    int64_t max_members;    /* members of any kind, skipped ones too (default 2 per image, for
                             * the ._ file macOS adds beside each, plus 200,000 folders) */
    int64_t max_name_bytes; /* a member's name (default 1024, as Linux's longest path is 4096 and
                             * an image folder's paths are a few dozen bytes) */
    int64_t unpack_allowance; /* bytes any archive may unpack to, members' data, tar headers and */
    int64_t unpack_ratio;     /* skipped members included, plus unpack_ratio bytes for each byte
                               * of the archive (defaults 256 MiB and 20: JPEG and PNG hardly
                               * compress, so a tar.gz of them unpacks to 1-4 times its size) */
} imgf_limits;

void imgf_limits_default(imgf_limits *l);

/* Validates the archive at path (lim NULL: the defaults). On success *summary (new,
 * json_decref) is
 *   {"format": "imagefolder", "classes": [names...], "train": n, "val": n or 0,
 *    "per_class": {"train": [n...], "val": [n...]}}
 * with classes sorted by strcmp and per_class lists in that order. "val" counts the images in
 * val/: 0 (and per_class.val all zeros) without val/, whose held-out split happens at load.
 * Returns 0, or -1 with a message in err naming the offending member (*summary NULL). */
int imgf_inspect(const char *path, const imgf_limits *lim, json_t **summary, char *err,
                 size_t errlen);

/* Decodes the archive into train and val (new: ds_free each; zeroed on failure) at
 * channels (1 or 3) x size x size (size in [1, 4096]); lim NULL: the defaults. Both sets have
 * num_classes = the number of train/ classes, and each is ordered by label, then by path within
 * a class, whatever the order inside the archive.
 * With val/ (at least one image in it), val is val/ and val_fraction and seed are unused.
 * Without it, val_fraction (in [0, 1), e.g. 0.1) of each class is held out: k = round(
 * val_fraction * n_c) images (half away from zero), at least 1 when n_c >= 2 and val_fraction
 * > 0, never all n_c; which ones is a Fisher-Yates shuffle of the class's images in path order
 * (ds_shuffle), one rng seeded with seed drawing for the classes in label order: the same
 * archive contents and seed give the same split. val_fraction 0 gives an empty val (n = 0,
 * pixels NULL, shape fields set).
 * Returns 0 or -1 with err. */
int imgf_load(const char *path, const imgf_limits *lim, int channels, int size,
              double val_fraction, uint64_t seed, ds_set *train, ds_set *val, char *err,
              size_t errlen);

/* The packed cache of train and val: the same as imgcache_write and imgcache_read, which
 * io/imgcache.h describes (write: the sets borrowed, the file replaced atomically; read: train
 * and val new, ds_free each, zeroed on failure; 0, or -1 with err naming the problem). */
int imgf_cache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                     size_t errlen);
int imgf_cache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen);

/* The eval transform of one image, as imgf_load applies it: the same as resize_eval_geometry,
 * resize_eval and resize_eval_ref, which io/resize.h describes (c = 1 or 3; dst (c, size,
 * size) planar; 0 or -1). */
void imgf_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top);
int imgf_transform(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);
int imgf_transform_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);

#endif
