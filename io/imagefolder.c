/*
 * imagefolder.c: uploaded image-folder datasets (see imagefolder.h), the part that ties the
 * modules below together: imgf_inspect's summary, and imgf_load's seeded held-out split and
 * ordering of the decoded images. Each other job is a module of its own:
 *     imgwalk    the archive walk, and the rules one member can break on its own
 *     imglayout  the layout rules that need every name (train/<class>/, val/<class>/, classes)
 *     imgdecode  JPEG and PNG decoding straight from the archive stream
 *     resize     timm's eval transform, with its slow reference
 *     imgcache   the packed cache file
 *     imgmsg     messages that are safe to put in JSON
 */
#include "io/imagefolder.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/imgcache.h"
#include "io/imgmsg.h"
#include "io/imglayout.h"
#include "io/imgwalk.h"
#include "io/resize.h"

void imgf_limits_default(imgf_limits *l) {
    l->max_images = 2000000;
    l->max_pixels = 50000000;
    l->max_members = 2 * l->max_images + 200000;
    l->max_name_bytes = 1024;
    l->unpack_allowance = (int64_t)256 << 20;
    l->unpack_ratio = 20;
}

/* imagefolder.h's names for io/resize's eval transform. */
void imgf_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top) {
    resize_eval_geometry(w, h, size, rw, rh, left, top);
}

int imgf_transform(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    return resize_eval(src, w, h, c, size, dst);
}

int imgf_transform_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    return resize_eval_ref(src, w, h, c, size, dst);
}

static const imgf_limits *limits_or_default(const imgf_limits *lim, imgf_limits *buf) {
    if (lim) return lim;
    imgf_limits_default(buf);
    return buf;
}

/* A walk held to the limits l (borrowed), headers only until the caller says otherwise. */
static imgwalk walk_with(const imgf_limits *l) {
    return (imgwalk){.max_images = l->max_images, .max_pixels = l->max_pixels,
                     .max_members = l->max_members, .max_name_bytes = l->max_name_bytes,
                     .unpack_allowance = l->unpack_allowance, .unpack_ratio = l->unpack_ratio};
}

int imgf_inspect(const char *path, const imgf_limits *lim, json_t **summary, char *err,
                 size_t errlen) {
    imgf_limits defl;
    const imgf_limits *lims = limits_or_default(lim, &defl);
    imgwalk w = walk_with(lims);
    imglayout l;
    *summary = NULL;
    if (imgwalk_run(path, &w, err, errlen) || imglayout_resolve(&w, &l, err, errlen)) {
        imgwalk_free(&w);
        return -1;
    }
    /* Class names were checked to be UTF-8, so json_string cannot refuse them. */
    json_t *s = json_object(), *classes = json_array(), *per = json_object();
    json_t *tr = json_array(), *va = json_array();
    for (int i = 0; i < l.nclasses; i++) {
        json_array_append_new(classes, json_string(l.classes[i]));
        json_array_append_new(tr, json_integer(l.count[0][i]));
        json_array_append_new(va, json_integer(l.count[1][i]));
    }
    json_object_set_new(s, "format", json_string("imagefolder"));
    json_object_set_new(s, "classes", classes);
    json_object_set_new(s, "train", json_integer(l.n[0]));
    json_object_set_new(s, "val", json_integer(l.n[1]));
    json_object_set_new(per, "train", tr);
    json_object_set_new(per, "val", va);
    json_object_set_new(s, "per_class", per);
    int complete = json_array_size(json_object_get(s, "classes")) == (size_t)l.nclasses &&
                   json_array_size(json_object_get(per, "val")) == (size_t)l.nclasses &&
                   json_object_size(s) == 5 && json_object_size(per) == 2;
    imglayout_free(&l);
    imgwalk_free(&w);
    if (!complete) {
        json_decref(s);
        imgmsg_err(err, errlen, "out of memory");
        return -1;
    }
    *summary = s;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading. */

/* Number of a class's n images held out for val: round(fraction * n), at least 1 when n >= 2,
 * and never all of them (a class must keep a training image). */
static int64_t held_out(double fraction, int64_t n) {
    if (fraction <= 0 || n < 2) return 0;
    int64_t k = llround(fraction * (double)n);
    if (k < 1) k = 1;
    if (k > n - 1) k = n - 1;
    return k;
}

int imgf_load(const char *path, const imgf_limits *lim, int channels, int size,
              double val_fraction, uint64_t seed, ds_set *train, ds_set *val, char *err,
              size_t errlen) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (channels != 1 && channels != 3) {
        imgmsg_err(err, errlen, "channels must be 1 or 3, not %d", channels);
        return -1;
    }
    if (size < 1 || size > IMGF_MAX_SIZE) {
        imgmsg_err(err, errlen, "image size must be in [1, %d], not %d", IMGF_MAX_SIZE, size);
        return -1;
    }
    if (!(val_fraction >= 0 && val_fraction < 1)) {
        imgmsg_err(err, errlen, "val_fraction must be in [0, 1), not %g", val_fraction);
        return -1;
    }
    imgf_limits defl, lims = *limits_or_default(lim, &defl);
    if (lims.max_images > INT_MAX) lims.max_images = INT_MAX; /* ds_set counts in int */
    imgwalk w = walk_with(&lims);
    w.decode = 1, w.channels = channels, w.size = size;
    imglayout l;
    if (imgwalk_run(path, &w, err, errlen) || imglayout_resolve(&w, &l, err, errlen)) {
        imgwalk_free(&w);
        return -1;
    }
    int rc = -1;
    int64_t n = w.nfiles, *src_of = NULL;
    int *perm = NULL;
    uint8_t *tmp = NULL;
    size_t per = (size_t)channels * size * size;
    if (!l.n[1]) {
        /* No val/: hold out part of each class. Classes in label order, each image list in
         * path order, one generator: the split depends on the seed and the names only. */
        rng_t rng;
        rng_seed(&rng, seed);
        int64_t maxc = 0;
        for (int c = 0; c < l.nclasses; c++) maxc = l.count[0][c] > maxc ? l.count[0][c] : maxc;
        if (!(perm = malloc((size_t)maxc * sizeof *perm))) goto oom;
        for (int64_t start = 0; start < n;) {
            int c = w.files[start].label;
            int64_t nc = l.count[0][c], k = held_out(val_fraction, nc);
            ds_shuffle(perm, (int)nc, &rng);
            for (int64_t j = 0; j < k; j++) w.files[start + perm[j]].split = 1;
            l.count[0][c] -= k;
            l.count[1][c] += k;
            l.n[0] -= k;
            l.n[1] += k;
            start += nc;
        }
        imglayout_sort(w.files, n);
    }
    /* Put the decoded images in that order, in place (cycle by cycle, one image of scratch),
     * so that a big dataset does not need two copies. */
    src_of = malloc((size_t)n * sizeof *src_of);
    tmp = malloc(per);
    if (!src_of || !tmp) goto oom;
    for (int64_t d = 0; d < n; d++) src_of[d] = w.files[d].slot;
    for (int64_t start = 0; start < n; start++) {
        if (src_of[start] < 0 || src_of[start] == start) continue;
        memcpy(tmp, w.images + (size_t)start * per, per);
        int64_t cur = start;
        for (;;) {
            int64_t next = src_of[cur];
            src_of[cur] = -1;
            if (next == start) {
                memcpy(w.images + (size_t)cur * per, tmp, per);
                break;
            }
            memcpy(w.images + (size_t)cur * per, w.images + (size_t)next * per, per);
            cur = next;
        }
    }
    ds_set *sets[2] = {train, val};
    for (int sp = 0; sp < 2; sp++) {
        ds_set *d = sets[sp];
        *d = (ds_set){.n = (int)l.n[sp], .channels = channels, .height = size, .width = size,
                      .num_classes = l.nclasses};
        if (!d->n) continue;
        if (!(d->labels = malloc((size_t)d->n * sizeof *d->labels))) goto oom;
        int64_t off = sp ? l.n[0] : 0;
        for (int i = 0; i < d->n; i++) d->labels[i] = w.files[off + i].label;
    }
    if (val->n) {
        if (!(val->pixels = malloc((size_t)val->n * per))) goto oom;
        memcpy(val->pixels, w.images + (size_t)l.n[0] * per, (size_t)val->n * per);
    }
    /* train keeps the walk's buffer, shrunk to its images */
    uint8_t *p = realloc(w.images, (size_t)train->n * per);
    train->pixels = p ? p : w.images;
    w.images = NULL;
    rc = 0;
    goto out;
oom:
    imgmsg_err(err, errlen, "out of memory loading %lld images of %dx%dx%d", (long long)n, channels,
               size, size);
out:
    if (rc) {
        ds_free(train);
        ds_free(val);
    }
    free(perm);
    free(src_of);
    free(tmp);
    imglayout_free(&l);
    imgwalk_free(&w);
    return rc;
}

/* The cache is io/imgcache's; these are imagefolder.h's names for it. */
int imgf_cache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                     size_t errlen) {
    return imgcache_write(path, train, val, err, errlen);
}

int imgf_cache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen) {
    return imgcache_read(path, train, val, err, errlen);
}
