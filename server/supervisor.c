/*
 * supervisor.c: see supervisor.h. Everything here runs on the loop thread except sup_wake,
 * sup_workers_json, sup_restarts and sup_kill_all, which touch only what the mutex guards (and
 * the async handle, whose send is thread-safe).
 */
#include "server/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/jlog.h"

#define SUP_MAX_LINE 65536
#define SUP_BACKOFF_MIN_MS 1000
#define SUP_BACKOFF_MAX_MS 30000
#define SUP_HEALTHY_MS 60000    /* alive this long: the next restart starts from the minimum again */
#define SUP_EXPIRE_EVERY_MS 1000

enum { H_PROC = 1, H_OUT = 4 }; /* which handles of a worker are open */

typedef struct {
    sup *s;
    char name[16];        /* --name: "w1" */
    char lease_name[64];  /* what it holds leases as: the ready line's "worker", else name */
    uv_process_t proc;
    uv_pipe_t out;
    int wake_fd;          /* write end of the worker's stdin pipe, non-blocking; -1 if none */
    uv_timer_t restart;
    int open;             /* H_* bits: handles of this incarnation not yet closed */
    double started_ms;    /* monotonic, for the backoff */
    int backoff_ms;
    /* guarded by sup.mu (read by the HTTP threads for /v1/health) */
    int alive, pid, threads;
    long long started_at; /* Unix ms */
    long restarts;
    char blas_core[64];
    char last_exit[96];
    /* the current partial line of stdout */
    char *line;
    size_t linelen;
    char rbuf[16384];
} worker;

struct sup {
    uv_loop_t *loop;
    sup_options o;
    store *st;
    worker *w;
    int n;
    uv_async_t wake;
    uv_timer_t expire, grace;
    pthread_mutex_t mu;
    int stopping, done_called;
    void (*done)(void *);
    void *done_arg;
    long restarts;
};

static void spawn_worker(worker *w);

/* ---------------------------------------------------------------- handles */

static void on_closed(uv_handle_t *h) {
    worker *w = h->data;
    if (h == (uv_handle_t *)&w->proc) w->open &= ~H_PROC;
    else if (h == (uv_handle_t *)&w->out) w->open &= ~H_OUT;
}

static void close_handle(worker *w, int bit) {
    uv_handle_t *h = bit == H_PROC ? (uv_handle_t *)&w->proc : (uv_handle_t *)&w->out;
    if ((w->open & bit) && !uv_is_closing(h)) uv_close(h, on_closed);
}

/* The worker's stdin closes: EOF tells it the daemon is done with it. */
static void close_wake(worker *w) {
    if (w->wake_fd >= 0) close(w->wake_fd);
    w->wake_fd = -1;
}

/* ---------------------------------------------------------------- stdout lines */

static void worker_line(worker *w, const char *line, size_t n) {
    if (n == 0) return;
    json_error_t je;
    json_t *obj = json_loadb(line, n, 0, &je);
    if (!json_is_object(obj)) {
        /* Not JSON (a stray printf): logged as a message, never dropped. */
        json_decref(obj);
        char *copy = strndup(line, n);
        obj = json_object();
        json_object_set_new(obj, "msg", jlog_str(copy ? copy : "?"));
        free(copy);
    }
    const char *ev = json_string_value(json_object_get(obj, "event"));
    if (ev && !strcmp(ev, "ready")) {
        const char *name = json_string_value(json_object_get(obj, "worker"));
        const char *blas = json_string_value(json_object_get(obj, "blas_core"));
        pthread_mutex_lock(&w->s->mu);
        if (name) snprintf(w->lease_name, sizeof w->lease_name, "%s", name);
        if (blas) snprintf(w->blas_core, sizeof w->blas_core, "%s", blas);
        if (json_is_integer(json_object_get(obj, "threads")))
            w->threads = (int)json_integer_value(json_object_get(obj, "threads"));
        pthread_mutex_unlock(&w->s->mu);
    }
    const char *level = json_string_value(json_object_get(obj, "level"));
    char lv[16];
    snprintf(lv, sizeof lv, "%s", level ? level : "info");
    json_t *tag = json_pack("{s:s, s:s}", "source", "worker", "worker", w->name);
    json_object_update_missing(tag, obj);
    jlog_json(lv, tag);
    json_decref(tag);
    json_decref(obj);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    worker *w = h->data;
    *buf = uv_buf_init(w->rbuf, sizeof w->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    worker *w = st->data;
    if (nread < 0) {
        /* EOF (the worker exited) or an error: the rest of the line is the last line. */
        worker_line(w, w->line, w->linelen);
        w->linelen = 0;
        close_handle(w, H_OUT);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char c = buf->base[i];
        if (c == '\n') {
            worker_line(w, w->line, w->linelen);
            w->linelen = 0;
        } else if (w->linelen < SUP_MAX_LINE) {
            w->line[w->linelen++] = c;
        } /* past the cap the line is cut; the worker's lines are short */
    }
}

/* ---------------------------------------------------------------- lifecycle */

static void check_all_gone(sup *s) {
    if (!s->stopping || s->done_called) return;
    for (int i = 0; i < s->n; i++)
        if (s->w[i].alive) return;
    s->done_called = 1;
    uv_timer_stop(&s->grace);
    if (s->done) s->done(s->done_arg);
}

static void wake_all(sup *s) {
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        if (!w->alive || w->wake_fd < 0) continue;
        /* A full pipe already holds unread wakes; one more adds nothing, so EAGAIN is fine. */
        ssize_t n = write(w->wake_fd, "w", 1);
        (void)n;
    }
}

/* Gives the jobs of a worker that is gone (worker != NULL) or of leases that ran out (NULL)
 * back to the queue. */
static void expire(sup *s, const char *worker_name) {
    int requeued = 0, failed = 0;
    int rc = store_job_expire(s->st, clock_wall_ms(), worker_name, &requeued, &failed);
    if (rc) {
        jlog("error", NULL, "lease expiry%s%s: %s", worker_name ? " for " : "",
             worker_name ? worker_name : "", store_errmsg(s->st));
        return;
    }
    if (requeued || failed) {
        json_t *l = json_pack("{s:s, s:s?, s:i, s:i}", "event", "jobs_expired", "worker",
                              worker_name, "requeued", requeued, "failed", failed);
        jlog_json("warn", l);
        json_decref(l);
    }
    if (requeued) wake_all(s);
}

static void on_restart(uv_timer_t *t) {
    worker *w = t->data;
    if (w->s->stopping) return;
    if (w->open) {
        /* The last incarnation's pipes are still closing (or a child of the worker holds its
         * stdout open): close what is left and look again shortly. */
        close_handle(w, H_OUT);
        uv_timer_start(&w->restart, on_restart, 50, 0);
        return;
    }
    pthread_mutex_lock(&w->s->mu);
    w->restarts++;
    w->s->restarts++;
    pthread_mutex_unlock(&w->s->mu);
    spawn_worker(w);
}

static void schedule_restart(worker *w) {
    if (w->s->stopping) return;
    double lived = clock_mono_ms() - w->started_ms;
    if (w->backoff_ms == 0 || lived > SUP_HEALTHY_MS) w->backoff_ms = SUP_BACKOFF_MIN_MS;
    else if ((w->backoff_ms *= 2) > SUP_BACKOFF_MAX_MS) w->backoff_ms = SUP_BACKOFF_MAX_MS;
    uv_timer_start(&w->restart, on_restart, (uint64_t)w->backoff_ms, 0);
}

static void on_worker_exit(uv_process_t *p, int64_t status, int sig) {
    worker *w = p->data;
    sup *s = w->s;
    char lease[64];
    pthread_mutex_lock(&s->mu);
    w->alive = 0;
    if (sig) snprintf(w->last_exit, sizeof w->last_exit, "signal %d (%s)", sig, strsignal(sig));
    else snprintf(w->last_exit, sizeof w->last_exit, "exit status %lld", (long long)status);
    snprintf(lease, sizeof lease, "%s", w->lease_name);
    pthread_mutex_unlock(&s->mu);

    json_t *l = json_pack("{s:s, s:s, s:i, s:I, s:i}", "event", "worker_exit", "worker", w->name,
                          "pid", p->pid, "exit_status", (json_int_t)status, "signal", sig);
    jlog_json(s->stopping || (status == 0 && !sig) ? "info" : "warn", l);
    json_decref(l);
    /* Its job goes back to the queue now rather than when the lease runs out: a crash costs
     * seconds, not a lease period. */
    expire(s, lease);
    close_handle(w, H_PROC);
    close_wake(w);
    if (s->stopping) check_all_gone(s);
    else schedule_restart(w);
}

static void spawn_worker(worker *w) {
    sup *s = w->s;
    char threads[16], lease[16], name[sizeof w->lease_name];
    snprintf(threads, sizeof threads, "%d", s->o.threads);
    snprintf(lease, sizeof lease, "%d", s->o.lease_ms);
    if (s->o.name_prefix) snprintf(name, sizeof name, "%.40s/%s", s->o.name_prefix, w->name);
    else snprintf(name, sizeof name, "%s", w->name);
    const char *args[] = {s->o.worker_bin, "--db", s->o.db_path, "--data-dir", s->o.data_dir,
                          "--name", name, "--threads", threads, "--lease-ms", lease, NULL,
                          NULL, NULL};
    if (s->o.mpi_launch && *s->o.mpi_launch)
        args[11] = "--mpi-launch", args[12] = s->o.mpi_launch;
    /* stdin is a pipe(2) we make, not libuv's UV_CREATE_PIPE (a socketpair): the worker
     * checks for a FIFO. Both ends are O_CLOEXEC, so no other child holds the write end and
     * the worker sees EOF exactly when this daemon is gone; libuv dup2s the read end to 0. */
    int p[2];
    if (pipe2(p, O_CLOEXEC)) {
        jlog("error", NULL, "cannot start worker %s: pipe: %s", w->name, strerror(errno));
        schedule_restart(w);
        return;
    }
    uv_pipe_init(s->loop, &w->out, 0);
    w->out.data = w->proc.data = w;
    uv_stdio_container_t io[3];
    io[0].flags = UV_INHERIT_FD;
    io[0].data.fd = p[0];
    /* libuv's flags are from the child's side: it writes stdout. */
    io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[1].data.stream = (uv_stream_t *)&w->out;
    io[2].flags = UV_INHERIT_FD;
    io[2].data.fd = 2;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = s->o.worker_bin;
    po.args = (char **)args;
    po.exit_cb = on_worker_exit;
    po.stdio = io;
    po.stdio_count = 3;
    w->linelen = 0;
    snprintf(w->lease_name, sizeof w->lease_name, "%s", name);
    w->started_ms = clock_mono_ms();
    int rc = uv_spawn(s->loop, &w->proc, &po);
    close(p[0]);
    w->open = H_PROC | H_OUT; /* initialized even when the spawn failed */
    if (rc) {
        close(p[1]);
        jlog("error", NULL, "cannot start worker %s (%s): %s", w->name, s->o.worker_bin,
             uv_strerror(rc));
        close_handle(w, H_PROC);
        close_handle(w, H_OUT);
        schedule_restart(w);
        return;
    }
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    w->wake_fd = p[1];
    pthread_mutex_lock(&s->mu);
    w->alive = 1;
    w->pid = w->proc.pid;
    w->started_at = clock_wall_ms();
    w->blas_core[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    uv_read_start((uv_stream_t *)&w->out, on_alloc, on_read);
    json_t *l = json_pack("{s:s, s:s, s:i}", "event", "worker_start", "worker", w->name, "pid",
                          w->proc.pid);
    jlog_json("info", l);
    json_decref(l);
}

static void on_wake(uv_async_t *a) {
    sup *s = a->data;
    if (!s->stopping) wake_all(s);
}

static void on_expire_timer(uv_timer_t *t) {
    expire(t->data, NULL);
}

static void on_grace(uv_timer_t *t) {
    sup *s = t->data;
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        if (!w->alive) continue;
        jlog("warn", NULL, "worker %s did not stop within %d s: SIGKILL", w->name, s->o.grace_s);
        uv_process_kill(&w->proc, SIGKILL);
    }
}

/* ---------------------------------------------------------------- public */

int sup_start(sup **out, uv_loop_t *loop, const sup_options *o, store *st, char *err,
              size_t errlen) {
    *out = NULL;
    sup *s = calloc(1, sizeof *s);
    if (!s || !(s->w = calloc(o->nworkers > 0 ? o->nworkers : 1, sizeof *s->w))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->o = *o;
    s->st = st;
    s->n = o->nworkers;
    pthread_mutex_init(&s->mu, NULL);
    uv_async_init(loop, &s->wake, on_wake);
    s->wake.data = s;
    uv_timer_init(loop, &s->expire);
    s->expire.data = s;
    uv_timer_init(loop, &s->grace);
    s->grace.data = s;
    uv_timer_start(&s->expire, on_expire_timer, SUP_EXPIRE_EVERY_MS, SUP_EXPIRE_EVERY_MS);
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        w->s = s;
        snprintf(w->name, sizeof w->name, "w%d", i + 1);
        w->line = malloc(SUP_MAX_LINE);
        w->wake_fd = -1;
        uv_timer_init(loop, &w->restart);
        w->restart.data = w;
        spawn_worker(w);
    }
    *out = s;
    return 0;
}

void sup_wake(void *arg) {
    sup *s = arg;
    if (s) uv_async_send(&s->wake);
}

json_t *sup_workers_json(void *arg) {
    sup *s = arg;
    json_t *arr = json_array();
    if (!s) return arr;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        json_array_append_new(
            arr, json_pack("{s:s, s:i, s:b, s:s?, s:i, s:I, s:I, s:s?}", "name", w->name, "pid",
                           w->alive ? w->pid : 0, "alive", w->alive, "blas_core",
                           w->blas_core[0] ? w->blas_core : NULL, "threads",
                           w->threads ? w->threads : s->o.threads, "restarts",
                           (json_int_t)w->restarts, "started_at", (json_int_t)w->started_at,
                           "last_exit", w->last_exit[0] ? w->last_exit : NULL));
    }
    pthread_mutex_unlock(&s->mu);
    return arr;
}

long sup_restarts(sup *s) {
    pthread_mutex_lock(&s->mu);
    long n = s->restarts;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sup_shutdown(sup *s, void (*done)(void *arg), void *arg) {
    s->stopping = 1;
    s->done = done;
    s->done_arg = arg;
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        uv_timer_stop(&w->restart);
        /* SIGTERM: the worker checkpoints, gives its job back to the queue and exits. */
        if (w->alive) uv_process_kill(&w->proc, SIGTERM);
    }
    uv_timer_start(&s->grace, on_grace, (uint64_t)s->o.grace_s * 1000, 0);
    check_all_gone(s);
}

void sup_kill_all(sup *s) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n; i++)
        if (s->w[i].alive && s->w[i].pid > 0) kill(s->w[i].pid, SIGKILL);
    pthread_mutex_unlock(&s->mu);
}

static void on_sup_closed(uv_handle_t *h) {
    (void)h;
}

void sup_close(sup *s) {
    uv_close((uv_handle_t *)&s->wake, on_sup_closed);
    uv_close((uv_handle_t *)&s->expire, on_sup_closed);
    uv_close((uv_handle_t *)&s->grace, on_sup_closed);
    for (int i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        uv_close((uv_handle_t *)&w->restart, on_sup_closed);
        close_handle(w, H_PROC);
        close_handle(w, H_OUT);
        close_wake(w);
    }
}

void sup_free(sup *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->w[i].line);
    pthread_mutex_destroy(&s->mu);
    free(s->w);
    free(s);
}
