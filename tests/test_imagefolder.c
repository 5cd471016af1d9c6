/*
 * test_imagefolder.c: uploaded image-folder datasets. Every archive and image is made here,
 * with libarchive's writer, libjpeg and libpng, in a fresh temp folder: the summary, labels and
 * channel conversions, the eval transform against its reference and against gradients whose
 * resized values are known in closed form, the seeded held-out split, every refusal (each must
 * name the member), and the cache file (bit-exact round trip, truncated, wrong version).
 * GPLQ_IMGF_BENCH=N times N 500x375 JPEGs through imgf_load at 224 (default 48).
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <ftw.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "io/imagefolder.h"
#include "tests/test.h"

/* ---- a temp folder for the test's files, removed at exit ---- */

static char tmpdir[256];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_tmpdir(void) {
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tmp_path(char *buf, size_t len, const char *name) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/gplq-imgf-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(rm_tmpdir);
    }
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

/* ---- images encoded in memory ---- */

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

/* px (h, w, comps) in color space cs (JCS_GRAYSCALE, JCS_RGB or JCS_CMYK). */
static blob jpeg_encode(const uint8_t *px, int w, int h, int comps, J_COLOR_SPACE cs, int quality) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &out, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return (blob){out, len};
}

static void png_grow(png_structp png, png_bytep data, size_t n) {
    blob *b = png_get_io_ptr(png);
    b->data = realloc(b->data, b->len + n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void png_noflush(png_structp png) { (void)png; }

/* rows: h rows of packed samples as PNG stores them (16-bit big-endian, depth < 8 packed). */
static blob png_encode(const uint8_t *rows, int w, int h, int ctype, int depth,
                       const png_color *pal, int npal) {
    blob b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_set_write_fn(png, &b, png_grow, png_noflush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    png_write_info(png, info);
    int ch = ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_PALETTE ? 1
             : ctype == PNG_COLOR_TYPE_GRAY_ALPHA                        ? 2
             : ctype == PNG_COLOR_TYPE_RGB                               ? 3
                                                                         : 4;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    for (int y = 0; y < h; y++) png_write_row(png, rows + (size_t)y * rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return b;
}

static blob solid_png(int w, int h, uint8_t r, uint8_t g, uint8_t bl) {
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = bl;
    blob b = png_encode(px, w, h, PNG_COLOR_TYPE_RGB, 8, NULL, 0);
    free(px);
    return b;
}

static blob solid_gray_png(int w, int h, uint8_t v) {
    uint8_t *px = malloc((size_t)w * h);
    memset(px, v, (size_t)w * h);
    blob b = png_encode(px, w, h, PNG_COLOR_TYPE_GRAY, 8, NULL, 0);
    free(px);
    return b;
}

static blob solid_jpeg(int w, int h, uint8_t r, uint8_t g, uint8_t bl) {
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++) px[3 * i] = r, px[3 * i + 1] = g, px[3 * i + 2] = bl;
    blob b = jpeg_encode(px, w, h, 3, JCS_RGB, 95);
    free(px);
    return b;
}

static blob text_blob(const char *s) {
    blob b = {malloc(strlen(s) + 1), strlen(s)};
    memcpy(b.data, s, b.len);
    return b;
}

/* ---- archives ---- */

enum { M_FILE, M_DIR, M_SYMLINK, M_HARDLINK, M_CHARDEV };

typedef struct {
    const char *name;
    blob data;          /* M_FILE contents (freed by free_members) */
    int kind;
    const char *target; /* links */
} member;

static void write_archive(const char *path, int gzip, const member *m, int n) {
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    /* Names that are not ASCII are stored as raw bytes, as GNU tar does (libarchive's pax
     * writer cannot translate them in the C locale the tests run in). */
    int binary = 0;
    for (int i = 0; i < n; i++)
        for (const unsigned char *p = (const unsigned char *)m[i].name; *p; p++) binary |= *p >= 0x80;
    if (binary) archive_write_set_options(a, "hdrcharset=BINARY");
    if (gzip) archive_write_add_filter_gzip(a);
    if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
        fprintf(stderr, "  cannot write %s: %s\n", path, archive_error_string(a));
        exit(2);
    }
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        if (binary) archive_entry_set_pathname(e, m[i].name);
        else archive_entry_set_pathname_utf8(e, m[i].name);
        archive_entry_set_mtime(e, 1700000000, 0);
        switch (m[i].kind) {
        case M_FILE:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_size(e, (la_int64_t)m[i].data.len);
            break;
        case M_DIR:
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, 0755);
            break;
        case M_SYMLINK:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_perm(e, 0777);
            archive_entry_set_symlink(e, m[i].target);
            break;
        case M_HARDLINK:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_hardlink(e, m[i].target);
            break;
        case M_CHARDEV:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_rdev(e, 0x0103);
            break;
        }
        if (archive_write_header(a, e) != ARCHIVE_OK) {
            fprintf(stderr, "  cannot add %s: %s\n", m[i].name, archive_error_string(a));
            exit(2);
        }
        if (m[i].kind == M_FILE && m[i].data.len)
            archive_write_data(a, m[i].data.data, m[i].data.len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

/* A zip stores UTF-8 names; libarchive needs a UTF-8 locale to write them, so this thread
 * takes one while writing (the reader must cope on its own in the C locale). */
static void write_zip_utf8(const char *path, const member *m, int n) {
    locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0), prev = uselocale(loc);
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    archive_write_open_filename(a, path);
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname_utf8(e, m[i].name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)m[i].data.len);
        CHECK(archive_write_header(a, e) == ARCHIVE_OK);
        archive_write_data(a, m[i].data.data, m[i].data.len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    uselocale(prev);
    freelocale(loc);
}

static void free_members(member *m, int n) {
    for (int i = 0; i < n; i++) free(m[i].data.data);
}

#define NMEMB(m) ((int)(sizeof(m) / sizeof(m)[0]))

static char *summary_text(const json_t *s) {
    return json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS);
}

/* ---- tests ---- */

TEST(inspect_counts_classes_and_skips_metadata) {
    char path[512];
    tmp_path(path, sizeof path, "basic.tar");
    member m[] = {
        {"train/", {0}, M_DIR, 0},
        {"train/cat/", {0}, M_DIR, 0},
        {"train/cat/a.jpg", solid_jpeg(20, 10, 200, 10, 10), M_FILE, 0},
        {"train/cat/b.JPEG", solid_jpeg(10, 20, 10, 200, 10), M_FILE, 0},
        {"train/cat/._a.jpg", text_blob("resource fork"), M_FILE, 0},
        {"train/cat/c.png", solid_png(16, 16, 1, 2, 3), M_FILE, 0},
        {"./train/dog/x.png", solid_png(8, 9, 4, 5, 6), M_FILE, 0},
        {"train/dog/y.jpg", solid_jpeg(30, 30, 9, 9, 9), M_FILE, 0},
        {".DS_Store", text_blob("finder"), M_FILE, 0},
        {"train/.hidden/notes.txt", text_blob("x"), M_FILE, 0},
        {"__MACOSX/train/cat/._a.jpg", text_blob("x"), M_FILE, 0},
        {"train/dog/Thumbs.db", text_blob("x"), M_FILE, 0},
        {"val/cat/", {0}, M_DIR, 0},
        {"val/cat/v.png", solid_png(5, 5, 7, 7, 7), M_FILE, 0},
        {"val/dog/w.png", solid_png(5, 5, 8, 8, 8), M_FILE, 0},
    };
    write_archive(path, 0, m, NMEMB(m));
    free_members(m, NMEMB(m));
    json_t *s = NULL;
    char err[512] = "";
    int rc = imgf_inspect(path, NULL, &s, err, sizeof err);
    CHECK_MSG(rc == 0, "inspect: %s", err);
    if (rc) return;
    char *txt = summary_text(s);
    const char *want = "{\"classes\":[\"cat\",\"dog\"],\"format\":\"imagefolder\",\"per_class\":"
                       "{\"train\":[3,2],\"val\":[1,1]},\"train\":5,\"val\":2}";
    CHECK_MSG(!strcmp(txt, want), "summary %s\n  expected %s", txt, want);
    free(txt);
    json_decref(s);
}

TEST(inspect_top_folder_gzip_and_strcmp_order) {
    char path[512];
    tmp_path(path, sizeof path, "top.tar.gz");
    member m[] = {
        {"mydata/", {0}, M_DIR, 0},
        {"mydata/train/b/1.png", solid_png(4, 4, 1, 1, 1), M_FILE, 0},
        {"mydata/train/a-b/1.png", solid_png(4, 4, 1, 1, 1), M_FILE, 0},
        {"mydata/train/a-b/2.png", solid_png(4, 4, 1, 1, 1), M_FILE, 0},
        {"mydata/train/a/1.jpeg", solid_jpeg(4, 4, 1, 1, 1), M_FILE, 0},
        {"mydata/train/B/1.PNG", solid_png(4, 4, 1, 1, 1), M_FILE, 0},
        {"mydata/train/\xc3\xa9t\xc3\xa9/1.png", solid_png(4, 4, 1, 1, 1), M_FILE, 0},
    };
    write_archive(path, 1, m, NMEMB(m));
    free_members(m, NMEMB(m));
    json_t *s = NULL;
    char err[512] = "";
    int rc = imgf_inspect(path, NULL, &s, err, sizeof err);
    CHECK_MSG(rc == 0, "inspect: %s", err);
    if (rc) return;
    char *txt = summary_text(s);
    const char *want = "{\"classes\":[\"B\",\"a\",\"a-b\",\"b\",\"\xc3\xa9t\xc3\xa9\"],\"format\":"
                       "\"imagefolder\",\"per_class\":{\"train\":[1,1,2,1,1],\"val\":[0,0,0,0,0]"
                       "},\"train\":6,\"val\":0}";
    CHECK_MSG(!strcmp(txt, want), "summary %s\n  expected %s", txt, want);
    free(txt);
    json_decref(s);
}

TEST(zip_with_utf8_names_in_the_c_locale) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "utf8.zip");
    member m[] = {
        {"data/train/\xc3\xa9t\xc3\xa9/a.png", solid_png(6, 6, 1, 2, 3), M_FILE, 0},
        {"data/train/chien/b.jpg", solid_jpeg(6, 6, 1, 2, 3), M_FILE, 0},
        {"data/val/chien/c.png", solid_png(6, 6, 1, 2, 3), M_FILE, 0},
    };
    write_zip_utf8(path, m, NMEMB(m));
    free_members(m, NMEMB(m));
    json_t *s = NULL;
    int rc = imgf_inspect(path, NULL, &s, err, sizeof err);
    CHECK_MSG(rc == 0, "inspect: %s", err);
    if (rc) return;
    char *txt = summary_text(s);
    const char *want = "{\"classes\":[\"chien\",\"\xc3\xa9t\xc3\xa9\"],\"format\":\"imagefolder\","
                       "\"per_class\":{\"train\":[1,1],\"val\":[1,0]},\"train\":2,\"val\":1}";
    CHECK_MSG(!strcmp(txt, want), "summary %s\n  expected %s", txt, want);
    free(txt);
    json_decref(s);
}

static int pixel(const ds_set *d, int i, int ch, int y, int x) {
    return d->pixels[(((size_t)i * d->channels + ch) * d->height + y) * d->width + x];
}

/* Every pixel of channel ch of image i is within tol of v. */
static int solid(const ds_set *d, int i, int ch, int v, int tol) {
    for (int y = 0; y < d->height; y++)
        for (int x = 0; x < d->width; x++)
            if (abs(pixel(d, i, ch, y, x) - v) > tol) return 0;
    return 1;
}

static double luma(double r, double g, double b) { return 0.299 * r + 0.587 * g + 0.114 * b; }

/* The conversions: labels in class order, files in name order; then each source kind at 3 and
 * at 1 channel. */
static void make_kinds_archive(const char *path) {
    uint8_t gray[33 * 47];
    memset(gray, 100, sizeof gray);
    uint8_t idx[12 * 7];
    memset(idx, 1, sizeof idx); /* every pixel palette entry 1 */
    png_color pal[2] = {{0, 0, 0}, {10, 200, 30}};
    uint8_t deep[9 * 6 * 6];   /* 16-bit RGB, big-endian samples 0x1234, 0xABCD, 0x00FF */
    for (int i = 0; i < 9 * 6; i++) {
        uint8_t s[6] = {0x12, 0x34, 0xAB, 0xCD, 0x00, 0xFF};
        memcpy(deep + 6 * i, s, 6);
    }
    uint8_t rgba[10 * 10 * 4];
    for (int i = 0; i < 100; i++) rgba[4 * i] = 10, rgba[4 * i + 1] = 20, rgba[4 * i + 2] = 30, rgba[4 * i + 3] = 0;
    uint8_t bits[5 * 2]; /* 1-bit gray, 5 rows of 9 pixels: all white */
    memset(bits, 0xFF, sizeof bits);
    member m[] = {
        {"train/red/a.png", solid_png(40, 30, 255, 0, 0), M_FILE, 0},
        {"train/red/b.jpg", solid_jpeg(40, 30, 255, 0, 0), M_FILE, 0},
        {"train/gray/g.jpg", jpeg_encode(gray, 33, 47, 1, JCS_GRAYSCALE, 95), M_FILE, 0},
        {"train/gray/h.png", png_encode(bits, 9, 5, PNG_COLOR_TYPE_GRAY, 1, NULL, 0), M_FILE, 0},
        {"train/pal/p.png", png_encode(idx, 12, 7, PNG_COLOR_TYPE_PALETTE, 8, pal, 2), M_FILE, 0},
        {"train/deep/d.png", png_encode(deep, 9, 6, PNG_COLOR_TYPE_RGB, 16, NULL, 0), M_FILE, 0},
        {"train/alpha/t.png", png_encode(rgba, 10, 10, PNG_COLOR_TYPE_RGB_ALPHA, 8, NULL, 0), M_FILE, 0},
        {"val/red/r.png", solid_png(50, 20, 255, 0, 0), M_FILE, 0},
    };
    write_archive(path, 0, m, NMEMB(m));
    free_members(m, NMEMB(m));
}

TEST(load_labels_and_channel_conversions) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "kinds.tar");
    make_kinds_archive(path);
    ds_set tr, va;
    /* classes: alpha 0, deep 1, gray 2, pal 3, red 4; files in name order within each */
    int32_t want_labels[7] = {0, 1, 2, 2, 3, 4, 4};
    int rc = imgf_load(path, NULL, 3, 16, 0.5, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == 0, "load: %s", err);
    if (rc) return;
    CHECK(tr.n == 7 && va.n == 1 && tr.num_classes == 5 && va.num_classes == 5);
    CHECK(tr.channels == 3 && tr.height == 16 && tr.width == 16 && va.height == 16);
    for (int i = 0; i < 7 && tr.n == 7; i++) CHECK_MSG(tr.labels[i] == want_labels[i], "label %d", i);
    CHECK(va.labels[0] == 4);
    /* alpha dropped */
    CHECK(solid(&tr, 0, 0, 10, 0) && solid(&tr, 0, 1, 20, 0) && solid(&tr, 0, 2, 30, 0));
    /* 16-bit: the high byte */
    CHECK(solid(&tr, 1, 0, 0x12, 0) && solid(&tr, 1, 1, 0xAB, 0) && solid(&tr, 1, 2, 0x00, 0));
    /* gray JPEG replicated; 1-bit gray expanded (white) */
    for (int ch = 0; ch < 3; ch++) CHECK(solid(&tr, 2, ch, 100, 1) && solid(&tr, 3, ch, 255, 0));
    /* palette */
    CHECK(solid(&tr, 4, 0, 10, 0) && solid(&tr, 4, 1, 200, 0) && solid(&tr, 4, 2, 30, 0));
    /* red PNG exactly, red JPEG within JPEG's error */
    CHECK(solid(&tr, 5, 0, 255, 0) && solid(&tr, 5, 1, 0, 0) && solid(&tr, 5, 2, 0, 0));
    CHECK(solid(&tr, 6, 0, 255, 2) && solid(&tr, 6, 1, 0, 2) && solid(&tr, 6, 2, 0, 2));
    CHECK(solid(&va, 0, 0, 255, 0) && solid(&va, 0, 1, 0, 0));
    ds_free(&tr);
    ds_free(&va);

    rc = imgf_load(path, NULL, 1, 16, 0.5, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == 0, "load gray: %s", err);
    if (rc) return;
    CHECK(tr.n == 7 && tr.channels == 1 && va.channels == 1);
    CHECK(solid(&tr, 0, 0, (int)lround(luma(10, 20, 30)), 1));
    CHECK(solid(&tr, 1, 0, (int)lround(luma(0x12, 0xAB, 0)), 1));
    CHECK(solid(&tr, 2, 0, 100, 1) && solid(&tr, 3, 0, 255, 0));
    CHECK(solid(&tr, 4, 0, (int)lround(luma(10, 200, 30)), 1));
    CHECK_MSG(solid(&tr, 5, 0, 76, 1) && solid(&tr, 6, 0, 76, 1) && solid(&va, 0, 0, 76, 1),
              "red to gray: %d %d %d", pixel(&tr, 5, 0, 0, 0), pixel(&tr, 6, 0, 0, 0),
              pixel(&va, 0, 0, 0, 0));
    ds_free(&tr);
    ds_free(&va);
}

TEST(geometry_is_torchvision_resize_and_center_crop) {
    int rw, rh, l, t;
    imgf_eval_geometry(500, 375, 224, &rw, &rh, &l, &t);
    CHECK(rw == 341 && rh == 256 && l == 58 && t == 16); /* round(58.5) = 58: ties to even */
    imgf_eval_geometry(375, 500, 224, &rw, &rh, &l, &t);
    CHECK(rw == 256 && rh == 341 && l == 16 && t == 58);
    imgf_eval_geometry(300, 200, 224, &rw, &rh, &l, &t);
    CHECK(rw == 384 && rh == 256 && l == 80 && t == 16);
    imgf_eval_geometry(40, 30, 56, &rw, &rh, &l, &t);
    CHECK(rw == 85 && rh == 64 && l == 14 && t == 4); /* round(14.5) = 14 */
    imgf_eval_geometry(28, 28, 28, &rw, &rh, &l, &t);
    CHECK(rw == 32 && rh == 32 && l == 2 && t == 2);
    imgf_eval_geometry(23, 17, 7, &rw, &rh, &l, &t);
    CHECK(rw == 10 && rh == 8 && l == 2 && t == 0); /* round(1.5) = 2 */
}

/* A linear ramp stays a linear ramp under a normalized symmetric filter, so away from the
 * borders the resized value at output o is the input coordinate of its centre:
 * (o + 0.5) * in / out - 0.5. R = x, G = y, B = 255 - x; shrink by 2.5 (250x160 at 56: resized
 * to 100x64, crop at (22, 4)) puts every value at .25 or .75, so rounding is unambiguous. */
TEST(gradient_center_crop_is_exact) {
    int w = 250, h = 160, size = 56;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)x, p[1] = (uint8_t)y, p[2] = (uint8_t)(255 - x);
        }
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "gradient.tar");
    member m[] = {{"train/g/ramp.png", png_encode(px, w, h, PNG_COLOR_TYPE_RGB, 8, NULL, 0), M_FILE, 0}};
    write_archive(path, 0, m, 1);
    free_members(m, 1);
    ds_set tr, va;
    int rc = imgf_load(path, NULL, 3, size, 0, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == 0, "load: %s", err);
    uint8_t *ref = malloc((size_t)3 * size * size);
    CHECK(imgf_transform_ref(px, w, h, 3, size, ref) == 0);
    int bad = 0, badref = 0;
    for (int i = 0; i < size && !rc; i++)
        for (int j = 0; j < size; j++) {
            double gx = (22 + j + 0.5) * 2.5 - 0.5, gy = (4 + i + 0.5) * 2.5 - 0.5;
            int want[3] = {(int)lround(gx), (int)lround(gy), (int)lround(255 - gx)};
            for (int ch = 0; ch < 3; ch++) {
                bad += pixel(&tr, 0, ch, i, j) != want[ch];
                badref += ref[((size_t)ch * size + i) * size + j] != want[ch];
            }
        }
    CHECK_MSG(bad == 0 && badref == 0, "%d load and %d reference pixels off the ramp", bad, badref);
    if (!rc) {
        ds_free(&tr);
        ds_free(&va);
    }
    /* Enlarging (40x30 at 56: 85x64, crop at (14, 4)): plain bilinear, same closed form. */
    w = 40, h = 30;
    uint8_t *up = malloc((size_t)w * h), *out = malloc((size_t)size * size);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) up[y * w + x] = (uint8_t)(6 * x + y);
    CHECK(imgf_transform_ref(up, w, h, 1, size, ref) == 0);
    CHECK(imgf_transform(up, w, h, 1, size, out) == 0);
    double worst = 0, worst_fast = 0;
    for (int i = 0; i < size; i++)
        for (int j = 0; j < size; j++) {
            double gx = (14 + j + 0.5) * 40.0 / 85 - 0.5, gy = (4 + i + 0.5) * 30.0 / 64 - 0.5;
            double v = 6 * gx + gy;
            worst = fmax(worst, fabs(ref[i * size + j] - v));
            worst_fast = fmax(worst_fast, fabs(out[i * size + j] - v));
        }
    CHECK_MSG(worst <= 0.5 + 1e-9, "reference is %g off the enlarged ramp", worst);
    CHECK_MSG(worst_fast <= 1.0, "imgf_transform is %g off the enlarged ramp", worst_fast);
    free(up);
    free(out);
    free(ref);
    free(px);
}

TEST(transform_matches_reference) {
    struct { int w, h, c, size; } cases[] = {
        {500, 375, 3, 224}, {375, 500, 1, 224}, {37, 23, 1, 16}, {300, 301, 3, 32},
        {64, 64, 3, 56},    {20, 200, 1, 28},   {1, 1, 3, 8},    {1000, 3, 3, 5},
    };
    rng_t r;
    rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int w = cases[t].w, h = cases[t].h, c = cases[t].c, size = cases[t].size;
        uint8_t *src = malloc((size_t)w * h * c);
        /* smooth content plus noise: both kinds of neighbourhoods */
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++) {
                    double v = 128 + 100 * sin(x * 0.05 + ch) * cos(y * 0.07) +
                               20 * (rng_uniform(&r) - 0.5);
                    src[((size_t)y * w + x) * c + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        size_t n = (size_t)c * size * size;
        uint8_t *a = malloc(n), *b = malloc(n);
        CHECK(imgf_transform(src, w, h, c, size, a) == 0);
        CHECK(imgf_transform_ref(src, w, h, c, size, b) == 0);
        int maxd = 0;
        size_t ndiff = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs(a[i] - b[i]);
            maxd = d > maxd ? d : maxd;
            ndiff += d != 0;
        }
        CHECK_MSG(maxd <= 1 && ndiff * 4 <= n, "%dx%dx%d at %d: max difference %d, %zu of %zu differ",
                  w, h, c, size, maxd, ndiff, n);
        free(src);
        free(a);
        free(b);
    }
}

/* Classes a (10 images), b (5), c (1), d (2); each image a solid gray whose value is its id. */
static void make_split_archive(const char *path) {
    int counts[4] = {10, 5, 1, 2};
    member m[18];
    char names[18][32];
    int k = 0;
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < counts[c]; i++, k++) {
            snprintf(names[k], sizeof names[k], "train/%c/i%02d.png", 'a' + c, i);
            m[k] = (member){names[k], solid_gray_png(8, 8, (uint8_t)(20 * c + i)), M_FILE, 0};
        }
    write_archive(path, 1, m, k);
    free_members(m, k);
}

TEST(seeded_split_is_deterministic_and_per_class) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "split.tar.gz");
    make_split_archive(path);
    ds_set tr, va, tr2, va2;
    int rc = imgf_load(path, NULL, 1, 8, 0.2, 7, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == 0, "load: %s", err);
    if (rc) return;
    /* held out: round(2) = 2 of a, 1 of b, none of c (its only image), 1 of d (at least one) */
    int vc[4] = {0}, tc[4] = {0}, seen[80] = {0};
    CHECK(tr.n == 14 && va.n == 4 && tr.num_classes == 4 && va.num_classes == 4);
    for (int i = 0; i < va.n; i++) vc[va.labels[i]]++;
    for (int i = 0; i < tr.n; i++) tc[tr.labels[i]]++;
    CHECK(vc[0] == 2 && vc[1] == 1 && vc[2] == 0 && vc[3] == 1);
    CHECK(tc[0] == 8 && tc[1] == 4 && tc[2] == 1 && tc[3] == 1);
    /* every image exactly once, with its own class, and in (label, name) order in each split */
    const ds_set *sets[2] = {&tr, &va};
    for (int s = 0; s < 2; s++) {
        int prev = -1;
        for (int i = 0; i < sets[s]->n; i++) {
            int id = pixel(sets[s], i, 0, 0, 0);
            CHECK(solid(sets[s], i, 0, id, 0) && id < 80);
            CHECK(id / 20 == sets[s]->labels[i]);
            CHECK(id > prev);
            prev = id;
            seen[id]++;
        }
    }
    int total = 0;
    for (int id = 0; id < 80; id++) {
        total += seen[id];
        CHECK(seen[id] <= 1);
    }
    CHECK(total == 18);
    /* the same seed: the same sets, bit for bit */
    rc = imgf_load(path, NULL, 1, 8, 0.2, 7, &tr2, &va2, err, sizeof err);
    CHECK(rc == 0);
    if (!rc) {
        CHECK(tr2.n == tr.n && va2.n == va.n);
        CHECK(!memcmp(tr.pixels, tr2.pixels, (size_t)tr.n * 64) &&
              !memcmp(va.pixels, va2.pixels, (size_t)va.n * 64) &&
              !memcmp(va.labels, va2.labels, (size_t)va.n * 4));
        ds_free(&tr2);
        ds_free(&va2);
    }
    /* another seed holds out other images */
    int differs = 0;
    for (uint64_t seed = 1; seed <= 8 && !differs; seed++) {
        if (seed == 7 || imgf_load(path, NULL, 1, 8, 0.2, seed, &tr2, &va2, err, sizeof err)) continue;
        differs = va2.n == va.n && memcmp(va.pixels, va2.pixels, (size_t)va.n * 64);
        ds_free(&tr2);
        ds_free(&va2);
    }
    CHECK(differs);
    ds_free(&tr);
    ds_free(&va);
    /* val_fraction 0: no val at all */
    rc = imgf_load(path, NULL, 1, 8, 0, 7, &tr, &va, err, sizeof err);
    CHECK(rc == 0 && tr.n == 18 && va.n == 0 && va.pixels == NULL && va.num_classes == 4);
    if (!rc) {
        ds_free(&tr);
        ds_free(&va);
    }
}

/* ---- refusals: each archive must be refused by inspect and by load, naming the member ---- */

typedef struct {
    const char *what;
    member m[4];
    int n;
    const char *expect;     /* must appear in the message */
} refusal;

static blob cmyk_jpeg(void) {
    uint8_t px[8 * 8 * 4];
    memset(px, 128, sizeof px);
    return jpeg_encode(px, 8, 8, 4, JCS_CMYK, 90);
}

static blob png_bad_crc(void) {
    blob b = solid_png(4, 4, 1, 2, 3);
    b.data[29] ^= 0xFF; /* the IHDR chunk's CRC */
    return b;
}

static blob noisy_jpeg(int w, int h) {
    uint8_t *px = malloc((size_t)w * h * 3);
    rng_t r;
    rng_seed(&r, 5);
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)(rng_next(&r) >> 56);
    blob b = jpeg_encode(px, w, h, 3, JCS_RGB, 90);
    free(px);
    return b;
}

static blob truncated_png(void) {
    blob b = solid_png(64, 64, 1, 2, 3);
    b.len -= 16; /* the end chunk and the image data's CRC cut: headers intact */
    return b;
}

static void check_refused(const refusal *c, const imgf_limits *lim) {
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "refuse.tar");
    write_archive(path, 0, c->m, c->n);
    json_t *s = NULL;
    int rc = imgf_inspect(path, lim, &s, err, sizeof err);
    CHECK_MSG(rc == -1 && !s && strstr(err, c->expect),
              "%s: inspect returned %d with \"%s\", expected a message with \"%s\"", c->what, rc,
              err, c->expect);
    json_decref(s);
    if (getenv("GPLQ_TEST_VERBOSE")) printf("  %s: %s\n", c->what, err);
    ds_set tr, va;
    err[0] = 0;
    rc = imgf_load(path, lim, 3, 8, 0.1, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, c->expect) && !tr.pixels && !va.pixels,
              "%s: load returned %d with \"%s\", expected a message with \"%s\"", c->what, rc,
              err, c->expect);
    if (!rc) {
        ds_free(&tr);
        ds_free(&va);
    }
    unlink(path);
}

#define OK_PNG(name) {name, solid_png(4, 4, 9, 9, 9), M_FILE, 0}

TEST(refusals_name_the_member) {
    int rc_load;
    refusal cases[] = {
        {"absolute path", {OK_PNG("train/a/ok.png"), OK_PNG("/train/a/abs.png")}, 2, "/train/a/abs.png"},
        {"dot-dot", {OK_PNG("train/a/ok.png"), OK_PNG("train/a/../../escape.png")}, 2, "train/a/../../escape.png"},
        {"symlink", {OK_PNG("train/a/ok.png"), {"train/a/link.png", {0}, M_SYMLINK, "ok.png"}}, 2, "train/a/link.png"},
        {"hardlink", {OK_PNG("train/a/ok.png"), {"train/a/hard.png", {0}, M_HARDLINK, "train/a/ok.png"}}, 2, "train/a/hard.png"},
        {"device", {OK_PNG("train/a/ok.png"), {"train/a/dev", {0}, M_CHARDEV, 0}}, 2, "train/a/dev"},
        {"outside", {OK_PNG("train/a/ok.png"), OK_PNG("test/a/x.png")}, 2, "test/a/x.png"},
        {"outside, top level", {OK_PNG("train/a/ok.png"), OK_PNG("x.png")}, 2, "'x.png'"},
        {"no class folder", {OK_PNG("train/a/ok.png"), OK_PNG("train/loose.png")}, 2, "train/loose.png"},
        {"too deep", {OK_PNG("train/a/ok.png"), OK_PNG("train/a/sub/deep.png")}, 2, "train/a/sub/deep.png"},
        {"extension", {OK_PNG("train/a/ok.png"), {"train/a/anim.gif", text_blob("GIF89a"), M_FILE, 0}}, 2, "train/a/anim.gif"},
        {"text file", {OK_PNG("train/a/ok.png"), {"train/a/README.txt", text_blob("hi"), M_FILE, 0}}, 2, "train/a/README.txt"},
        {"not an image", {OK_PNG("train/a/ok.png"), {"train/a/fake.png", text_blob("hello, world"), M_FILE, 0}}, 2, "train/a/fake.png"},
        {"empty file", {OK_PNG("train/a/ok.png"), {"train/a/empty.jpg", text_blob(""), M_FILE, 0}}, 2, "train/a/empty.jpg"},
        {"JPEG magic, garbage", {OK_PNG("train/a/ok.png"), {"train/a/bad.jpg", text_blob("\xFF\xD8\xFF\xE0 garbage garbage"), M_FILE, 0}}, 2, "train/a/bad.jpg"},
        {"PNG with a bad CRC", {OK_PNG("train/a/ok.png"), {"train/a/crc.png", png_bad_crc(), M_FILE, 0}}, 2, "train/a/crc.png"},
        {"CMYK", {OK_PNG("train/a/ok.png"), {"train/a/cmyk.jpg", cmyk_jpeg(), M_FILE, 0}}, 2, "train/a/cmyk.jpg"},
        {"empty train class", {OK_PNG("train/a/ok.png"), {"train/empty/", {0}, M_DIR, 0}}, 2, "train/empty/"},
        {"val class train lacks", {OK_PNG("train/a/ok.png"), OK_PNG("val/zebra/z.png")}, 2, "val/zebra/"},
        {"no train", {OK_PNG("val/a/ok.png"), OK_PNG("val/b/ok.png")}, 2, "no train/"},
        {"no images", {{"train/", {0}, M_DIR, 0}}, 1, "no images"},
        {"duplicate", {OK_PNG("train/a/ok.png"), OK_PNG("./train/a/ok.png")}, 2, "./train/a/ok.png"},
        {"two top folders", {OK_PNG("one/train/a/ok.png"), OK_PNG("two/train/a/ok.png")}, 2, "'two/train/a/ok.png' is outside one/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_refused(&cases[i], NULL);
        free_members(cases[i].m, cases[i].n);
    }
    /* truncated image data passes inspect (headers only) but not load, as PIL refuses it;
     * a JPEG without only its final EOI marker still loads */
    for (int kind = 0; kind < 3; kind++) {
        char path[512], err[512] = "";
        tmp_path(path, sizeof path, "trunc.tar");
        blob b = kind == 0 ? truncated_png() : noisy_jpeg(64, 64);
        if (kind == 1) b.len /= 2;
        if (kind == 2) b.len -= 2;
        const char *name = kind == 0 ? "train/a/cut.png" : kind == 1 ? "train/a/cut.jpg" : "train/a/noeoi.jpg";
        member m[] = {OK_PNG("train/a/ok.png"), {name, b, M_FILE, 0}};
        write_archive(path, 0, m, 2);
        free_members(m, 2);
        json_t *s = NULL;
        CHECK(imgf_inspect(path, NULL, &s, err, sizeof err) == 0);
        json_decref(s);
        ds_set tr, va;
        rc_load = imgf_load(path, NULL, 3, 8, 0, 1, &tr, &va, err, sizeof err);
        if (kind < 2) CHECK_MSG(rc_load == -1 && strstr(err, name) && strstr(err, "ends in the middle"), "%s: %s", name, err);
        else CHECK_MSG(rc_load == 0, "%s: %s", name, err);
        if (!rc_load) {
            ds_free(&tr);
            ds_free(&va);
        }
    }
    /* an image too elongated to resize: fine to inspect, refused by load */
    {
        char path[512], err[512] = "";
        tmp_path(path, sizeof path, "long.tar");
        uint8_t *line = calloc(70000, 1);
        member m[] = {OK_PNG("train/a/ok.png"),
                      {"train/a/line.png", png_encode(line, 1, 70000, PNG_COLOR_TYPE_GRAY, 8, NULL, 0), M_FILE, 0}};
        free(line);
        write_archive(path, 0, m, 2);
        free_members(m, 2);
        json_t *s = NULL;
        CHECK(imgf_inspect(path, NULL, &s, err, sizeof err) == 0);
        json_decref(s);
        ds_set tr, va;
        rc_load = imgf_load(path, NULL, 1, 224, 0, 1, &tr, &va, err, sizeof err);
        CHECK_MSG(rc_load == -1 && strstr(err, "train/a/line.png") && strstr(err, "elongated"), "%s", err);
        uint8_t *px = calloc(70000, 1), out[16];
        CHECK(imgf_transform(px, 1, 70000, 1, 4, out) == 0); /* small crops of it are fine */
        CHECK(imgf_transform(px, 1, 70000, 1, 224, out) == -1);
        free(px);
    }
    /* the limits */
    imgf_limits lim;
    imgf_limits_default(&lim);
    CHECK(lim.max_images == 2000000 && lim.max_pixels == 50000000);
    lim.max_pixels = 399;
    refusal big = {"pixels", {OK_PNG("train/a/ok.png"), {"train/a/big.jpg", solid_jpeg(20, 20, 1, 1, 1), M_FILE, 0}}, 2, "train/a/big.jpg"};
    check_refused(&big, &lim);
    free_members(big.m, big.n);
    imgf_limits_default(&lim);
    lim.max_images = 2;
    refusal many = {"count", {OK_PNG("train/a/1.png"), OK_PNG("train/a/2.png"), OK_PNG("train/b/3.png")}, 3, "train/b/3.png"};
    check_refused(&many, &lim);
    free_members(many.m, many.n);
    /* not an archive at all */
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "not-an-archive.tar");
    FILE *f = fopen(path, "wb");
    fputs("this is not a tar file, not even close, and it goes on for a while..........\n", f);
    fclose(f);
    json_t *s = NULL;
    CHECK(imgf_inspect(path, NULL, &s, err, sizeof err) == -1 && err[0]);
    /* hostile bytes in a name come back as valid UTF-8 without control characters */
    refusal ctl = {"control characters", {OK_PNG("train/a/ok.png"), {"train/a/\x1b[31m\xff.txt", text_blob("x"), M_FILE, 0}}, 2, "train/a/?[31m?.txt"};
    check_refused(&ctl, NULL);
    free_members(ctl.m, ctl.n);
}

/* ---- archive bombs (issue 15) ---- */

/* inspect and load of path under lim (NULL: defaults) both refuse it, with want in the
 * message. */
static void check_bomb_refused(const char *what, const char *path, const imgf_limits *lim,
                               const char *want) {
    char err[512] = "";
    json_t *s = NULL;
    int rc = imgf_inspect(path, lim, &s, err, sizeof err);
    CHECK_MSG(rc == -1 && !s && strstr(err, want), "%s: inspect returned %d with \"%s\", "
              "expected \"%s\"", what, rc, err, want);
    json_decref(s);
    if (getenv("GPLQ_TEST_VERBOSE")) printf("  %s: %s\n", what, err);
    ds_set tr, va;
    err[0] = 0;
    rc = imgf_load(path, lim, 3, 8, 0, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, want), "%s: load returned %d with \"%s\"", what, rc, err);
    if (!rc) {
        ds_free(&tr);
        ds_free(&va);
    }
}

/* A 512-byte ustar header for a regular file name of size bytes (octal in 11 digits, so up
 * to 8 GiB - 1), into h. */
static void ustar_header(uint8_t h[512], const char *name, int64_t size) {
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
    memcpy(h + 136, "14540000000", 12);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
}

TEST(archive_bombs_are_refused_by_the_limits) {
    char path[512], err[512] = "";
    imgf_limits lim;
    imgf_limits_default(&lim);
    CHECK(lim.max_members == 4200000 && lim.max_name_bytes == 1024 &&
          lim.unpack_allowance == (int64_t)256 << 20 && lim.unpack_ratio == 20);

    /* folders with 4 KB names (the bomb had thousands of megabyte names): refused at the
     * first, with the defaults */
    {
        enum { N = 64, LEN = 4096 };
        member m[N + 1];
        static char names[N][LEN + 16];
        m[0] = (member)OK_PNG("train/a/ok.png");
        for (int i = 0; i < N; i++) {
            int k = snprintf(names[i], sizeof names[i], "train/%03d", i);
            memset(names[i] + k, 'x', LEN - k);
            snprintf(names[i] + LEN, 16, "/");
            m[i + 1] = (member){names[i], {0}, M_DIR, 0};
        }
        tmp_path(path, sizeof path, "long-names.tar.gz");
        write_archive(path, 1, m, N + 1);
        free_members(m, 1);
        check_bomb_refused("4 KB names", path, NULL, "is 4097 bytes, longer than the limit of 1024");
    }
    /* a skipped (hidden) member that inflates past the limit, set low here: refused, naming
     * it, before it is inflated; the same archive without it passes the same limits */
    {
        imgf_limits low = lim;
        low.unpack_allowance = 1 << 20;
        low.unpack_ratio = 20;
        blob zeros = {calloc(4 << 20, 1), 4 << 20};
        member m[] = {OK_PNG("train/a/ok.png"), {".pad", zeros, M_FILE, 0}};
        tmp_path(path, sizeof path, "inflates.tar.gz");
        write_archive(path, 1, m, 2);
        struct stat st;
        stat(path, &st);
        CHECK_MSG(st.st_size < 64 << 10, "the bomb is %lld bytes", (long long)st.st_size);
        char want[128];
        snprintf(want, sizeof want, "member '.pad': the archive unpacks to more than %lld bytes",
                 (long long)(low.unpack_allowance + low.unpack_ratio * st.st_size));
        check_bomb_refused("inflates past the limit", path, &low, want);
        check_bomb_refused("inflates past the limit", path, &low, "1 MiB, plus 20 times");
        json_t *s = NULL;
        write_archive(path, 1, m, 1);
        CHECK_MSG(imgf_inspect(path, &low, &s, err, sizeof err) == 0, "%s", err);
        json_decref(s);
        free_members(m, 2);
    }
    /* with the defaults: a tar.gz whose member declares 8 GiB, made of the header alone, is
     * refused by that declaration, before a byte of it is inflated */
    {
        tmp_path(path, sizeof path, "declares.tar.gz");
        gzFile gz = gzopen(path, "wb");
        uint8_t h[512];
        ustar_header(h, ".pad", ((int64_t)8 << 30) - 1);
        gzwrite(gz, h, 512);
        gzclose(gz);
        check_bomb_refused("declared size", path, NULL, "member '.pad': the archive unpacks to "
                           "more than 268");
    }
    /* more members than the limit, set low here, skipped ones included */
    {
        imgf_limits low = lim;
        low.max_members = 5;
        member m[] = {OK_PNG("train/a/1.png"), {".a", text_blob("x"), M_FILE, 0},
                      {".b", text_blob("x"), M_FILE, 0}, {"train/", {0}, M_DIR, 0},
                      {"train/a/", {0}, M_DIR, 0}, {".c", text_blob("x"), M_FILE, 0}};
        tmp_path(path, sizeof path, "members.tar");
        write_archive(path, 0, m, NMEMB(m));
        check_bomb_refused("members", path, &low, "member '.c': the archive holds more than 5 "
                           "members");
        low.max_members = 6;
        json_t *s = NULL;
        CHECK_MSG(imgf_inspect(path, &low, &s, err, sizeof err) == 0, "%s", err);
        json_decref(s);
        free_members(m, NMEMB(m));
    }
}

/* ---- the cache ---- */

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static void patch_byte(const char *p, long off, uint8_t v) {
    FILE *f = fopen(p, "r+b");
    fseek(f, off, SEEK_SET);
    fputc(v, f);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int c;
    while ((c = fgetc(a)) != EOF) fputc(c, b);
    fclose(a);
    fclose(b);
}

TEST(cache_round_trips_and_refuses_damage) {
    char path[512], cache[512], bad[512], err[512] = "";
    tmp_path(path, sizeof path, "cache-src.tar");
    tmp_path(cache, sizeof cache, "ds.cache");
    tmp_path(bad, sizeof bad, "bad.cache");
    make_kinds_archive(path);
    ds_set tr, va, tr2, va2;
    int rc = imgf_load(path, NULL, 3, 24, 0, 1, &tr, &va, err, sizeof err);
    CHECK_MSG(rc == 0, "load: %s", err);
    if (rc) return;
    CHECK_MSG(imgf_cache_write(cache, &tr, &va, err, sizeof err) == 0, "write: %s", err);
    CHECK(file_size(cache) == 72 + (long)(tr.n + va.n) * (3 * 24 * 24 + 4));
    CHECK_MSG(imgf_cache_read(cache, &tr2, &va2, err, sizeof err) == 0, "read: %s", err);
    CHECK(tr2.n == tr.n && tr2.channels == 3 && tr2.height == 24 && tr2.width == 24 &&
          tr2.num_classes == tr.num_classes && va2.n == va.n && va2.num_classes == va.num_classes);
    CHECK(!memcmp(tr.pixels, tr2.pixels, (size_t)tr.n * 3 * 24 * 24) &&
          !memcmp(tr.labels, tr2.labels, (size_t)tr.n * 4) &&
          !memcmp(va.pixels, va2.pixels, (size_t)va.n * 3 * 24 * 24) &&
          !memcmp(va.labels, va2.labels, (size_t)va.n * 4));
    ds_free(&tr2);
    ds_free(&va2);
    /* no temp file left behind */
    int leftovers = 0;
    DIR *dir = opendir(tmpdir);
    for (struct dirent *de; dir && (de = readdir(dir));) leftovers += strstr(de->d_name, ".tmp.") != NULL;
    if (dir) closedir(dir);
    CHECK(!leftovers);

    struct { const char *what; long off; int v; long cut; const char *expect; } damage[] = {
        {"truncated", 0, -1, 10, "truncated"},
        {"truncated header", 0, -1, -40, "truncated"},
        {"wrong version", 8, 2, 0, "version 2"},
        {"wrong magic", 0, 'X', 0, "magic"},
        {"corrupt header", 20, 0x7F, 0, "header checksum"},
        {"corrupt pixels", 100, 0x55, 0, "payload checksum"},
    };
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        copy_file(cache, bad);
        if (damage[i].v >= 0) patch_byte(bad, damage[i].off, (uint8_t)damage[i].v);
        if (damage[i].cut > 0) CHECK(truncate(bad, file_size(bad) - damage[i].cut) == 0);
        if (damage[i].cut < 0) CHECK(truncate(bad, -damage[i].cut) == 0);
        err[0] = 0;
        rc = imgf_cache_read(bad, &tr2, &va2, err, sizeof err);
        CHECK_MSG(rc == -1 && strstr(err, damage[i].expect) && !tr2.pixels && !va2.pixels,
                  "%s: %d \"%s\"", damage[i].what, rc, err);
    }
    /* a cache written over an existing one replaces it */
    CHECK(imgf_cache_write(bad, &tr, &va, err, sizeof err) == 0);
    CHECK(imgf_cache_read(bad, &tr2, &va2, err, sizeof err) == 0);
    ds_free(&tr2);
    ds_free(&va2);
    ds_free(&tr);
    ds_free(&va);
}

/* ---- speed: 500x375 JPEGs (photo-like: smooth shapes and noise) to 224x224 RGB, in CPU
 * time of this thread, so that other work on the machine does not count ---- */

TEST(throughput_500x375_jpeg_to_224) {
    int n = getenv("GPLQ_IMGF_BENCH") ? atoi(getenv("GPLQ_IMGF_BENCH")) : 48;
    if (n < 2) n = 2;
    int w = 500, h = 375;
    uint8_t *px = malloc((size_t)w * h * 3);
    rng_t r;
    rng_seed(&r, 3);
    member *m = calloc((size_t)n, sizeof *m);
    char (*names)[32] = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < 3; ch++) {
                    double v = 128 + 90 * sin(x * 0.02 * (1 + i % 5) + ch) * cos(y * 0.03) +
                               8 * (rng_uniform(&r) - 0.5);
                    px[((size_t)y * w + x) * 3 + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        snprintf(names[i], sizeof names[i], "train/c%d/%04d.jpg", i % 2, i);
        m[i] = (member){names[i], jpeg_encode(px, w, h, 3, JCS_RGB, 90), M_FILE, 0};
    }
    char path[512], err[512] = "";
    tmp_path(path, sizeof path, "bench.tar");
    write_archive(path, 0, m, n);
    free_members(m, n);
    free(m);
    free(names);
    free(px);
    struct timespec t0, t1, t2;
    json_t *s = NULL;
    ds_set tr, va;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    int rc = imgf_inspect(path, NULL, &s, err, sizeof err);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    rc |= imgf_load(path, NULL, 3, 224, 0, 1, &tr, &va, err, sizeof err);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t2);
    CHECK_MSG(rc == 0, "%s", err);
    double ti = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    double tl = (t2.tv_sec - t1.tv_sec) + 1e-9 * (t2.tv_nsec - t1.tv_nsec);
    printf("  %d 500x375 JPEGs: inspect %.0f images/s, load at 224 (decode + resize + crop) "
           "%.0f images/s (CPU time)\n", n, n / ti, n / tl);
    /* the transform alone, on a decoded image */
    uint8_t *img = malloc((size_t)w * h * 3), *out = malloc((size_t)3 * 224 * 224);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) img[i] = (uint8_t)(i * 2654435761u >> 24);
    int reps = 4 * n;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (int i = 0; i < reps; i++) imgf_transform(img, w, h, 3, 224, out);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    double tt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    printf("  imgf_transform alone, 500x375 RGB to 224x224: %.0f images/s (CPU time)\n", reps / tt);
    free(img);
    free(out);
    json_decref(s);
    if (!rc) {
        CHECK(tr.n == n && va.n == 0);
        ds_free(&tr);
        ds_free(&va);
    }
}

TEST_MAIN()
