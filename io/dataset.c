/*
 * dataset.c: the built-in Fashion-MNIST loader (gzip IDX) and batch assembly.
 */
#include "io/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Reads a whole gzip file into a new buffer (caller frees). */
static uint8_t *gz_slurp(const char *path, size_t *len, char *err, size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno ? errno : ENOENT));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int e;
            snprintf(err, errlen, "cannot read %s: %s", path, gzerror(f, &e));
            free(buf);
            gzclose(f);
            return NULL;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    if (!buf) snprintf(err, errlen, "out of memory reading %s", path);
    *len = n;
    return buf;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* IDX: magic 0x00000803 (u8, 3 dims) for images, 0x00000801 for labels, then big-endian dims. */
static int load_idx_pair(ds_set *d, const char *images, const char *labels, char *err,
                         size_t errlen) {
    memset(d, 0, sizeof *d);
    size_t ni, nl;
    uint8_t *bi = gz_slurp(images, &ni, err, errlen);
    if (!bi) return -1;
    uint8_t *bl = gz_slurp(labels, &nl, err, errlen);
    if (!bl) { free(bi); return -1; }
    int rc = -1;
    if (ni < 16 || be32(bi) != 0x803) {
        snprintf(err, errlen, "%s: not an IDX image file (magic)", images);
        goto out;
    }
    if (nl < 8 || be32(bl) != 0x801) {
        snprintf(err, errlen, "%s: not an IDX label file (magic)", labels);
        goto out;
    }
    uint32_t n = be32(bi + 4), h = be32(bi + 8), w = be32(bi + 12);
    if (n == 0 || n > (1u << 24) || h == 0 || w == 0 || h > 4096 || w > 4096 ||
        ni != 16 + (size_t)n * h * w) {
        snprintf(err, errlen, "%s: header says %u images of %ux%u but the file has %zu bytes",
                 images, n, h, w, ni);
        goto out;
    }
    if (be32(bl + 4) != n || nl != 8 + (size_t)n) {
        snprintf(err, errlen, "%s: %u labels for %u images", labels, be32(bl + 4), n);
        goto out;
    }
    d->n = (int)n;
    d->channels = 1;
    d->height = (int)h;
    d->width = (int)w;
    d->pixels = malloc((size_t)n * h * w);
    d->labels = malloc(sizeof(int32_t) * n);
    if (!d->pixels || !d->labels) {
        snprintf(err, errlen, "out of memory for %u images", n);
        goto out;
    }
    memcpy(d->pixels, bi + 16, (size_t)n * h * w);
    int maxl = 0;
    for (uint32_t i = 0; i < n; i++) {
        d->labels[i] = bl[8 + i];
        if (d->labels[i] > maxl) maxl = d->labels[i];
    }
    d->num_classes = maxl + 1;
    rc = 0;
out:
    free(bi);
    free(bl);
    if (rc) ds_free(d);
    return rc;
}

int ds_open_builtin(const char *name, const char *dir, ds_set *train, ds_set *test, char *err,
                    size_t errlen) {
    if (train) memset(train, 0, sizeof *train);
    if (test) memset(test, 0, sizeof *test);
    if (strcmp(name, "fashion-mnist")) {
        snprintf(err, errlen, "unknown dataset '%s' (built in: fashion-mnist)", name);
        return -1;
    }
    if (!dir) dir = getenv("GPLQ_FMNIST_DIR");
    if (!dir) dir = DS_FMNIST_DIR;
    char pi[4096], pl[4096];
    if (train) {
        snprintf(pi, sizeof pi, "%s/train-images-idx3-ubyte.gz", dir);
        snprintf(pl, sizeof pl, "%s/train-labels-idx1-ubyte.gz", dir);
        if (load_idx_pair(train, pi, pl, err, errlen)) return -1;
    }
    if (test) {
        snprintf(pi, sizeof pi, "%s/t10k-images-idx3-ubyte.gz", dir);
        snprintf(pl, sizeof pl, "%s/t10k-labels-idx1-ubyte.gz", dir);
        if (load_idx_pair(test, pi, pl, err, errlen)) {
            if (train) ds_free(train);
            return -1;
        }
    }
    /* Fashion-MNIST has 10 classes; a half that lacks the top label must not shrink that. */
    if (train && train->num_classes < 10) train->num_classes = 10;
    if (test && test->num_classes < 10) test->num_classes = 10;
    return 0;
}

void ds_free(ds_set *d) {
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void ds_truncate(ds_set *d, int n) {
    if (n > 0 && n < d->n) d->n = n;
}

void ds_batch(const ds_set *d, const int *idx, int B, float *out, const float *mean,
              const float *std, const ds_augment *aug, rng_t *rng) {
    int C = d->channels, H = d->height, W = d->width;
    size_t img = (size_t)C * H * W;
    for (int b = 0; b < B; b++) {
        const uint8_t *src = d->pixels + (size_t)idx[b] * img;
        float *dst = out + (size_t)b * img;
        /* crop offset (dy, dx) in [-pad, pad]: output (y, x) reads input (y + dy, x + dx), zero
         * outside; the draws happen in a fixed order so a seed fixes the whole stream */
        int dy = 0, dx = 0, flip = 0;
        if (aug && aug->pad > 0) {
            dy = (int)rng_below(rng, 2 * aug->pad + 1) - aug->pad;
            dx = (int)rng_below(rng, 2 * aug->pad + 1) - aug->pad;
        }
        if (aug && aug->hflip) flip = rng_below(rng, 2);
        for (int c = 0; c < C; c++) {
            float s = 1.0f / (255.0f * std[c]), z = -mean[c] / std[c];
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
                    float v = 0.0f;
                    if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                        v = src[((size_t)c * H + sy) * W + sx];
                    dst[((size_t)c * H + y) * W + x] = v * s + z;
                }
        }
    }
}

void ds_augment_skip(const ds_augment *aug, rng_t *rng, int64_t n) {
    /* ds_batch's draws per image: two crop offsets, one flip; rng_below takes one value each */
    int per = aug ? (aug->pad > 0 ? 2 : 0) + (aug->hflip ? 1 : 0) : 0;
    for (int64_t i = 0; i < n * per; i++) rng_next(rng);
}

void ds_shuffle(int *perm, int n, rng_t *rng) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(rng, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int ds_permute(ds_set *d, uint64_t seed) {
    size_t img = (size_t)d->channels * d->height * d->width;
    int *perm = malloc(sizeof(int) * (d->n ? d->n : 1));
    uint8_t *px = malloc(img * (d->n ? d->n : 1));
    int32_t *lb = malloc(sizeof(int32_t) * (d->n ? d->n : 1));
    if (!perm || !px || !lb) {
        free(perm); free(px); free(lb);
        return -1;
    }
    rng_t r;
    rng_seed(&r, seed ^ 0x5ab5e7ULL);
    ds_shuffle(perm, d->n, &r);
    for (int i = 0; i < d->n; i++) {
        memcpy(px + i * img, d->pixels + (size_t)perm[i] * img, img);
        lb[i] = d->labels[perm[i]];
    }
    free(d->pixels);
    free(d->labels);
    d->pixels = px;
    d->labels = lb;
    free(perm);
    return 0;
}
