/*
 * worker.c: gplq-worker, the process that runs GPLQ jobs for gplqd.
 *
 *   gplq-worker --db DATA/gplq.db|postgresql://... --data-dir BLOBS --name w1 [--threads N]
 *               [--lease-ms MS]
 *               [--wake-fd 0] [--once]
 *   gplq-worker inspect-model FILE [--num-heads N]     (see inspect.c; both also take
 *   gplq-worker inspect-dataset FILE                    --max-memory B and --max-cpu-s S)
 *
 * gplqd spawns N of these. Each opens its own database connection (after exec: SQLite
 * connections never cross a fork), claims one queued job at a time, runs it (job.c) and goes
 * back for the next. Between jobs it sleeps on the wake fd, where the daemon writes a byte when
 * a job is queued (and, on PostgreSQL, on its connection, which the database notifies when a
 * job is queued on any node of the cluster), so a claim follows a submit within milliseconds; end of file there means
 * the daemon is gone, and an idle worker then exits. SIGTERM (also sent by the kernel if the
 * daemon dies, PR_SET_PDEATHSIG) makes a busy worker checkpoint and give its job back.
 * Log lines are JSON on stdout; the first one says the worker is ready and which OpenBLAS
 * kernel it runs, which /v1/health reports.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/options.h"
#include "engine/blas.h"
#include "storage/store.h"
#include "worker/inspect.h"
#include "worker/job.h"
#include "worker/mpijob.h"

#define N_OPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static struct {
    const char *db, *data_dir, *name, *mpi_launch;
    int threads, lease_ms, wake_fd, poll_ms, once;
} W;

static const opt_spec worker_opts[] = {
    {"db", OPT_STR, &W.db, NULL, 0, 0, "the daemon's database (DATA/gplq.db)"},
    {"data-dir", OPT_STR, &W.data_dir, NULL, 0, 0, "the daemon's data folder (blobs, jobs)"},
    {"name", OPT_STR, &W.name, "w1", 0, 0, "this worker's name, the holder of its leases"},
    {"threads", OPT_INT, &W.threads, "0", 0, 1024, "math threads (0 = all cores)"},
    {"lease-ms", OPT_INT, &W.lease_ms, "15000", 100, 3600000, "lease on a running job, renewed every second"},
    {"wake-fd", OPT_INT, &W.wake_fd, "-2", -2, 1024, "fd the daemon writes to when a job is queued (-1: none; default: stdin if it is a pipe)"},
    {"poll-ms", OPT_INT, &W.poll_ms, "1000", 1, 600000, "longest sleep between claim attempts"},
    {"once", OPT_FLAG, &W.once, "0", 0, 0, "exit when the queue is empty"},
    {"mpi-launch", OPT_STR, &W.mpi_launch, NULL, 0, 0, "launcher of the jobs that ask for \"mpi\" (gplqd's mpi_launch)"},
};

/* Sleeps until woken (by the daemon's pipe, or in a cluster by the database's notification of
 * a job queued on any node), poll_ms passed, or a signal. Returns 1 if the daemon is gone. */
static int wait_for_work(store *s) {
    /* A notification may have come in during the last claim: libpq keeps it, and the socket
     * would not wake us for it. */
    if (store_drain(s) > 0) return 0;
    struct pollfd pfd[2];
    int n = 0, wake = -1, db = -1;
    if (W.wake_fd >= 0) {
        wake = n;
        pfd[n++] = (struct pollfd){.fd = W.wake_fd, .events = POLLIN};
    }
    if (store_wait_fd(s) >= 0) {
        db = n;
        pfd[n++] = (struct pollfd){.fd = store_wait_fd(s), .events = POLLIN};
    }
    if (n == 0) {
        struct timespec ts = {W.poll_ms / 1000, (W.poll_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return 0;
    }
    if (poll(pfd, (nfds_t)n, W.poll_ms) <= 0) return 0;
    if (db >= 0 && pfd[db].revents) store_drain(s);
    if (wake < 0 || !pfd[wake].revents) return 0;
    char buf[256];
    ssize_t r = read(W.wake_fd, buf, sizeof buf); /* drain: one claim attempt for many wakes */
    return r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "inspect-model")) return inspect_model_main(argc - 2, argv + 2);
    if (argc > 1 && !strcmp(argv[1], "inspect-dataset")) return inspect_dataset_main(argc - 2, argv + 2);
    blas_setup(argv);
    if (argc > 1 && !strcmp(argv[1], "mpi-rank")) return mpijob_rank_main(argc - 2, argv + 2);

    char err[1024];
    opt_defaults(worker_opts, N_OPTS(worker_opts));
    if (argc > 1 && !strcmp(argv[1], "--help")) {
        printf("usage: gplq-worker --db FILE --data-dir DIR [options]\n"
               "       gplq-worker inspect-model FILE [--num-heads N] [LIMITS]\n"
               "       gplq-worker inspect-dataset FILE [LIMITS]\n"
               "       gplq-worker mpi-rank FILE   (a rank of an \"mpi\" job, under its launcher)\n"
               "  LIMITS: --max-memory BYTES --max-cpu-s S (what gplqd gives its inspector)\n");
        opt_print_help(worker_opts, N_OPTS(worker_opts), stdout);
        return 0;
    }
    if (opt_parse(worker_opts, N_OPTS(worker_opts), argc - 1, argv + 1, err, sizeof err)) {
        fprintf(stderr, "gplq-worker: %s\n", err);
        return 2;
    }
    if (!W.db || !W.data_dir) {
        fprintf(stderr, "gplq-worker: --db and --data-dir are required\n");
        return 2;
    }
    if (W.wake_fd == -2) { /* gplqd gives its workers a pipe (libuv: a socketpair) on stdin */
        struct stat st;
        W.wake_fd = fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) ? 0 : -1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    blas_set_threads(W.threads);

    store *s;
    if (store_open(&s, W.db, 5000, err, sizeof err)) {
        fprintf(stderr, "gplq-worker: %s\n", err);
        return 1;
    }
    /* In a cluster, a submit on any node wakes us (with SQLite, nothing: gplqd's pipe does) */
    if (store_listen(s, STORE_CHANNEL_JOBS))
        job_log(W.name, "warn", NULL, "cannot listen for new jobs (polling instead): %s",
                store_errmsg(s));
    printf("{\"event\": \"ready\", \"worker\": \"%s\", \"pid\": %d, \"blas_core\": \"%s\", "
           "\"threads\": %d}\n", W.name, (int)getpid(), blas_core(), W.threads);
    fflush(stdout);

    worker_env env = {.db_path = W.db, .data_dir = W.data_dir, .name = W.name,
                      .lease_ms = W.lease_ms, .stop = &stop_requested, .s = s,
                      .mpi_launch = W.mpi_launch};
    int rc = 0;
    while (!stop_requested) {
        store_claim job;
        int c = store_job_claim(s, W.name, W.lease_ms, &job);
        if (c == STORE_OK) {
            if (job_run(&env, &job)) rc = 1;
            store_claim_free(&job);
            continue;
        }
        if (c != STORE_ENONE) {
            job_log(W.name, "error", NULL, "claim: %s", store_errmsg(s));
            rc = 1;
            break; /* the supervisor restarts us, with backoff */
        }
        if (W.once) break;
        if (wait_for_work(s)) {
            job_log(W.name, "info", NULL, "the daemon is gone; exiting");
            break;
        }
    }
    store_close(s);
    return rc;
}
