/*
 * test_util.c: the utilities every part uses (util/): the clocks and the ISO-8601 text of a
 * time, which the database's rows, the API's download links and the log lines all print, and
 * mkdir -p.
 */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "tests/test.h"
#include "util/clock.h"
#include "util/fs.h"
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

TEST_MAIN()
