/*
 * test_util.c: the utilities every part uses (util/): the clocks and the ISO-8601 text of a
 * time, which the database's rows, the API's download links and the log lines all print, and
 * mkdir -p, and JSON text written without a tree (jtext), held byte for byte to json_dumps.
 */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "tests/test.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/jlog.h"
#include "util/jtext.h"
#include "util/secretbox.h"

/* The text the API's download links printed before util/ (strftime), for comparison. */
static void strftime_iso(int64_t sec, char *out, size_t n) {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

TEST(iso_ms) {
    char s[CLOCK_ISO_MAX];
    clock_iso_ms(0, s);
    CHECK(!strcmp(s, "1970-01-01T00:00:00.000Z"));
    clock_iso_ms(1795814400123LL, s);
    CHECK_MSG(!strcmp(s, "2026-11-27T21:20:00.123Z"), "%s", s);
    clock_iso_ms(1795814400007LL, s);
    CHECK_MSG(!strcmp(s, "2026-11-27T21:20:00.007Z"), "%s", s);
    /* before 1970 the milliseconds still count up within their second */
    clock_iso_ms(-1, s);
    CHECK_MSG(!strcmp(s, "1969-12-31T23:59:59.999Z"), "%s", s);
}

TEST(iso_s) {
    char s[CLOCK_ISO_MAX], want[64];
    clock_iso_s(1795814400, s);
    CHECK_MSG(!strcmp(s, "2026-11-27T21:20:00Z"), "%s", s);
    const int64_t at[] = {0, 86399, 951782400 /* 2000-02-29 */, 1795810859, 4102444799};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        clock_iso_s(at[i], s);
        strftime_iso(at[i], want, sizeof want);
        CHECK_MSG(!strcmp(s, want), "%s, strftime %s", s, want);
    }
}

TEST(clocks) {
    int64_t wall = clock_wall_ms();
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    int64_t sys = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
    CHECK(wall <= sys && sys - wall < 1000);
    double a = clock_mono_s(), b = clock_mono_ms();
    CHECK(b >= a * 1e3 && b - a * 1e3 < 1000);
    CHECK(clock_mono_s() >= a);
    /* a deadline is the wall clock ahead by the given time, nanoseconds normalized */
    struct timespec d;
    clock_deadline(&d, 1999);
    int64_t dms = (int64_t)d.tv_sec * 1000 + d.tv_nsec / 1000000;
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    CHECK(dms - sys >= 1999 - 1 && dms - sys < 1999 + 1000);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

TEST(mkdirs) {
    char root[] = "/tmp/gplq_test_util_XXXXXX", path[256];
    CHECK(mkdtemp(root) != NULL);
    snprintf(path, sizeof path, "%s/a/b/c", root);
    CHECK(fs_mkdirs(path) == 0 && is_dir(path));
    CHECK(fs_mkdirs(path) == 0); /* there already: done */
    snprintf(path, sizeof path, "%s/a/b/", root);
    CHECK(fs_mkdirs(path) == 0); /* a trailing slash too */
    snprintf(path, sizeof path, "%s/a", root);
    CHECK(fs_mkdir(path) == 0);
    /* a file in the way is ENOTDIR, at the end of the path or before it */
    snprintf(path, sizeof path, "%s/f", root);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    errno = 0;
    CHECK(fs_mkdir(path) == -1 && errno == ENOTDIR);
    snprintf(path, sizeof path, "%s/f/g", root);
    errno = 0;
    CHECK(fs_mkdirs(path) == -1 && errno == ENOTDIR);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

TEST(secretbox_seals_and_refuses_the_wrong_key_row_or_bytes) {
    char root[] = "/tmp/gplq_test_sb_XXXXXX", path[256], err[256];
    CHECK(mkdtemp(root) != NULL);
    snprintf(path, sizeof path, "%s/secret.key", root);
    uint8_t key[SECRETBOX_KEY_BYTES], again[SECRETBOX_KEY_BYTES], other[SECRETBOX_KEY_BYTES];
    CHECK(secretbox_key_load(path, 0, key, err, sizeof err) == -1); /* absent, not created */
    CHECK(secretbox_key_load(path, 1, key, err, sizeof err) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(secretbox_key_load(path, 1, again, err, sizeof err) == 0 && !memcmp(key, again, sizeof key));
    memcpy(other, key, sizeof key);
    other[0] ^= 1;

    const char *secret = "a webhook secret of 32 characters";
    char *sealed = secretbox_seal(key, secret, "j_1");
    CHECK(sealed && secretbox_is_sealed(sealed) && !strstr(sealed, "webhook"));
    char *twice = secretbox_seal(key, secret, "j_1");
    CHECK(twice && strcmp(sealed, twice)); /* a fresh nonce each time */
    char *plain = secretbox_open(key, sealed, "j_1", err, sizeof err);
    CHECK(plain && !strcmp(plain, secret));
    free(plain);
    CHECK(secretbox_open(key, sealed, "j_2", err, sizeof err) == NULL); /* another row */
    CHECK(secretbox_open(other, sealed, "j_1", err, sizeof err) == NULL); /* another key */
    CHECK(strstr(err, "key") != NULL);
    size_t n = strlen(sealed);
    sealed[n - 1] = sealed[n - 1] == '0' ? '1' : '0'; /* a changed tag */
    CHECK(secretbox_open(key, sealed, "j_1", err, sizeof err) == NULL);
    CHECK(secretbox_open(key, secret, "j_1", err, sizeof err) == NULL && !secretbox_is_sealed(secret));
    free(sealed);
    free(twice);

    /* a key file others can read, or of the wrong length, is refused */
    CHECK(chmod(path, 0644) == 0);
    CHECK(secretbox_key_load(path, 1, key, err, sizeof err) == -1 && strstr(err, "chmod 600"));
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("abcd\n", f);
        fclose(f);
    }
    CHECK(chmod(path, 0600) == 0);
    CHECK(secretbox_key_load(path, 1, key, err, sizeof err) == -1 && strstr(err, "64 hex"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

/* ---- jtext against json_dumps ---- */

/* json_dumps of v (a new tree, taken) as the API writes it, at precision p; owned. */
static char *dumps_taken(json_t *v, int p) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(p));
    json_decref(v);
    return s;
}

TEST(jtext_members_are_the_text_json_dumps_writes) {
    const char *strs[] = {"", "plain", "q\"uote b\\ack /slash", "\b\f\n\r\t\x01\x1f\x7f",
                          "caf\xc3\xa9 \xf0\x9f\x98\x80", "bad \xff\xfe utf-8\x01", NULL};
    const double reals[] = {0.6, -0.0, 1.0, 1e-5, 1e20, 1e300, 123456789012345678.0, 1.0 / 3,
                            -2.5e-308, 5e-324, 0.1 + 0.2, 96.41};
    const int64_t ints[] = {0, -1, INT64_MAX, INT64_MIN, 1234567};
    for (int p = 1; p <= 17; p += 8) { /* 1, 9, 17 */
        jtext t;
        jtext_begin(&t, p);
        json_t *o = json_object();
        char k[16];
        for (int i = 0; i < (int)(sizeof strs / sizeof *strs); i++) {
            snprintf(k, sizeof k, "s%d", i);
            jtext_str(&t, k, strs[i]);
            json_object_set_new(o, k, jlog_str(strs[i]));
        }
        for (int i = 0; i < (int)(sizeof reals / sizeof *reals); i++) {
            snprintf(k, sizeof k, "r%d", i);
            jtext_real(&t, k, reals[i]);
            json_object_set_new(o, k, json_real(reals[i]));
        }
        for (int i = 0; i < (int)(sizeof ints / sizeof *ints); i++) {
            snprintf(k, sizeof k, "i%d", i);
            jtext_int(&t, k, ints[i]);
            json_object_set_new(o, k, json_integer(ints[i]));
        }
        jtext_json(&t, "j", NULL);
        json_object_set_new(o, "j", json_null());
        jtext_str(&t, "key \"\n", "v");
        json_object_set_new(o, "key \"\n", json_string("v"));
        /* nesting: {"nest":{"a":[1,{"b":null,"r":0.6},[]],"c":{}},"after":2}, one left open */
        jtext_object(&t, "nest");
        jtext_array(&t, "a");
        jtext_int(&t, NULL, 1);
        jtext_object(&t, NULL);
        jtext_json(&t, "b", NULL);
        jtext_real(&t, "r", 0.6);
        jtext_close(&t);
        jtext_array(&t, NULL);
        jtext_close(&t);
        jtext_close(&t);
        jtext_object(&t, "c");
        jtext_close(&t);
        jtext_close(&t);
        jtext_int(&t, "after", 2);
        jtext_array(&t, "open");
        json_object_set_new(o, "nest", json_pack("{s:[i, {s:n, s:f}, []], s:{}}", "a", 1, "b",
                                                 "r", 0.6, "c"));
        json_object_set_new(o, "after", json_integer(2));
        json_object_set_new(o, "open", json_array());
        size_t n = 0;
        char *got = jtext_end(&t, 1, &n), *want = dumps_taken(o, p);
        CHECK(got && want && n == strlen(want) + 1 && got[n - 1] == '\n');
        if (got && want) got[n - 1] = '\0';
        CHECK_MSG(got && want && !strcmp(got, want), "precision %d:\n got %s\nwant %s", p, got, want);
        free(got);
        free(want);
    }
    jtext t;
    jtext_begin(&t, 15);
    char *empty = jtext_end(&t, 0, NULL);
    CHECK(empty && !strcmp(empty, "{}"));
    free(empty);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A random JSON value: reals of every magnitude (any finite bit pattern, or a short decimal as
 * a user types one), integers, strings with escapes and digits in them, nesting. */
static json_t *random_value(int depth) {
    switch (rng() % (depth < 3 ? 7 : 5)) {
    case 0: {
        double d;
        do {
            uint64_t b = rng();
            memcpy(&d, &b, sizeof d);
        } while (!isfinite(d));
        return json_real(d);
    }
    case 1: return json_real((double)(int64_t)(rng() % 2000001 - 1000000) / 1e4);
    case 2: return json_integer((json_int_t)rng());
    case 3: {
        const char *pool[] = {"1.5e-3", "a\"b", "x\\", "-0.25", "\n\t", "caf\xc3\xa9", "", "e+10"};
        return json_string(pool[rng() % 8]);
    }
    case 4: return rng() % 2 ? json_true() : json_null();
    case 5: {
        json_t *a = json_array();
        for (int i = (int)(rng() % 5); i > 0; i--) json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = (int)(rng() % 5); i > 0; i--) {
            char k[16];
            snprintf(k, sizeof k, "k%d.5e%d", i, (int)(rng() % 9));
            json_object_set_new(o, k, random_value(depth + 1));
        }
        return o;
    }
    }
}

/* The property the GET path rests on: a column stored as the store stores JSON (compact, reals
 * at 17 digits) spliced by jtext_json gives the text that parsing it and dumping it at the
 * API's precision gives. */
TEST(jtext_json_splices_stored_json_as_parsing_and_dumping_it_would) {
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(0);
        char *stored = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
        jtext t;
        jtext_begin(&t, 15);
        jtext_json(&t, "v", stored);
        char *got = jtext_end(&t, 0, NULL);
        json_t *o = json_object();
        json_object_set_new(o, "v", json_loads(stored, JSON_DECODE_ANY, NULL));
        char *want = dumps_taken(o, 15);
        if (!got || !want || strcmp(got, want)) {
            if (bad++ < 3) CHECK_MSG(0, "stored %s\n got %s\nwant %s", stored, got, want);
        }
        free(stored);
        free(got);
        free(want);
    }
    CHECK_MSG(bad == 0, "%d of 3000 differ", bad);
}

/* The access log's line written as text is the line jlog_json writes of the same tree (their
 * timestamps aside): a client's bytes that are not UTF-8 repaired alike, reals at the log's
 * precision. */
TEST(jlog_text_line_is_jlog_json_line) {
    char path[] = "/tmp/gplq-test-jlog-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    const char *raw = "/v1/jobs/\xff\x01x";
    json_t *o = json_pack("{s:s, s:o, s:s?, s:i, s:f}", "request_id", "r1", "path", jlog_str(raw),
                          "route", NULL, "status", 404, "ms", 0.1 + 0.2);
    jlog_json("warn", o);
    json_decref(o);
    jtext t;
    jlog_begin(&t, "warn");
    jtext_str(&t, "request_id", "r1");
    jtext_str(&t, "path", raw);
    jtext_str(&t, "route", NULL);
    jtext_int(&t, "status", 404);
    jtext_real(&t, "ms", 0.1 + 0.2);
    jlog_end(&t);
    dup2(saved, 2);
    close(saved);
    char buf[1024] = {0};
    CHECK(pread(fd, buf, sizeof buf - 1, 0) > 0);
    close(fd);
    unlink(path);
    char *second = strchr(buf, '\n');
    CHECK(second != NULL);
    if (!second) return;
    *second++ = '\0';
    char *end = strchr(second, '\n');
    CHECK(end && !end[1]); /* one line each */
    if (end) *end = '\0';
    /* {"ts":"2026-...Z", is the same length in both: compare what follows it */
    const char *a = strstr(buf, "\"level\""), *b = strstr(second, "\"level\"");
    CHECK_MSG(a && b && !strcmp(a, b) && strstr(a, "\"ms\":0.3}") && strstr(a, "\"route\":null"),
              "\n tree %s\n text %s", buf, second);
}

TEST_MAIN()
