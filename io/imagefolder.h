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
 */
#ifndef GPLQ_IMAGEFOLDER_H
#define GPLQ_IMAGEFOLDER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "io/dataset.h"

typedef struct {
    int64_t max_images;     /* refuse archives with more (default 2,000,000) */
    int64_t max_pixels;     /* refuse an image with more pixels (default 50e6: decompression bombs) */
} imgf_limits;

void imgf_limits_default(imgf_limits *l);

/* Validates the archive at path. On success *summary (new, json_decref) is
 *   {"format": "imagefolder", "classes": [names...], "train": n, "val": n or 0,
 *    "per_class": {"train": [n...], "val": [n...]}}
 * Returns 0, or -1 with a message in err naming the offending member. */
int imgf_inspect(const char *path, const imgf_limits *lim, json_t **summary, char *err,
                 size_t errlen);

/* Decodes the archive into train and val (ds_free each) at channels x size x size.
 * val_fraction (e.g. 0.1) and seed pick the held-out images when the archive has no val/.
 * Returns 0 or -1 with err. */
int imgf_load(const char *path, const imgf_limits *lim, int channels, int size,
              double val_fraction, uint64_t seed, ds_set *train, ds_set *val, char *err,
              size_t errlen);

/* The packed cache: a versioned binary file holding train and val (header with magic, version,
 * shapes and a checksum of the header, then pixels and labels). Written atomically
 * (temp + rename). Reading rejects a file of another version or a truncated one with a message. */
int imgf_cache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                     size_t errlen);
int imgf_cache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen);

/* The eval transform's geometry for a w x h image at crop size: the resized dimensions
 * (*rw, *rh: the shorter side becomes floor(size / 0.875) = size * 8 / 7, the longer one
 * floor(that * long / short), as torchvision's Resize(int)) and the crop's top-left corner in
 * the resized image (round((r - size) / 2) with ties to even, as torchvision's CenterCrop). */
void imgf_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top);

/* The eval transform of one decoded image: src (h, w, c) interleaved 8-bit, c = 1 or 3 (the
 * model's channel count already), resized as imgf_eval_geometry says with PIL's antialiased
 * BILINEAR (a triangle filter whose support grows with the shrink factor; 22-bit fixed point,
 * horizontal pass first, rounded to 8 bits between the passes, exactly as Pillow), computing
 * only the cropped pixels, into dst (c, size, size) planar. Returns 0, or -1 when out of
 * memory. */
int imgf_transform(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);

/* The same transform, slow and obviously right: the full resize as two dense weight matrices
 * in double precision with no rounding between passes, then the crop. It defines what
 * imgf_transform computes; the two differ by at most 1 (imgf_transform rounds between passes).
 * Returns 0, or -1 when out of memory. */
int imgf_transform_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);

#endif
