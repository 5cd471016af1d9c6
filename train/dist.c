/*
 * dist.c: see dist.h. A thin layer over MPI_COMM_WORLD; without MPI every function answers for
 * rank 0 of 1.
 */
#include "train/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/clock.h"

static int g_on;        /* MPI initialized by dist_init */
static int g_rank, g_size = 1;
static double g_reduce_s;

/* Whether a launcher started us: Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE, PMIx launchers
 * PMIX_RANK. A program run by hand initializes nothing. */
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK");
}

static int mpi_fail(int rc, const char *what, char *err, size_t errlen) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = 0;
    snprintf(err, errlen, "MPI %s failed on rank %d of %d: %s", what, g_rank, g_size,
             len ? msg : "unknown error");
    return -1;
}

int dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    if (g_on || !launched()) return 0;
    /* only the main thread calls MPI (OpenMP threads compute, never communicate) */
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "init", err, errlen);
    g_on = 1;
    /* errors come back as codes, turned into messages here, instead of aborting inside MPI */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return 0;
}

void dist_finalize(void) {
    if (!g_on) return;
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    g_on = 0;
    g_rank = 0;
    g_size = 1;
}

void dist_abort(int code) {
    if (!g_on) return;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
int dist_is_root(void) { return g_rank == 0; }

void dist_shard(int n, int *lo, int *cnt) {
    int base = n / g_size, extra = n % g_size;
    *cnt = base + (g_rank < extra);
    *lo = g_rank * base + (g_rank < extra ? g_rank : extra);
}

/* MPI counts are ints: a buffer past INT_MAX elements goes in pieces (never the case for
 * today's models: 2^31 floats are 8 GB of gradients). */
#define DIST_CHUNK ((size_t)INT_MAX)

int dist_allreduce_sum(float *buf, size_t n, char *err, size_t errlen) {
    if (!g_on || g_size == 1) return 0;
    double t0 = clock_mono_s();
    for (size_t off = 0; off < n; off += DIST_CHUNK) {
        int c = (int)(n - off < DIST_CHUNK ? n - off : DIST_CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "allreduce", err, errlen);
    }
    g_reduce_s += clock_mono_s() - t0;
    return 0;
}

int dist_allreduce_sum_i64(int64_t *buf, size_t n, char *err, size_t errlen) {
    if (!g_on || g_size == 1) return 0;
    for (size_t off = 0; off < n; off += DIST_CHUNK) {
        int c = (int)(n - off < DIST_CHUNK ? n - off : DIST_CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, c, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "allreduce", err, errlen);
    }
    return 0;
}

int dist_any(int flag) {
    if (!g_on || g_size == 1) return flag != 0;
    int v = flag != 0;
    /* a failed vote is a broken job: every rank stops rather than guess */
    if (MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return 1;
    return v;
}

int dist_bcast(void *buf, size_t bytes, char *err, size_t errlen) {
    if (!g_on || g_size == 1) return 0;
    for (size_t off = 0; off < bytes; off += DIST_CHUNK) {
        int c = (int)(bytes - off < DIST_CHUNK ? bytes - off : DIST_CHUNK);
        int rc = MPI_Bcast((char *)buf + off, c, MPI_BYTE, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast", err, errlen);
    }
    return 0;
}

double dist_allreduce_seconds(void) { return g_reduce_s; }
