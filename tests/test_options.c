/*
 * test_options.c: config/options.c's parsers that are not the option table's own: the
 * per-channel triple of --mean/--std and the upload's mean/std ("0.5" or "0.485,0.456,0.406"),
 * which gplq, gplq-worker and gplqd all read through opt_parse_triple.
 */
#include "config/options.h"
#include "tests/test.h"

/* Parses s as a mean (the bounds every caller uses); 0 or -1, out and err filled. */
static int mean(const char *s, float out[3], char *err, size_t errlen) {
    return opt_parse_triple(s, "mean", OPT_MEAN_MIN, OPT_MEAN_MAX, out, err, errlen);
}

TEST(triple_one_value_is_every_channel) {
    float v[3] = {9, 9, 9};
    char err[256] = "";
    CHECK(mean("0.5", v, err, sizeof err) == 0);
    CHECK(v[0] == 0.5f && v[1] == 0.5f && v[2] == 0.5f);
    CHECK(mean("-0.25", v, err, sizeof err) == 0 && v[2] == -0.25f);
    CHECK(mean("1e-1", v, err, sizeof err) == 0 && v[1] == 0.1f);
    CHECK(mean("+2", v, err, sizeof err) == 0 && v[0] == 2.0f);
}

TEST(triple_three_values_in_order) {
    float v[3] = {0};
    char err[256] = "";
    CHECK_MSG(mean("0.485,0.456,0.406", v, err, sizeof err) == 0, "%s", err);
    CHECK(v[0] == 0.485f && v[1] == 0.456f && v[2] == 0.406f);
    CHECK(mean(".5,0,-1", v, err, sizeof err) == 0 && v[0] == 0.5f && v[1] == 0 && v[2] == -1);
}

TEST(triple_malformed_is_refused_by_name) {
    const char *bad[] = {"", ",", "0.5,", ",0.5", "0.5,0.5", "1,2,3,4", "1;2;3", " 0.5",
                         "0.5 ", "0.5,,0.5", "nan", "inf", "-inf", "0x10", "0.1,0x1,0.2",
                         "abc", "1,a,2", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        float v[3] = {7, 7, 7};
        char err[256] = "";
        CHECK_MSG(mean(bad[i], v, err, sizeof err) == -1, "'%s' was accepted", bad[i]);
        CHECK_MSG(!strncmp(err, "mean", 4) && strstr(err, "one number or three"), "'%s': %s",
                  bad[i], err);
        CHECK_MSG(v[0] == 7 && v[1] == 7 && v[2] == 7, "'%s' changed the output", bad[i]);
    }
    float v[3];
    char err[256];
    CHECK(opt_parse_triple(NULL, "--std", OPT_STD_MIN, OPT_STD_MAX, v, err, sizeof err) == -1);
    CHECK_MSG(!strncmp(err, "--std", 5), "%s", err);
}

TEST(triple_bounds_name_the_value) {
    float v[3] = {7, 7, 7};
    char err[256] = "";
    /* a std of 0 would divide by zero; 58.4 is ImageNet's std in 0..255 units, a mistake here */
    CHECK(opt_parse_triple("0", "std", OPT_STD_MIN, OPT_STD_MAX, v, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "std 0 is out of range [0.001, 10]"), "%s", err);
    CHECK(opt_parse_triple("0.2,58.4,0.2", "std", OPT_STD_MIN, OPT_STD_MAX, v, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "std 58.4 is out of range"), "%s", err);
    CHECK(v[0] == 7 && v[1] == 7 && v[2] == 7);
    CHECK(opt_parse_triple("0.001,10,5", "std", OPT_STD_MIN, OPT_STD_MAX, v, err, sizeof err) == 0);
    CHECK(v[0] == 0.001f && v[1] == 10 && v[2] == 5);
}

TEST_MAIN()
