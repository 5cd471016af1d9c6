/*
 * test_safetensors.c: tests for io/safetensors.c.
 *
 * Round trips every dtype through the writer and the reader, checks F16/BF16 conversion
 * against known bit patterns (and F16 exhaustively against a slow ldexp reference), parses a
 * file built byte by byte the way PyTorch's safetensors writer lays it out, runs every file of
 * the hostile corpus in tests/safetensors_corpus (see EXPECTED there) and mutates a valid file
 * 2000 times to check the reader never reads out of bounds (meant to run under ASan+UBSan).
 */
#include "io/safetensors.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef GPLQ_SRC_DIR
#define GPLQ_SRC_DIR "."
#endif

/* ---------------------------------------------------------------------------------------- */
/* helpers */

/* Creates a fresh empty folder under /tmp and writes its path into buf. */
static void make_tmpdir(char *buf, size_t n) {
    snprintf(buf, n, "/tmp/gplq_st_XXXXXX");
    if (!mkdtemp(buf)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        abort();
    }
}

/* Removes every file in dir, then dir. */
static void remove_tmpdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Number of entries in dir other than . and .. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Reads a whole file into an exactly-sized malloc'ed buffer (so ASan catches any read past
 * its end); returns NULL on error. Caller frees. */
static unsigned char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int write_all_file(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t k = fwrite(buf, 1, len, fp);
    return (fclose(fp) == 0 && k == len) ? 0 : -1;
}

static int is_zeroed(const st_file *f) {
    static const st_file zero;
    return memcmp(f, &zero, sizeof zero) == 0;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Converts a one-element tensor whose bytes are given. */
static float convert_one(st_dtype dt, const void *bytes) {
    st_tensor t = {.dtype = dt, .ndim = 0, .numel = 1, .data = bytes, .nbytes = st_dtype_size(dt)};
    float out = -12345.0f;
    CHECK(st_to_f32(&t, &out) == 0);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* dtypes and conversion */

TEST(dtype_table) {
    static const char *names[] = {"F64", "F32", "F16", "BF16", "I64",
                                  "I32", "I16", "I8",  "U8",   "BOOL"};
    static const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
    for (int i = 0; i < ST_NDTYPES; i++) {
        st_dtype d;
        CHECK(strcmp(st_dtype_name((st_dtype)i), names[i]) == 0);
        CHECK(st_dtype_size((st_dtype)i) == sizes[i]);
        CHECK(st_dtype_parse(names[i], &d) == 0 && d == (st_dtype)i);
    }
    st_dtype d;
    CHECK(st_dtype_parse("F128", &d) == -1);
    CHECK(st_dtype_parse("f32", &d) == -1); /* names are case-sensitive, as in the reference */
    CHECK(st_dtype_parse("", &d) == -1);
    CHECK(strcmp(st_dtype_name(ST_NDTYPES), "?") == 0);
}

/* 2^k by repeated doubling or halving: slow, exact, and obviously so. */
static double pow2(int k) {
    double v = 1.0;
    for (; k > 0; k--) v *= 2.0;
    for (; k < 0; k++) v *= 0.5;
    return v;
}

/* Slow, obviously correct half -> double, straight from the IEEE 754 definition. */
static double f16_reference(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = m * pow2(-24);
    else v = (m + 1024) * pow2(e - 25);
    return s ? -v : v;
}

TEST(f16_known_values) {
    static const struct { uint16_t h; float f; } cases[] = {
        {0x0000, 0.0f}, {0x3C00, 1.0f}, {0xC000, -2.0f}, {0x3555, 0.333251953125f},
        {0x7BFF, 65504.0f},                           /* largest finite */
        {0x0400, 0x1p-14f},                           /* smallest normal */
        {0x0001, 0x1p-24f}, {0x8001, -0x1p-24f},      /* smallest subnormal */
        {0x03FF, 1023 * 0x1p-24f},                    /* largest subnormal */
        {0x0200, 0x1p-15f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float f = convert_one(ST_F16, &cases[i].h);
        CHECK_MSG(f32_bits(f) == f32_bits(cases[i].f), "f16 0x%04x -> %a, want %a", cases[i].h,
                  (double)f, (double)cases[i].f);
    }
    uint16_t h = 0x8000; /* -0 keeps its sign */
    float f = convert_one(ST_F16, &h);
    CHECK(f == 0.0f && signbit(f));
    h = 0x7C00;
    CHECK(isinf(convert_one(ST_F16, &h)) && convert_one(ST_F16, &h) > 0);
    h = 0xFC00;
    CHECK(isinf(convert_one(ST_F16, &h)) && convert_one(ST_F16, &h) < 0);
    h = 0x7E00;
    CHECK(isnan(convert_one(ST_F16, &h)));
    h = 0x7C01; /* signalling NaN stays NaN, payload kept */
    CHECK(f32_bits(convert_one(ST_F16, &h)) == 0x7F802000u);
}

TEST(f16_exhaustive_against_reference) {
    /* Unaligned source on purpose: element i lives at an odd address. */
    unsigned char *raw = malloc(2 * 65536 + 1);
    float *out = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(raw + 1 + 2 * i, &h, 2);
    }
    st_tensor t = {.dtype = ST_F16, .ndim = 1, .shape = {65536}, .numel = 65536,
                   .data = raw + 1, .nbytes = 2 * 65536};
    CHECK(st_to_f32(&t, out) == 0);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        double want = f16_reference((uint16_t)i);
        float got = out[i];
        int ok = isnan(want) ? isnan(got)
                             : ((double)got == want && !signbit(got) == !signbit(want));
        if (!ok && bad++ < 5) CHECK_MSG(0, "f16 0x%04x -> %a, want %a", i, (double)got, want);
    }
    CHECK(bad == 0);
    free(raw);
    free(out);
}

TEST(bf16_known_values) {
    static const struct { uint16_t h; uint32_t bits; } cases[] = {
        {0x3F80, 0x3F800000u}, /* 1 */
        {0xC040, 0xC0400000u}, /* -3 */
        {0x4049, 0x40490000u}, /* 3.140625 */
        {0x0001, 0x00010000u}, /* subnormal 2^-133 */
        {0x8000, 0x80000000u}, /* -0 */
        {0x7F80, 0x7F800000u}, /* inf */
        {0xFF80, 0xFF800000u}, /* -inf */
        {0x7FC0, 0x7FC00000u}, /* nan */
        {0x7F7F, 0x7F7F0000u}, /* largest finite */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float f = convert_one(ST_BF16, &cases[i].h);
        CHECK_MSG(f32_bits(f) == cases[i].bits, "bf16 0x%04x -> 0x%08x, want 0x%08x", cases[i].h,
                  f32_bits(f), cases[i].bits);
    }
    uint16_t h = 0x0001;
    CHECK(convert_one(ST_BF16, &h) == 0x1p-133f);
}

TEST(integer_and_bool_conversion) {
    int8_t i8 = -128;
    uint8_t u8 = 255;
    int16_t i16 = -32768;
    int32_t i32 = -123456;
    int64_t i64 = (int64_t)1 << 40;
    double f64 = 0.1;
    CHECK(convert_one(ST_I8, &i8) == -128.0f);
    CHECK(convert_one(ST_U8, &u8) == 255.0f);
    CHECK(convert_one(ST_I16, &i16) == -32768.0f);
    CHECK(convert_one(ST_I32, &i32) == -123456.0f);
    CHECK(convert_one(ST_I64, &i64) == 0x1p40f);
    CHECK(convert_one(ST_F64, &f64) == (float)0.1);
    uint8_t b[3] = {0, 1, 2}; /* any non-zero byte is true */
    float out[3];
    st_tensor t = {.dtype = ST_BOOL, .ndim = 1, .shape = {3}, .numel = 3, .data = b, .nbytes = 3};
    CHECK(st_to_f32(&t, out) == 0);
    CHECK(out[0] == 0.0f && out[1] == 1.0f && out[2] == 1.0f);
}

/* ---------------------------------------------------------------------------------------- */
/* writer and reader */

TEST(round_trip_every_dtype) {
    char dir[64], path[128], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);

    double f64[3] = {0.5, -1e300, 3.25};
    float f32[2][3] = {{1, 2, 3}, {-4, 5.5f, 1e-3f}};
    uint16_t f16[4] = {0x3C00, 0x0001, 0xFC00, 0x8000};
    uint16_t bf16[2] = {0x3F80, 0xC040};
    int64_t i64[2] = {INT64_MIN, (int64_t)1 << 40};
    int32_t i32[1] = {-7};
    int16_t i16[2] = {-32768, 32767};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[1][1][2] = {{{0, 255}}};
    uint8_t bools[2] = {1, 0};
    static const struct { const char *name; st_dtype dt; int ndim; int64_t shape[3]; } specs[] = {
        {"blocks.0.f64", ST_F64, 1, {3}},
        {"blocks.0.attn.qkv.weight", ST_F32, 2, {2, 3}},
        {"f16", ST_F16, 2, {2, 2}},
        {"bf16", ST_BF16, 1, {2}},
        {"i64", ST_I64, 1, {2}},
        {"scalar.i32", ST_I32, 0, {0}},
        {"i16", ST_I16, 1, {2}},
        {"i8", ST_I8, 1, {3}},
        {"u8", ST_U8, 3, {1, 1, 2}},
        {"bool", ST_BOOL, 1, {2}},
        {"empty", ST_F32, 2, {0, 4}},
        {"\xe6\x9d\x83\xe9\x87\x8d \"quoted\"", ST_U8, 1, {0}}, /* UTF-8 and a quote */
    };
    const void *datas[] = {f64, f32, f16, bf16, i64, i32, i16, i8, u8, bools, NULL, NULL};
    const size_t nspecs = sizeof specs / sizeof *specs;

    st_writer *w = st_writer_new();
    CHECK(w != NULL);
    CHECK(st_writer_meta(w, "format", "pt") == 0);
    CHECK(st_writer_meta(w, "gplq.stage", "0") == 0);
    CHECK(st_writer_meta(w, "gplq.stage", "2") == 0); /* replaced, keeps its position */
    for (size_t i = 0; i < nspecs; i++)
        CHECK_MSG(st_writer_add(w, specs[i].name, specs[i].dt, specs[i].ndim, specs[i].shape,
                                datas[i], err, sizeof err) == 0,
                  "%s", err);
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    CHECK(count_entries(dir) == 1); /* the temporary file is gone */

    /* Layout as the reference writer: 8-aligned header, __metadata__ first, space padding. */
    size_t len;
    unsigned char *raw = read_all(path, &len);
    CHECK(raw != NULL && len >= 8);
    if (raw) {
        uint64_t n;
        memcpy(&n, raw, 8);
        CHECK(n % 8 == 0 && n + 8 <= len);
        static const char head[] = "{\"__metadata__\":{\"format\":\"pt\",\"gplq.stage\":\"2\"},";
        CHECK(memcmp(raw + 8, head, sizeof head - 1) == 0);
        CHECK(strstr((const char *)raw + 8, "\"blocks.0.f64\":{\"dtype\":\"F64\",\"shape\":[3],"
                                            "\"data_offsets\":[0,24]}") != NULL);
        size_t k = 8 + (size_t)n;
        while (k > 8 && raw[k - 1] == ' ') k--;
        CHECK(raw[k - 1] == '}' && (8 + n) - k < 8);
        free(raw);
    }

    st_file f;
    CHECK_MSG(st_open(&f, path, err, sizeof err) == 0, "%s", err);
    CHECK(f.ntensors == (int)nspecs);
    CHECK(f.nmeta == 2);
    if (f.nmeta == 2) {
        CHECK(strcmp(f.meta_keys[0], "format") == 0 && strcmp(f.meta_vals[0], "pt") == 0);
        CHECK(strcmp(f.meta_keys[1], "gplq.stage") == 0 && strcmp(f.meta_vals[1], "2") == 0);
    }
    CHECK(st_meta(&f, "gplq.stage") && strcmp(st_meta(&f, "gplq.stage"), "2") == 0);
    CHECK(st_meta(&f, "missing") == NULL);
    CHECK(st_find(&f, "missing") == NULL);
    for (int i = 0; i < f.ntensors && i < (int)nspecs; i++) {
        const st_tensor *t = &f.tensors[i];
        CHECK(strcmp(t->name, specs[i].name) == 0); /* header order = insertion order */
        CHECK(st_find(&f, specs[i].name) == t);
        CHECK(t->dtype == specs[i].dt && t->ndim == specs[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] == specs[i].shape[d]);
            numel *= specs[i].shape[d];
        }
        CHECK(t->numel == numel);
        CHECK(t->nbytes == (size_t)numel * st_dtype_size(t->dtype));
        if (t->nbytes) CHECK(memcmp(t->data, datas[i], t->nbytes) == 0);
        CHECK((const char *)t->data >= (const char *)f.map &&
              (const char *)t->data + t->nbytes <= (const char *)f.map + f.map_len);
    }

    float out[8];
    const st_tensor *t;
    CHECK((t = st_find(&f, "blocks.0.f64")) && st_to_f32(t, out) == 0 && out[0] == 0.5f &&
          isinf(out[1]) && out[1] < 0 && out[2] == 3.25f);
    CHECK((t = st_find(&f, "blocks.0.attn.qkv.weight")) && st_to_f32(t, out) == 0 &&
          out[4] == 5.5f && out[5] == 1e-3f);
    CHECK((t = st_find(&f, "f16")) && st_to_f32(t, out) == 0 && out[0] == 1.0f &&
          out[1] == 0x1p-24f && isinf(out[2]) && out[3] == 0 && signbit(out[3]));
    CHECK((t = st_find(&f, "bf16")) && st_to_f32(t, out) == 0 && out[0] == 1 && out[1] == -3);
    CHECK((t = st_find(&f, "i64")) && st_to_f32(t, out) == 0 && out[0] == -0x1p63f &&
          out[1] == 0x1p40f);
    CHECK((t = st_find(&f, "scalar.i32")) && t->numel == 1 && st_to_f32(t, out) == 0 &&
          out[0] == -7);
    CHECK((t = st_find(&f, "i16")) && st_to_f32(t, out) == 0 && out[0] == -32768 &&
          out[1] == 32767);
    CHECK((t = st_find(&f, "i8")) && st_to_f32(t, out) == 0 && out[0] == -128 && out[2] == 127);
    CHECK((t = st_find(&f, "u8")) && st_to_f32(t, out) == 0 && out[0] == 0 && out[1] == 255);
    CHECK((t = st_find(&f, "bool")) && st_to_f32(t, out) == 0 && out[0] == 1 && out[1] == 0);
    CHECK((t = st_find(&f, "empty")) && t->numel == 0 && t->nbytes == 0 && st_to_f32(t, out) == 0);
    st_close(&f);
    CHECK(is_zeroed(&f));
    st_close(&f); /* closing twice is harmless */
    remove_tmpdir(dir);
}

TEST(save_replaces_atomically) {
    /* A reader that has the old checkpoint mapped keeps seeing the old bytes: the writer
     * never rewrites the file in place, it renames a complete new file over it. */
    char dir[64], path[128], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    float v1[2] = {1, 2}, v2[3] = {7, 8, 9};
    int64_t s1 = 2, s2 = 3;
    st_writer *w = st_writer_new();
    CHECK(st_writer_add(w, "w", ST_F32, 1, &s1, v1, err, sizeof err) == 0);
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);

    st_file old;
    CHECK_MSG(st_open(&old, path, err, sizeof err) == 0, "%s", err);
    w = st_writer_new();
    CHECK(st_writer_add(w, "w", ST_F32, 1, &s2, v2, err, sizeof err) == 0);
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);

    float out[3];
    CHECK(old.ntensors == 1 && old.tensors[0].numel == 2);
    CHECK(st_to_f32(&old.tensors[0], out) == 0 && out[0] == 1 && out[1] == 2);
    st_close(&old);
    st_file f;
    CHECK_MSG(st_open(&f, path, err, sizeof err) == 0, "%s", err);
    CHECK(f.ntensors == 1 && f.tensors[0].numel == 3 && f.nmeta == 0);
    CHECK(st_to_f32(&f.tensors[0], out) == 0 && out[2] == 9);
    st_close(&f);
    CHECK(count_entries(dir) == 1);
    remove_tmpdir(dir);
}

TEST(writer_rejects_bad_input) {
    char err[512];
    float d[4] = {0};
    int64_t s4 = 4, neg = -1, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
    st_writer *w = st_writer_new();
    CHECK(st_writer_add(w, "a", ST_F32, 1, &s4, d, err, sizeof err) == 0);
    err[0] = 0;
    /* Each bad call must fail and say why. */
#define REJECTS(call, why) CHECK_MSG((call) == -1 && strstr(err, why), "%s: \"%s\"", #call, err)
    REJECTS(st_writer_add(w, "a", ST_F32, 1, &s4, d, err, sizeof err), "duplicate");
    REJECTS(st_writer_add(w, "__metadata__", ST_F32, 1, &s4, d, err, sizeof err), "reserved");
    REJECTS(st_writer_add(w, "b", ST_F32, 1, &neg, d, err, sizeof err), "negative dim");
    REJECTS(st_writer_add(w, "b", ST_F32, 9, nine, d, err, sizeof err), "ndim 9");
    REJECTS(st_writer_add(w, "b", ST_NDTYPES, 1, &s4, d, err, sizeof err), "dtype");
    REJECTS(st_writer_add(w, "\xff\xfe", ST_F32, 1, &s4, d, err, sizeof err), "UTF-8");
    REJECTS(st_writer_add(w, "b", ST_F32, 1, &s4, NULL, err, sizeof err), "NULL data");
#undef REJECTS
    CHECK(st_writer_meta(w, "k", "\xc3") == -1);

    /* The folder does not exist: the message carries strerror's text and nothing is left. */
    err[0] = 0;
    CHECK(st_writer_save(w, "/nonexistent_gplq_dir/x.safetensors", err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "No such file or directory") != NULL, "%s", err);
    st_writer_free(w);
}

TEST(write_error_leaves_nothing_behind) {
    /* A file-size limit makes write(2) fail with EFBIG part way through, as ENOSPC would. */
    char dir[64], path[128], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    static float big[16384];
    int64_t n = 16384;
    st_writer *w = st_writer_new();
    CHECK(st_writer_add(w, "big", ST_F32, 1, &n, big, err, sizeof err) == 0);

    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    err[0] = 0;
    int rc = st_writer_save(w, path, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(rc == -1);
    CHECK_MSG(strstr(err, "cannot write") && strstr(err, strerror(EFBIG)), "%s", err);
    CHECK(count_entries(dir) == 0); /* neither path nor the temporary file */
    st_writer_free(w);
    remove_tmpdir(dir);
}

TEST(empty_checkpoint) {
    char dir[64], path[128], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    st_writer *w = st_writer_new();
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    size_t len;
    unsigned char *raw = read_all(path, &len);
    CHECK(raw && len == 16 && memcmp(raw, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(raw);
    st_file f;
    CHECK_MSG(st_open(&f, path, err, sizeof err) == 0, "%s", err);
    CHECK(f.ntensors == 0 && f.nmeta == 0);
    st_close(&f);
    remove_tmpdir(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* files written by other tools */

/* What `safetensors.torch.save_file({...}, path, metadata={"format": "pt"})` writes for a
 * tiny model: __metadata__ first, tensors sorted by dtype alignment then name, compact JSON
 * padded with spaces to 8 bytes (225 + 7 = 232 = 0xe8), then the raw little-endian data. */
static const unsigned char torch_file[] =
    "\xe8\x00\x00\x00\x00\x00\x00\x00"
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"head.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"head.weight\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
    "\"pos_embed\":{\"dtype\":\"F16\",\"shape\":[1,3],\"data_offsets\":[16,22]}}"
    "       "
    "\x00\x00\x00\x3f" "\x00\x00\xa0\xbf"                  /* F32 0.5, -1.25 */
    "\x80\x3f" "\x00\xc0" "\x20\x3e" "\x49\x40"            /* BF16 1, -2, 0.15625, 3.140625 */
    "\x00\x3c" "\xff\x7b" "\x01\x00";                      /* F16 1, 65504, 2^-24 */
#define TORCH_FILE_LEN (sizeof torch_file - 1)             /* without the literal's NUL */

static void check_torch_file(const st_file *f) {
    float out[4];
    const st_tensor *t;
    CHECK(f->ntensors == 3 && f->nmeta == 1);
    CHECK(st_meta(f, "format") && strcmp(st_meta(f, "format"), "pt") == 0);
    CHECK((t = st_find(f, "head.bias")) && t->dtype == ST_F32 && t->ndim == 1 && t->shape[0] == 2);
    CHECK(t && st_to_f32(t, out) == 0 && out[0] == 0.5f && out[1] == -1.25f);
    CHECK((t = st_find(f, "head.weight")) && t->dtype == ST_BF16 && t->ndim == 2 && t->numel == 4);
    CHECK(t && st_to_f32(t, out) == 0 && out[0] == 1 && out[1] == -2 && out[2] == 0.15625f &&
          out[3] == 3.140625f);
    CHECK((t = st_find(f, "pos_embed")) && t->dtype == ST_F16 && t->shape[0] == 1 &&
          t->shape[1] == 3);
    CHECK(t && st_to_f32(t, out) == 0 && out[0] == 1 && out[1] == 65504 && out[2] == 0x1p-24f);
}

TEST(reads_pytorch_style_file) {
    char err[512];
    CHECK(TORCH_FILE_LEN == 8 + 232 + 22);
    /* From memory, in an exactly-sized heap copy so ASan sees any over-read. */
    unsigned char *buf = malloc(TORCH_FILE_LEN);
    memcpy(buf, torch_file, TORCH_FILE_LEN);
    st_file f;
    CHECK_MSG(st_open_mem(&f, buf, TORCH_FILE_LEN, err, sizeof err) == 0, "%s", err);
    CHECK(f.map == buf && f.map_len == TORCH_FILE_LEN);
    check_torch_file(&f);
    st_close(&f);
    free(buf);

    /* From disk, through mmap. */
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/torch.safetensors", dir);
    CHECK(write_all_file(path, torch_file, TORCH_FILE_LEN) == 0);
    CHECK_MSG(st_open(&f, path, err, sizeof err) == 0, "%s", err);
    check_torch_file(&f);
    st_close(&f);
    remove_tmpdir(dir);
}

TEST(accepts_valid_oddities) {
    /* Things other writers do that are valid: whitespace around the JSON, no padding (so the
     * data is unaligned), header order different from offset order, zero-sized tensors,
     * escapes in names, an empty __metadata__. */
    static const char hdr[] =
        " \n{ \"b\" : {\"data_offsets\":[2,6], \"shape\":[], \"dtype\":\"F32\"},\n"
        "  \"a\\u00e9\" : {\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]},\n"
        "  \"z\" : {\"dtype\":\"F64\",\"shape\":[0, 3],\"data_offsets\":[6,6]},\n"
        "  \"__metadata__\": {} }\t";
    size_t hlen = sizeof hdr - 1, len = 8 + hlen + 6;
    unsigned char *buf = malloc(len);
    uint64_t n = hlen;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, hdr, hlen);
    int16_t i16 = -300;
    float f32 = 2.5f;
    memcpy(buf + 8 + hlen, &i16, 2);
    memcpy(buf + 8 + hlen + 2, &f32, 4);
    char err[512];
    st_file f;
    CHECK_MSG(st_open_mem(&f, buf, len, err, sizeof err) == 0, "%s", err);
    CHECK(f.ntensors == 3 && f.nmeta == 0);
    if (f.ntensors == 3) {
        CHECK(strcmp(f.tensors[0].name, "b") == 0);            /* header order kept */
        CHECK(strcmp(f.tensors[1].name, "a\xc3\xa9") == 0);   /* \u00e9 decoded to UTF-8 */
        CHECK(strcmp(f.tensors[2].name, "z") == 0 && f.tensors[2].numel == 0);
        float out;
        CHECK(f.tensors[0].ndim == 0 && f.tensors[0].numel == 1);
        CHECK(st_to_f32(&f.tensors[0], &out) == 0 && out == 2.5f); /* unaligned F32 */
        CHECK(st_to_f32(&f.tensors[1], &out) == 0 && out == -300.0f);
    }
    st_close(&f);
    free(buf);
}

TEST(open_errors) {
    char err[512];
    st_file f;
    memset(&f, 0xAB, sizeof f);
    CHECK(st_open(&f, "/nonexistent_gplq/x.safetensors", err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "/nonexistent_gplq/x.safetensors") && strstr(err, "No such file"),
              "%s", err);
    CHECK(is_zeroed(&f));
    CHECK(st_open(&f, "/tmp", err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "not a regular file"), "%s", err);
    CHECK(st_open_mem(&f, NULL, 0, err, sizeof err) == -1 && strstr(err, "too short"));
    /* A tiny error buffer is still NUL-terminated and nothing overflows. */
    char small[8];
    CHECK(st_open_mem(&f, "\x01", 1, small, sizeof small) == -1 && strlen(small) == 7);
    CHECK(st_open_mem(&f, "\x01", 1, NULL, 0) == -1);
}

/* ---------------------------------------------------------------------------------------- */
/* hostile files */

TEST(hostile_corpus) {
    const char *dir = GPLQ_SRC_DIR "/tests/safetensors_corpus";
    char path[2048], line[1024], err[512];
    snprintf(path, sizeof path, "%s/EXPECTED", dir);
    FILE *fp = fopen(path, "r");
    CHECK_MSG(fp != NULL, "cannot open %s (is GPLQ_SRC_DIR right?)", path);
    if (!fp) return;
    int cases = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        char *tab = strchr(line, '\t');
        CHECK_MSG(tab != NULL, "EXPECTED line without a tab: %s", line);
        if (!tab) continue;
        *tab = '\0';
        const char *file = line, *want = tab + 1;
        cases++;
        snprintf(path, sizeof path, "%s/%s", dir, file);

        st_file f;
        err[0] = '\0';
        int rc = st_open(&f, path, err, sizeof err);
        CHECK_MSG(rc == -1, "%s: st_open accepted a hostile file", file);
        if (rc == 0) st_close(&f);
        CHECK_MSG(strstr(err, want) != NULL, "%s: message \"%s\" lacks \"%s\"", file, err, want);
        CHECK_MSG(is_zeroed(&f), "%s: f not zeroed after failure", file);

        /* The same bytes from memory, in an exactly-sized buffer. */
        size_t len;
        unsigned char *buf = read_all(path, &len);
        CHECK_MSG(buf != NULL, "cannot read %s", path);
        if (!buf) continue;
        err[0] = '\0';
        rc = st_open_mem(&f, buf, len, err, sizeof err);
        CHECK_MSG(rc == -1, "%s: st_open_mem accepted a hostile file", file);
        if (rc == 0) st_close(&f);
        CHECK_MSG(strstr(err, want) != NULL, "%s (mem): message \"%s\" lacks \"%s\"", file, err,
                  want);
        free(buf);
    }
    fclose(fp);
    CHECK_MSG(cases >= 15, "only %d corpus cases", cases);
}

/* A file of an 8-byte length and the header "{" items... "}", where items are n copies of
 * fmt formatted with their index (and a comma between two), in a new buffer (*len bytes). */
static unsigned char *header_file(const char *first, const char *fmt, long n, const char *last,
                                  size_t *len) {
    size_t cap = 64 + strlen(first) + strlen(last) + (size_t)n * (strlen(fmt) + 24), o = 8;
    unsigned char *buf = malloc(cap);
    o += (size_t)snprintf((char *)buf + o, cap - o, "{%s", first);
    for (long i = 0; i < n; i++) {
        if (i) buf[o++] = ',';
        o += (size_t)snprintf((char *)buf + o, cap - o, fmt, i);
    }
    o += (size_t)snprintf((char *)buf + o, cap - o, "%s}", last);
    uint64_t hl = o - 8;
    memcpy(buf, &hl, 8);
    *len = o;
    return buf;
}

TEST(header_bombs_are_refused_before_parsing) {
    /* 200,000 zero-byte tensors: a 11 MB header that jansson made 200 MB of (1.8 GB for the
     * 100 MB a header may have); refused by counting, naming the limit */
    char err[512] = "";
    st_file f;
    size_t len;
    const char *tiny = "\"%lx\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
    unsigned char *buf = header_file("", tiny, 2 * ST_MAX_TENSORS, "", &len);
    int rc = st_open_mem(&f, buf, len, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, "more than 100000 entries, the limit"), "%d: %s", rc, err);
    CHECK(is_zeroed(&f));
    free(buf);
    /* as many as the limit are a valid (if odd) file */
    buf = header_file("", tiny, ST_MAX_TENSORS, "", &len);
    rc = st_open_mem(&f, buf, len, err, sizeof err);
    CHECK_MSG(rc == 0 && f.ntensors == ST_MAX_TENSORS, "%d: %s", rc, err);
    if (rc == 0) st_close(&f);
    free(buf);
    /* empty lists in __metadata__ (jansson: 136 bytes for each 3 of header) */
    buf = header_file("\"__metadata__\":[", "[]", ST_MAX_HEADER_CONTAINERS, "]", &len);
    rc = st_open_mem(&f, buf, len, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, "more than 400000 objects and lists, the limit"), "%s", err);
    free(buf);
    /* a shape of two million dims */
    buf = header_file("\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,0],\"shape\":[", "0",
                      ST_MAX_HEADER_VALUES, "]}", &len);
    rc = st_open_mem(&f, buf, len, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, "more than 2000000 JSON values, the limit"), "%s", err);
    free(buf);
    /* what is in strings does not count: one key of a million braces, commas, colons and
     * escaped quotes */
    char *key = malloc(6000002);
    for (int i = 0; i < 6000000; i += 6) memcpy(key + i, "{,[:\\\"", 6);
    memcpy(key + 6000000, "x", 2);
    unsigned char *one = malloc(6000100);
    int n = snprintf((char *)one + 8, 6000092, "{\"__metadata__\":{\"%s\":\"v\"}}", key);
    uint64_t hl = (uint64_t)n;
    memcpy(one, &hl, 8);
    rc = st_open_mem(&f, one, 8 + (size_t)n, err, sizeof err);
    CHECK_MSG(rc == 0 && f.nmeta == 1, "%d: %s", rc, err);
    if (rc == 0) st_close(&f);
    free(one);
    free(key);
}

/* Deterministic 64-bit LCG (Knuth's MMIX constants); returns the high bits, the good ones. */
static uint64_t lcg_state;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg_state >> 33);
}

TEST(fuzz_mutated_headers) {
    /* A valid file with several dtypes and metadata, written by our writer. */
    char dir[64], path[128], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/base.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[5] = {0x3C00, 0x7C00, 0x0001, 0x8000, 0x7E00};
    int8_t c[3] = {-1, 0, 1};
    uint8_t d = 1;
    int64_t sa[2] = {2, 3}, sb = 5, sc = 3;
    st_writer *w = st_writer_new();
    st_writer_meta(w, "format", "pt");
    CHECK(st_writer_add(w, "a", ST_F32, 2, sa, a, err, sizeof err) == 0);
    CHECK(st_writer_add(w, "b", ST_F16, 1, &sb, b, err, sizeof err) == 0);
    CHECK(st_writer_add(w, "c", ST_I8, 1, &sc, c, err, sizeof err) == 0);
    CHECK(st_writer_add(w, "d", ST_BOOL, 0, NULL, &d, err, sizeof err) == 0);
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    size_t base_len;
    unsigned char *base = read_all(path, &base_len);
    remove_tmpdir(dir);
    CHECK(base != NULL);
    if (!base) return;
    uint64_t hlen;
    memcpy(&hlen, base, 8);
    size_t span = 8 + (size_t)hlen; /* length field + header: where mutations land */
    static const char alphabet[] = "{}[]\",:0123456789-+.eE \\u";

    lcg_state = 20240601;
    int accepted = 0, rejected = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = base_len;
        unsigned char *buf = malloc(len);
        memcpy(buf, base, len);
        int nmut = 1 + (int)(lcg() % 4);
        for (int m = 0; m < nmut; m++) {
            uint32_t op = lcg() % 6, r = lcg();
            size_t lim = span < len ? span : len;
            if (op == 0 && lim > 0) { /* flip one bit */
                buf[r % lim] ^= (unsigned char)(1u << (lcg() % 8));
            } else if (op == 1 && lim > 8) { /* a JSON-ish character */
                buf[8 + r % (lim - 8)] = (unsigned char)alphabet[lcg() % (sizeof alphabet - 1)];
            } else if (op == 2 && lim > 8) { /* any byte */
                buf[8 + r % (lim - 8)] = (unsigned char)lcg();
            } else if (op == 3 && lim > 8) { /* another digit: keeps the JSON valid */
                for (size_t k = 0, p = r % (lim - 8); k < lim - 8; k++, p = (p + 1) % (lim - 8)) {
                    if (buf[8 + p] >= '0' && buf[8 + p] <= '9') {
                        buf[8 + p] = (unsigned char)('0' + lcg() % 10);
                        break;
                    }
                }
            } else if (op == 4 && len >= 8) { /* a length field near the truth, or anything */
                uint64_t n = (r & 1) ? hlen + (uint64_t)(lcg() % 33) - 16
                                     : ((uint64_t)lcg() << 32 | lcg()) >> (lcg() % 64);
                memcpy(buf, &n, 8);
            } else if (op == 5) { /* truncate into an exactly-sized buffer */
                size_t nl = r % (len + 1);
                unsigned char *nb = malloc(nl ? nl : 1);
                memcpy(nb, buf, nl);
                free(buf);
                buf = nb;
                len = nl;
            }
        }
        st_file f;
        err[0] = '\0';
        if (st_open_mem(&f, buf, len, err, sizeof err) == 0) {
            accepted++;
            const unsigned char *lo = buf + 8, *hi = buf + len;
            for (int i = 0; i < f.ntensors; i++) {
                const st_tensor *t = &f.tensors[i];
                const unsigned char *p = t->data;
                CHECK_MSG(p >= lo && p <= hi && t->nbytes <= (size_t)(hi - p),
                          "iter %d: tensor %s out of range", iter, t->name);
                CHECK(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
                CHECK(st_find(&f, t->name) == t);
                float *out = malloc(((size_t)t->numel + 1) * sizeof *out);
                CHECK(st_to_f32(t, out) == 0); /* reads every byte: ASan checks the range */
                free(out);
            }
            st_close(&f);
        } else {
            rejected++;
            CHECK_MSG(err[0] != '\0', "iter %d: failure without a message", iter);
            CHECK(is_zeroed(&f));
        }
        free(buf);
    }
    CHECK(accepted > 0 && rejected > 0);
    free(base);
}

TEST_MAIN()
