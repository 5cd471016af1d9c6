/*
 * test.h: the smallest test harness that does the job. Each tests/test_*.c is its own program;
 * TEST(name) defines a case, CHECK* record failures without stopping the case, and
 * TEST_MAIN() runs every registered case and prints "N passed, N failed" (a case passes when
 * none of its checks failed). Exit status is non-zero when anything failed.
 */
#ifndef GPLQ_TEST_H
#define GPLQ_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_case { const char *name; test_fn fn; };

extern struct test_case test_cases_[256];
extern int test_ncases_, test_failed_checks_;

#define TEST(name)                                                                                \
    static void test_##name(void);                                                               \
    __attribute__((constructor)) static void test_register_##name(void) {                       \
        test_cases_[test_ncases_++] = (struct test_case){#name, test_##name};                   \
    }                                                                                             \
    static void test_##name(void)

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
            test_failed_checks_++;                                                                \
        }                                                                                         \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                      \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
            test_failed_checks_++;                                                                \
        }                                                                                         \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                     \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%s = %g, %s = %g, tolerance %g", #a, \
              (double)(a), #b, (double)(b), (double)(tol))

#define TEST_MAIN()                                                                               \
    struct test_case test_cases_[256];                                                            \
    int test_ncases_, test_failed_checks_;                                                        \
    int main(int argc, char **argv) {                                                             \
        int passed = 0, failed = 0;                                                               \
        for (int i = 0; i < test_ncases_; i++) {                                                  \
            if (argc > 1 && !strstr(test_cases_[i].name, argv[1])) continue;                     \
            int before = test_failed_checks_;                                                     \
            test_cases_[i].fn();                                                                  \
            int ok = test_failed_checks_ == before;                                               \
            printf("%s %s\n", ok ? "ok  " : "FAIL", test_cases_[i].name);                       \
            fflush(stdout);                                                                       \
            if (ok) passed++; else failed++;                                                      \
        }                                                                                         \
        printf("%s: %d passed, %d failed\n", argv[0], passed, failed);                           \
        return failed ? 1 : 0;                                                                    \
    }

#endif
