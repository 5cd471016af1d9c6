/*
 * mpijob.h: a job run across processes or machines (its spec's "mpi"), through the launcher
 * gplqd's mpi_launch names, e.g. "mpirun -np 4 --hostfile /etc/gplq/hosts".
 *
 * The worker that claimed the job stays its owner: it writes the run's description next to
 * the job's files (DATA/jobs/<id>/mpi.json), starts `/bin/sh -c 'exec LAUNCH gplq-worker
 * mpi-rank FILE'` and keeps the lease, the heartbeat and the job's records as for a job it runs
 * itself. Every rank loads the model and the data and calls gplq_run (stage 1 data-parallel,
 * evaluations split, train/dist.h); rank 0 reads and writes the stage-1 checkpoint, writes the
 * artifacts, and speaks to the worker:
 *   - rank 0's stdout (the launcher passes it through) carries JSON lines: {"mpi": "progress",
 *     ...}, {"mpi": "metric", ...}, and one last {"mpi": "done" | "stopped" | "error", ...};
 *   - rank 0's stdin (mpirun forwards its own to rank 0) carries "run" at the start and "stop"
 *     when the job must stop (cancel, a lost lease, SIGTERM): the ranks checkpoint and end
 *     together. Its end of file after "run" (the worker died) stops them the same way.
 * A launcher that ends without a last line (a rank died: mpirun then ends the others) is
 * MPIJOB_RANK_DIED: the attempt failed and the job goes back to the queue to resume from its
 * last checkpoint. Every host must see the data dir at the same path (the model blob, the
 * dataset cache, the job's folder).
 */
#ifndef GPLQ_WORKER_MPIJOB_H
#define GPLQ_WORKER_MPIJOB_H

#include <stddef.h>

#include "config/jobspec.h"
#include "gplq/pipeline.h"
#include "storage/store.h"
#include "worker/job.h"

/* mpijob_run's value when the launcher ended without a last word from rank 0. */
#define MPIJOB_RANK_DIED 2

/* Runs the claimed job (borrowed) across the ranks w->mpi_launch starts, with spec js, the
 * stage-1 state file state_path and the artifacts folder art_dir. progress(ctx, ...) hears of
 * every step as gplq_run's caller would (on the worker's thread) and its nonzero return stops
 * the run. Returns 0 (the artifacts are written), 1 (stopped, checkpointed), -1 (failed: err,
 * and errno the rank's if the disk failed it), or MPIJOB_RANK_DIED (err says how). */
int mpijob_run(const worker_env *w, const store_claim *job, const jobspec *js,
               const char *state_path, const char *art_dir, gplq_progress_fn progress, void *ctx,
               char *err, size_t errlen);

/* `gplq-worker mpi-rank FILE` (argv without the subcommand): one rank. Exit status 0 when it
 * said its last word, 1 otherwise (a failing rank ends every rank: dist_abort). */
int mpijob_rank_main(int argc, char **argv);

#endif
