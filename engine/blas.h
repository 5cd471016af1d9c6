/*
 * blas.h: making sure OpenBLAS runs the right kernels.
 *
 * Debian's OpenBLAS 0.3.21 detects recent AVX-512 CPUs as "Prescott" and runs SSE3 kernels,
 * 4-5x slower. OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads (before main), so
 * the only fix from inside the program is to set the variable and exec ourselves again.
 */
#ifndef GPLQ_BLAS_H
#define GPLQ_BLAS_H

/* Call first thing in main. If OPENBLAS_CORETYPE is unset and the CPU has AVX-512F, sets it to
 * SkylakeX and re-executes the program with the same arguments (does not return then; if the
 * exec fails it carries on with the slow kernel and says so). A value the user set is kept. */
void blas_setup(char **argv);
/* The kernel OpenBLAS chose ("SkylakeX", "Haswell", ...), and how: "auto", "user", "gplq". */
const char *blas_core(void);
const char *blas_core_source(void);
/* Sets OpenBLAS's and OpenMP's thread count (n <= 0: leave the defaults). */
void blas_set_threads(int n);

#endif
