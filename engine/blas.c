/*
 * blas.c: see blas.h.
 */
#include "engine/blas.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Marks that gplq itself chose the core, so the re-executed program can say so. */
#define MARK "GPLQ_BLAS_CORE_SET"

void blas_setup(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    setenv(MARK, "1", 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "gplq: warning: could not re-execute with OPENBLAS_CORETYPE=SkylakeX; "
                    "OpenBLAS may run slow kernels (set OPENBLAS_CORETYPE yourself)\n");
    unsetenv("OPENBLAS_CORETYPE");
}

const char *blas_core(void) {
    const char *s = openblas_get_corename();
    return s ? s : "unknown";
}

const char *blas_core_source(void) {
    if (getenv(MARK)) return "gplq";
    return getenv("OPENBLAS_CORETYPE") ? "user" : "auto";
}

void blas_set_threads(int n) {
    if (n <= 0) return;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}
