/*
 * dataset.h: labelled image sets in memory, and batches of normalized, optionally augmented
 * images drawn from them.
 *
 * A dataset is raw 8-bit pixels (n, channels, height, width) and int labels: compact (60k
 * Fashion-MNIST images are 47 MB) and decoded once, so epochs never decode again. Batches are
 * made on demand: crop/flip in pixel space, then (x / 255 - mean) / std per channel.
 * The built-in "fashion-mnist" reads Debian's dataset-fashion-mnist (gzip IDX files); the
 * service adds uploaded image folders behind the same struct.
 */
#ifndef GPLQ_DATASET_H
#define GPLQ_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "engine/rng.h"

#define DS_FMNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    int n;              /* images */
    int channels, height, width;
    int num_classes;
    uint8_t *pixels;    /* (n, channels, height, width), owned */
    int32_t *labels;    /* (n), owned, each in [0, num_classes) */
} ds_set;

/* Opens the built-in dataset name ("fashion-mnist") into train and test (either may be NULL to
 * skip that half; free each with ds_free). dir overrides the folder (NULL: $GPLQ_FMNIST_DIR if
 * set, else DS_FMNIST_DIR). */
int ds_open_builtin(const char *name, const char *dir, ds_set *train, ds_set *test, char *err,
                    size_t errlen);
void ds_free(ds_set *d);
/* Keeps only the first n images (n <= d->n); used for --train-subset and --eval-subset. */
void ds_truncate(ds_set *d, int n);

typedef struct {
    int pad;            /* random crop: pad by this many zero pixels, crop back at random; 0 = off */
    int hflip;          /* random horizontal flip with probability 1/2 */
} ds_augment;

/* Writes images idx[0..B) of d as normalized floats (B, channels, H, W) into out, where
 * H = W = size must equal the dataset's size (the service's resize path comes later).
 * aug (optional) and rng (needed with aug) give the augmentation. */
void ds_batch(const ds_set *d, const int *idx, int B, float *out, const float *mean,
              const float *std, const ds_augment *aug, rng_t *rng);
/* Advances rng past the augmentation draws of n images, exactly as ds_batch makes them (a
 * fixed number per image): a rank making images [lo, lo + cnt) of a global batch skips lo
 * images' draws first, then the rest of the batch's after, and so draws what one process
 * making the whole batch draws for them. */
void ds_augment_skip(const ds_augment *aug, rng_t *rng, int64_t n);

/* Reorders d's images (pixels and labels together) by a permutation drawn from seed, so
 * that its first n images (ds_truncate) are a fair sample even when d came sorted by class.
 * Returns 0, or -1 if out of memory (d unchanged). */
int ds_permute(ds_set *d, uint64_t seed);

/* A random permutation of [0, n) into perm (n ints). */
void ds_shuffle(int *perm, int n, rng_t *rng);

#endif
