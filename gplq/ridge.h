/*
 * ridge.h: QwT's least squares (gplq/stage2.h): the ridge fit of an error D (n, C) on a block's
 * input X (n, C) with a bias column, and how much of D the fit explains (R^2).
 *
 * The products over all rows run on BLAS (sgemm for the normal equations, dgemm for the fit's
 * predictions); ridge_r2_ref is the plain loop R^2 was first computed by, kept as the
 * reference test_gplq holds ridge_r2 to.
 */
#ifndef GPLQ_RIDGE_H
#define GPLQ_RIDGE_H

#include <stddef.h>

/* The solution sol (C+1, C) of ([X,1]^T [X,1] + reg I) sol = [X,1]^T D, in double, rows 0..C-1
 * the weights (input by output) and row C the bias; reg is lambda times the mean of the
 * left-hand side's diagonal, so one lambda fits any activation scale. Returns 0, or -1 with
 * err (out of memory, or a singular system). */
int ridge_solve(double *sol, const float *X, const float *D, int n, int C, double lambda,
                char *err, size_t errlen);

/* R^2 = 1 - SSE / SST of the prediction [X,1] sol against D, over all rows and outputs (SST
 * about each output's mean; 0 when SST is 0), and the SSE. Returns 0, or -1 with err (out of
 * memory). */
int ridge_r2(double *r2, double *sse, const double *sol, const float *X, const float *D, int n,
             int C, char *err, size_t errlen);
/* The same, one prediction at a time in plain loops: the reference (no allocation). */
void ridge_r2_ref(double *r2, double *sse, const double *sol, const float *X, const float *D,
                  int n, int C);

#endif
