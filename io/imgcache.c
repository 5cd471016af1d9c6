/*
 * imgcache.c: the packed dataset cache file (see imgcache.h).
 */
#include "io/imgcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/imagefolder.h" /* IMGF_MAX_SIZE */
#include "io/imgmsg.h"

/* The file, little-endian throughout:
 *    0  char[8]  magic "GPLQDSET"
 *    8  u32      version (IMGCACHE_VERSION)
 *   12  u32      header size in bytes (IMGCACHE_HEADER)
 *   16  i32 x 5  train: n, channels, height, width, num_classes
 *   36  i32 x 5  val: the same
 *   56  u64      payload size in bytes
 *   64  u32      CRC-32 of the payload
 *   68  u32      CRC-32 of bytes 0..67
 *   72  payload: train pixels (n, c, h, w) u8, train labels (n) i32, val pixels, val labels */

#define IMGCACHE_MAGIC "GPLQDSET"
#define IMGCACHE_VERSION 1
#define IMGCACHE_HEADER 72

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* zlib's crc32 takes an unsigned length: feed it in pieces. */
static uint32_t crc_update(uint32_t crc, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, k);
        b += k;
        n -= k;
    }
    return crc;
}

static size_t set_pixel_bytes(const ds_set *d) {
    return (size_t)d->n * d->channels * d->height * d->width;
}

/* The labels as little-endian bytes, a chunk at a time, into the CRC and (f non-NULL) the file. */
static int labels_out(const ds_set *d, FILE *f, uint32_t *crc) {
    uint8_t buf[4096];
    for (int i = 0; i < d->n;) {
        int k = 0;
        for (; k < (int)sizeof buf / 4 && i < d->n; k++, i++) put32(buf + 4 * k, (uint32_t)d->labels[i]);
        *crc = crc_update(*crc, buf, (size_t)k * 4);
        if (f && fwrite(buf, 4, (size_t)k, f) != (size_t)k) return -1;
    }
    return 0;
}

static int shape_valid(const ds_set *d) {
    return d->n >= 0 && (d->channels == 1 || d->channels == 3) && d->height >= 1 &&
           d->height <= IMGF_MAX_SIZE && d->width >= 1 && d->width <= IMGF_MAX_SIZE &&
           d->num_classes >= 1;
}

int imgcache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                   size_t errlen) {
    const ds_set *sets[2] = {train, val};
    for (int sp = 0; sp < 2; sp++)
        if (!shape_valid(sets[sp]) || (sets[sp]->n && (!sets[sp]->pixels || !sets[sp]->labels))) {
            imgmsg_err(err, errlen, "cannot cache the %s set: its shape (%d, %d, %d, %d) with %d "
                       "classes is not a dataset", sp ? "val" : "train", sets[sp]->n,
                       sets[sp]->channels, sets[sp]->height, sets[sp]->width,
                       sets[sp]->num_classes);
            return -1;
        }
    uint8_t h[IMGCACHE_HEADER] = {0};
    memcpy(h, IMGCACHE_MAGIC, 8);
    put32(h + 8, IMGCACHE_VERSION);
    put32(h + 12, IMGCACHE_HEADER);
    uint64_t payload = 0;
    uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
    for (int sp = 0; sp < 2; sp++) {
        const ds_set *d = sets[sp];
        int32_t f[5] = {d->n, d->channels, d->height, d->width, d->num_classes};
        for (int i = 0; i < 5; i++) put32(h + 16 + 20 * sp + 4 * i, (uint32_t)f[i]);
        payload += set_pixel_bytes(d) + (uint64_t)d->n * 4;
        crc = crc_update(crc, d->pixels, set_pixel_bytes(d));
        labels_out(d, NULL, &crc);
    }
    put64(h + 56, payload);
    put32(h + 64, crc);
    put32(h + 68, (uint32_t)crc32(0, h, 68));

    /* A temp file next to the target, renamed over it: readers see the old file or the whole
     * new one, never half of it. */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        imgmsg_err(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        imgmsg_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    FILE *f = fdopen(fd, "wb");
    int ok = f != NULL && fwrite(h, 1, sizeof h, f) == sizeof h;
    for (int sp = 0; ok && sp < 2; sp++) {
        uint32_t dummy = 0;
        size_t nb = set_pixel_bytes(sets[sp]);
        ok = (!nb || fwrite(sets[sp]->pixels, 1, nb, f) == nb) && !labels_out(sets[sp], f, &dummy);
    }
    int e = errno;
    if (ok && (fflush(f) || fsync(fileno(f)))) {
        ok = 0;
        e = errno;
    }
    if (f ? fclose(f) : close(fd)) {
        if (ok) e = errno;
        ok = 0;
    }
    if (ok && rename(tmp, path)) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        imgmsg_err(err, errlen, "cannot write %s: %s", path, strerror(e ? e : EIO));
        unlink(tmp);
    }
    free(tmp);
    return ok ? 0 : -1;
}

int imgcache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    FILE *f = fopen(path, "rb");
    if (!f) {
        imgmsg_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    uint8_t h[IMGCACHE_HEADER];
    uint8_t *lab = NULL;
    long long fsize = -1;
    if (!fseeko(f, 0, SEEK_END)) fsize = ftello(f);
    if (fsize < 0 || fseeko(f, 0, SEEK_SET)) {
        imgmsg_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    size_t got = fread(h, 1, sizeof h, f);
    if (got < 8 || memcmp(h, IMGCACHE_MAGIC, 8)) {
        imgmsg_err(err, errlen, "%s: not a gplq dataset cache (wrong magic%s)", path,
                   got < 8 ? ": the file is shorter than its magic" : "");
        goto out;
    }
    if (got < 12) {
        imgmsg_err(err, errlen, "%s: truncated: %zu bytes, shorter than the header", path, got);
        goto out;
    }
    if (get32(h + 8) != IMGCACHE_VERSION) {
        imgmsg_err(err, errlen, "%s: dataset cache version %u, this build reads version %d", path,
                   get32(h + 8), IMGCACHE_VERSION);
        goto out;
    }
    if (got < sizeof h) {
        imgmsg_err(err, errlen, "%s: truncated: %zu bytes, shorter than the %d-byte header", path,
                   got, IMGCACHE_HEADER);
        goto out;
    }
    if (get32(h + 68) != (uint32_t)crc32(0, h, 68)) {
        imgmsg_err(err, errlen, "%s: header checksum mismatch (the header is corrupt)", path);
        goto out;
    }
    if (get32(h + 12) != IMGCACHE_HEADER) {
        imgmsg_err(err, errlen, "%s: header size %u, version %d has %d", path, get32(h + 12),
                   IMGCACHE_VERSION, IMGCACHE_HEADER);
        goto out;
    }
    ds_set *sets[2] = {train, val};
    uint64_t payload = 0;
    for (int sp = 0; sp < 2; sp++) {
        ds_set *d = sets[sp];
        d->n = (int32_t)get32(h + 16 + 20 * sp);
        d->channels = (int32_t)get32(h + 20 + 20 * sp);
        d->height = (int32_t)get32(h + 24 + 20 * sp);
        d->width = (int32_t)get32(h + 28 + 20 * sp);
        d->num_classes = (int32_t)get32(h + 32 + 20 * sp);
        if (!shape_valid(d)) {
            imgmsg_err(err, errlen, "%s: the %s set's shape (%d, %d, %d, %d) with %d classes is "
                       "invalid", path, sp ? "val" : "train", d->n, d->channels, d->height,
                       d->width, d->num_classes);
            goto out;
        }
        payload += (uint64_t)set_pixel_bytes(d) + (uint64_t)d->n * 4;
    }
    if (get64(h + 56) != payload) {
        imgmsg_err(err, errlen, "%s: payload size %llu does not match the shapes (%llu)", path,
                   (unsigned long long)get64(h + 56), (unsigned long long)payload);
        goto out;
    }
    if ((unsigned long long)fsize != IMGCACHE_HEADER + payload) {
        imgmsg_err(err, errlen, "%s: %s: the file has %lld bytes, the header says %llu", path,
                   (unsigned long long)fsize < IMGCACHE_HEADER + payload ? "truncated"
                                                                        : "trailing bytes",
                   fsize, (unsigned long long)(IMGCACHE_HEADER + payload));
        goto out;
    }
    uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
    for (int sp = 0; sp < 2; sp++) {
        ds_set *d = sets[sp];
        if (!d->n) continue;
        size_t nb = set_pixel_bytes(d);
        d->pixels = malloc(nb);
        d->labels = malloc((size_t)d->n * sizeof *d->labels);
        free(lab);
        lab = malloc((size_t)d->n * 4);
        if (!d->pixels || !d->labels || !lab) {
            imgmsg_err(err, errlen, "%s: out of memory for %zu bytes of images", path, nb);
            goto out;
        }
        if (fread(d->pixels, 1, nb, f) != nb || fread(lab, 4, (size_t)d->n, f) != (size_t)d->n) {
            imgmsg_err(err, errlen, "%s: truncated while reading the %s set", path,
                       sp ? "val" : "train");
            goto out;
        }
        crc = crc_update(crc, d->pixels, nb);
        crc = crc_update(crc, lab, (size_t)d->n * 4);
        for (int i = 0; i < d->n; i++) {
            d->labels[i] = (int32_t)get32(lab + 4 * (size_t)i);
            if (d->labels[i] < 0 || d->labels[i] >= d->num_classes) {
                imgmsg_err(err, errlen, "%s: %s label %d is %d, outside [0, %d)", path,
                        sp ? "val" : "train", i, d->labels[i], d->num_classes);
                goto out;
            }
        }
    }
    if (crc != get32(h + 64)) {
        imgmsg_err(err, errlen, "%s: payload checksum mismatch (the images or labels are corrupt)",
                   path);
        goto out;
    }
    rc = 0;
out:
    free(lab);
    fclose(f);
    if (rc) {
        ds_free(train);
        ds_free(val);
    }
    return rc;
}
