/*
 * job.h: one GPLQ job run by a worker, from the claimed row to its end.
 *
 * The job's files live under DATA/jobs/<id>/: stage1.state (stage 1's checkpoint, so a job
 * whose worker died resumes where it was) and artifacts/ (what GET .../artifacts serves).
 * While the pipeline runs, a heartbeat thread with its own database connection writes the
 * latest progress and extends the lease every second (lease_ms / 3 if shorter); it is also
 * how the job learns of a cancel request or of a lost lease, which the pipeline's progress
 * callback turns into a stop within one step.
 */
#ifndef GPLQ_WORKER_JOB_H
#define GPLQ_WORKER_JOB_H

#include <jansson.h>
#include <signal.h>
#include <stdint.h>

#include "config/jobspec.h"
#include "engine/model.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "storage/store.h"

typedef struct {
    const char *db_path;
    const char *data_dir;
    const char *name;             /* this worker, the lease holder ("w1") */
    int64_t lease_ms;
    volatile sig_atomic_t *stop;  /* set on SIGTERM: checkpoint and give the job back */
    store *s;                     /* the worker's connection (the job thread's) */
    const char *mpi_launch;       /* NULL or "": jobs asking for "mpi" fail (worker/mpijob.h) */
} worker_env;

/* Runs the claimed job (from store_job_claim, borrowed) to one of its ends: succeeded,
 * failed (with the reason), canceled, given back to the queue (stop), or abandoned (the lease
 * went to another worker). Returns 0, or -1 if the database could not record the end (the
 * lease will expire and the job run again). */
int job_run(const worker_env *w, const store_claim *job);

/* The job's training and held-out images at the model's input size (cfg), as its spec js
 * asks (subsets); w gives the data dir (the dataset cache) and the name to log with. Free both
 * with ds_free. 0, or -1 with a message. */
int job_load_data(const worker_env *w, const store_claim *job, const model_dims *cfg,
                  const jobspec *js, ds_set *tr, ds_set *te, char *err, size_t errlen);

/* The loader's hints for a job's model (into *h): model_input, the object gplqd put in the
 * stored spec (img_size, mean, std, a ViT's num_heads: how the model's upload was loaded;
 * borrowed, NULL for a spec from before it), with the job's own num_heads (0: none) winning. */
void job_model_hints(json_t *model_input, int num_heads, ckpt_hints *h);

/* One JSON log line on stdout: {"ts", "level", "worker", "msg", "job" (if job)}. */
void job_log(const char *worker, const char *level, const char *job, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
