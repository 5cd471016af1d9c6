/*
 * supervisor.h: gplqd's workers, run from the libuv loop on the main thread.
 *
 * Spawns N `gplq-worker --db DATA/gplq.db --data-dir DATA --name wK --threads T --lease-ms L`
 * (fork+exec by uv_spawn), each with
 *   - stdin: a pipe(2) from the daemon, the wake channel: one byte "w" when a job is queued or
 *     a cancel requested, EOF when the daemon is gone (so an orphaned worker stops);
 *   - stdout: a pipe of JSON lines, re-logged tagged with the worker's name; the first,
 *     {"event":"ready","worker":..,"pid":..,"blas_core":..,"threads":..}, feeds /v1/health;
 *   - stderr: the daemon's.
 * A worker that exits or dies gives its job back at once (store_job_expire with its name: the
 * job is requeued, or failed when out of attempts) and is restarted with backoff (1 s doubling
 * to 30 s, back to 1 s after a minute alive). A timer expires the leases of workers that hang.
 * On shutdown the workers get SIGTERM (they checkpoint and give their job back), then SIGKILL
 * after the grace period.
 */
#ifndef GPLQ_SUPERVISOR_H
#define GPLQ_SUPERVISOR_H

#include <jansson.h>
#include <uv.h>

#include "storage/store.h"

typedef struct sup sup;

typedef struct {
    const char *worker_bin;
    const char *data_dir;
    const char *db_path;
    int nworkers;         /* 0: no workers, only lease expiry */
    int threads;          /* --threads of each worker */
    int lease_ms;
    int grace_s;          /* SIGTERM to SIGKILL at shutdown */
    /* A cluster node's name (NULL: alone on its database): its workers hold leases as
     * "NODE/w1", so that no two nodes' workers share a name, and a node that sees its w1 die
     * gives back w1's job only, not another node's. */
    const char *name_prefix;
    const char *mpi_launch; /* --mpi-launch of each worker, if not empty */
} sup_options;

/* Starts the workers and the expiry timer on loop. st (borrowed, must outlive the supervisor)
 * is the loop thread's database connection. o's strings are borrowed likewise. *out is new
 * (sup_free after the loop has closed its handles). 0, or -1 with err. */
int sup_start(sup **out, uv_loop_t *loop, const sup_options *o, store *st, char *err,
              size_t errlen);
/* Wakes every worker. Thread-safe (any thread); a no-op once shutdown began. */
void sup_wake(void *s);
/* The workers for /v1/health: a new array of {name, pid, alive, blas_core, threads, restarts,
 * started_at, last_exit}. Thread-safe. */
json_t *sup_workers_json(void *s);
/* Restarts of workers since start (for /metrics, issue 5). Thread-safe. */
long sup_restarts(sup *s);
/* Loop thread: SIGTERM to every worker, SIGKILL to those alive after the grace period; done(arg)
 * runs on the loop once every worker is gone. */
void sup_shutdown(sup *s, void (*done)(void *arg), void *arg);
/* Any thread: SIGKILL to every worker now (the second signal). */
void sup_kill_all(sup *s);
/* Loop thread, after done: closes every handle (run the loop once more to finish). */
void sup_close(sup *s);
void sup_free(sup *s);

#endif
