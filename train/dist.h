/*
 * dist.h: data-parallel runs across processes and machines, on MPI (Open MPI).
 *
 * `mpirun -np N gplq quantize ...` starts N copies of the program, the ranks. Each holds a
 * replica of the model and takes its share of every global batch (dist_shard); the gradients
 * are summed with one allreduce per step over one fused buffer (dist_allreduce_sum), so the
 * replicas take the same optimizer step, the one a single process would take on the whole
 * batch. Whatever must be computed once (the PCA basis, the initial quantizer steps, a resumed
 * checkpoint) is computed by rank 0 and sent to the others (dist_bcast).
 *
 * Without a launcher, dist_init does not initialize MPI at all: the program is rank 0 of 1,
 * every call here is a no-op (dist_allreduce_sum leaves the buffer as it is) and nothing
 * changes. MPI is initialized only when the environment says an MPI launcher started us
 * (OMPI_COMM_WORLD_SIZE from Open MPI's mpirun, PMIX_RANK from a PMIx launcher such as
 * srun --mpi=pmix).
 *
 * Collectives must be called by every rank in the same order. A rank that fails calls
 * dist_abort (from a program's main: library code returns errors as everywhere else), which
 * ends every rank, instead of leaving the others waiting in a collective forever.
 */
#ifndef GPLQ_DIST_H
#define GPLQ_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Joins the MPI job if a launcher started this process, else does nothing. Call once, early
 * in main (after blas_setup, which may re-execute the program). 0, or -1 with a message. */
int dist_init(int *argc, char ***argv, char *err, size_t errlen);
/* Leaves the MPI job (a barrier first, so no rank exits while another still sends). No-op
 * without MPI. */
void dist_finalize(void);
/* Ends every rank of the job with status code (MPI_Abort); without MPI, returns. */
void dist_abort(int code);

int dist_rank(void);   /* 0 without MPI */
int dist_size(void);   /* 1 without MPI */
/* 1 on rank 0: the rank that prints, writes files and reads the stop channel. */
int dist_is_root(void);

/* This rank's part of n items split over the ranks in order: items [*lo, *lo + *cnt), the
 * first n % size ranks one more than the others. Every rank's parts of every global batch
 * concatenated in rank order are the batch. */
void dist_shard(int n, int *lo, int *cnt);

/* buf (n floats) = the sum of every rank's buf, in place, in one call (MPI_Allreduce). */
int dist_allreduce_sum(float *buf, size_t n, char *err, size_t errlen);
/* The same for 64-bit integers (counts). */
int dist_allreduce_sum_i64(int64_t *buf, size_t n, char *err, size_t errlen);
/* 1 on every rank if flag is nonzero on any: a decision all ranks must take together (stop). */
int dist_any(int flag);
/* buf (bytes) from rank 0 to every rank. */
int dist_bcast(void *buf, size_t bytes, char *err, size_t errlen);

/* Seconds spent in dist_allreduce_sum since the start (the bench's allreduce share). */
double dist_allreduce_seconds(void);

#endif
