/*
 * mpijob.c: see mpijob.h. The worker's side (mpijob_run: the run file, the launcher, the
 * lines), then the ranks' side (mpijob_rank_main).
 */
#include "worker/mpijob.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/layout.h"
#include "gplq/report.h"
#include "io/checkpoint.h"
#include "storage/blob.h"
#include "train/dist.h"
#include "util/fs.h"

/* A JSON string's value, or def. */
static const char *str_or(json_t *v, const char *def) {
    const char *s = json_string_value(v);
    return s ? s : def;
}

/* ---- the worker's side ---- */

/* DATA/jobs/<id>/mpi.json: what every rank needs to run the job as this worker would. */
static int write_run_file(const char *path, const worker_env *w, const store_claim *job,
                          const jobspec *js, const char *state_path, const char *art_dir,
                          char *err, size_t errlen) {
    char blob[4096];
    blob_path(blob, sizeof blob, w->data_dir, job->model_sha256);
    json_t *config = jobspec_to_json(js); /* the report's config, as job.c writes it */
    json_object_set_new(config, "model_id", json_string(job->model_id));
    json_object_set_new(config, "dataset_id", json_string(job->dataset_id));
    json_object_set_new(config, "job_id", json_string(job->id));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:s, s:s, s:s, s:f}, s:s, s:s, s:o}",
                          "job", job->id, "data_dir", w->data_dir, "worker", w->name,
                          "model", blob, "spec", jobspec_to_json(js), "dataset",
                          "id", job->dataset_id, "kind", job->dataset_kind,
                          "sha256", job->dataset_sha256, "val_fraction", job->val_fraction,
                          "state", state_path, "artifacts", art_dir, "config", config);
    /* how the model's upload was loaded (job_model_hints): every rank loads it the same way */
    json_t *mi = json_object_get(job->spec, "model_input");
    if (o && mi) json_object_set(o, "model_input", mi);
    char *text = o ? json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    int rc = text ? fs_write_atomic(path, text, strlen(text)) : -1;
    if (rc) snprintf(err, errlen, "cannot write %.900s: %s", path, text ? strerror(errno) : "out of memory");
    free(text);
    return rc;
}

/* The launcher: sh runs "exec LAUNCH SELF mpi-rank FILE" with SELF and FILE as $0 and $1 (no
 * quoting to get wrong); its stdin and stdout are our pipes, stderr the worker's. */
static pid_t start_launcher(const char *launch, const char *self, const char *file, int *to,
                            int *from, char *err, size_t errlen) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC)) goto fail;
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        goto fail;
    }
    char script[8192];
    snprintf(script, sizeof script, "exec %s \"$0\" mpi-rank \"$1\"", launch);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", script, self, file, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        goto fail;
    }
    *to = in[1];
    *from = out[0];
    return pid;
fail:
    snprintf(err, errlen, "cannot start the MPI launcher: %s", strerror(errno));
    return -1;
}

/* What the worker has heard from rank 0. */
typedef struct {
    gplq_progress last;         /* the latest progress (stage and part point into the bufs) */
    char stage[32], part[64];
    int have_last;
    char end[16];               /* "done", "stopped", "error", or "" while running */
    char error[1024];
    int error_errno;
} heard;

/* One line from the launcher: rank 0's JSON, or anything else (mpirun's own words), logged. */
static int on_line(heard *h, const worker_env *w, const char *job_id, char *line,
                   gplq_progress_fn progress, void *ctx) {
    json_t *o = json_loads(line, 0, NULL);
    const char *kind = json_string_value(json_object_get(o, "mpi"));
    int stop = 0;
    if (!kind) {
        if (*line) job_log(w->name, "info", job_id, "launcher: %s", line);
    } else if (!strcmp(kind, "progress")) {
        snprintf(h->stage, sizeof h->stage, "%s", str_or(json_object_get(o, "stage"), ""));
        snprintf(h->part, sizeof h->part, "%s", str_or(json_object_get(o, "part"), ""));
        h->last = (gplq_progress){
            .stage = h->stage, .part = h->part,
            .step = json_integer_value(json_object_get(o, "step")),
            .total = json_integer_value(json_object_get(o, "total")),
            .fraction = json_number_value(json_object_get(o, "fraction")),
            .ce = (float)json_number_value(json_object_get(o, "ce")),
            .pca = (float)json_number_value(json_object_get(o, "pca")),
            .images_per_s = json_number_value(json_object_get(o, "images_per_s")),
            .eta_s = json_number_value(json_object_get(o, "eta_s"))};
        h->have_last = 1;
        stop = progress(ctx, &h->last);
    } else if (!strcmp(kind, "metric")) {
        gplq_progress g = h->last;
        g.metric = json_string_value(json_object_get(o, "metric"));
        g.value = json_number_value(json_object_get(o, "value"));
        if (g.metric && h->have_last) stop = progress(ctx, &g);
    } else {
        snprintf(h->end, sizeof h->end, "%s", kind);
        snprintf(h->error, sizeof h->error, "%s",
                 str_or(json_object_get(o, "message"), ""));
        h->error_errno = (int)json_integer_value(json_object_get(o, "errno"));
    }
    json_decref(o);
    return stop;
}

int mpijob_run(const worker_env *w, const store_claim *job, const jobspec *js,
               const char *state_path, const char *art_dir, gplq_progress_fn progress, void *ctx,
               char *err, size_t errlen) {
    if (!w->mpi_launch || !*w->mpi_launch) {
        snprintf(err, errlen, "the job asks for \"mpi\" but this server has no mpi_launch set");
        return -1;
    }
    char dir[4096], file[4200], self[4096];
    if (layout_job_dir(dir, sizeof dir, w->data_dir, job->id)) {
        snprintf(err, errlen, "the data dir's path is too long");
        return -1;
    }
    snprintf(file, sizeof file, "%s/mpi.json", dir);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(err, errlen, "cannot find gplq-worker's own path (/proc/self/exe)");
        return -1;
    }
    self[n] = 0;
    if (write_run_file(file, w, job, js, state_path, art_dir, err, errlen)) return -1;
    int to, from;
    pid_t pid = start_launcher(w->mpi_launch, self, file, &to, &from, err, errlen);
    if (pid < 0) return -1;
    job_log(w->name, "info", job->id, "stage 1 across processes: %s", w->mpi_launch);
    /* "run" makes rank 0's stdin a live stop channel (a launcher that gives it /dev/null
     * instead leaves it without one, and then end of file means nothing) */
    int stop_sent = 0;
    if (write(to, "run\n", 4) != 4) stop_sent = 1;

    heard h = {0};
    char buf[65536];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = from, .events = POLLIN};
        int pr = poll(&p, 1, 500);
        int stop = 0;
        if (pr < 0 && errno != EINTR) break;
        if (pr > 0) {
            ssize_t r = read(from, buf + len, sizeof buf - 1 - len);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            len += (size_t)r;
            char *start = buf, *nl;
            buf[len] = 0;
            while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
                *nl = 0;
                stop |= on_line(&h, w, job->id, start, progress, ctx);
                start = nl + 1;
            }
            len -= (size_t)(start - buf);
            memmove(buf, start, len);
            if (len == sizeof buf - 1) len = 0; /* a line past 64 KB is no line of ours */
        } else if (h.have_last) {
            stop = progress(ctx, &h.last); /* a quiet while: cancel and lease still heard */
        }
        if (stop && !stop_sent) {
            job_log(w->name, "info", job->id, "asking the ranks to checkpoint and stop");
            stop_sent = 1;
            if (write(to, "stop\n", 5) != 5) { /* rank 0 is gone: the exit status will say */ }
        }
    }
    close(to);
    close(from);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    unlink(file);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (ok && !strcmp(h.end, "done")) return 0;
    if (ok && !strcmp(h.end, "stopped")) return 1;
    if (!strcmp(h.end, "error")) {
        snprintf(err, errlen, "%s", h.error);
        errno = h.error_errno;
        return -1;
    }
    char how[64];
    if (WIFSIGNALED(st)) snprintf(how, sizeof how, "signal %d", WTERMSIG(st));
    else snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(st));
    snprintf(err, errlen, "a process of the MPI run died (the launcher ended with %s)", how);
    return MPIJOB_RANK_DIED;
}

/* ---- the ranks' side ---- */

/* Rank 0's stop channel: 1 once the worker wrote "stop", or closed it after "run". */
static int stop_heard(void) {
    static int live, stop;
    while (!stop) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0) break;
        char b[256];
        ssize_t n = read(0, b, sizeof b);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { /* end of file: the worker is gone, if it was ever there */
            stop = live;
            break;
        }
        if (memmem(b, (size_t)n, "run", 3)) live = 1;
        if (memmem(b, (size_t)n, "stop", 4)) stop = 1;
    }
    return stop;
}

/* One JSON line on stdout (rank 0's voice; the launcher passes it to the worker). */
static void say(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) {
        printf("%s\n", s);
        fflush(stdout);
    }
    free(s);
    json_decref(o);
}

static int on_rank_progress(void *ctx, const gplq_progress *p) {
    (void)ctx;
    if (!dist_is_root()) return 0;
    if (p->metric)
        say(json_pack("{s:s, s:s, s:f}", "mpi", "metric", "metric", p->metric, "value", p->value));
    else
        say(json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f}", "mpi", "progress",
                      "stage", p->stage, "part", p->part, "step", (json_int_t)p->step,
                      "total", (json_int_t)p->total, "fraction", p->fraction, "ce", (double)p->ce,
                      "pca", (double)p->pca, "images_per_s", p->images_per_s, "eta_s", p->eta_s));
    return stop_heard();
}

/* The last word: done, stopped, or an error (with errno when the disk failed it). */
static void say_end(const char *end, const char *message, int e) {
    json_t *o = json_pack("{s:s}", "mpi", end);
    if (message) json_object_set_new(o, "message", json_string(message));
    if (e) json_object_set_new(o, "errno", json_integer(e));
    say(o);
}

int mpijob_rank_main(int argc, char **argv) {
    char err[2048];
    if (argc < 1) {
        fprintf(stderr, "usage: gplq-worker mpi-rank FILE\n");
        return 2;
    }
    if (dist_init(NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "gplq-worker mpi-rank: %s\n", err);
        return 1;
    }
    json_error_t je;
    json_t *run = json_load_file(argv[0], 0, &je);
    json_t *ds = json_object_get(run, "dataset");
    const char *s_data = json_string_value(json_object_get(run, "data_dir"));
    const char *s_model = json_string_value(json_object_get(run, "model"));
    const char *s_state = json_string_value(json_object_get(run, "state"));
    const char *s_art = json_string_value(json_object_get(run, "artifacts"));
    store_claim job = {.val_fraction = json_number_value(json_object_get(ds, "val_fraction"))};
    worker_env w = {.data_dir = s_data,
                    .name = str_or(json_object_get(run, "worker"), "mpi")};
    jobspec js;
    jobspec_defaults(&js);
    int rc = -1, e = 0;
    model fp;
    ds_set tr = {0}, te = {0};
    int loaded = 0;
    if (!run || !s_data || !s_model || !s_state || !s_art || !ds) {
        snprintf(err, sizeof err, "%s: not an MPI run file (%s)", argv[0], run ? "fields missing" : je.text);
    } else if (jobspec_apply_json(&js, json_object_get(run, "spec"), NULL, NULL, err, sizeof err) == 0) {
        snprintf(job.id, sizeof job.id, "%s", str_or(json_object_get(run, "job"), ""));
        snprintf(job.dataset_id, sizeof job.dataset_id, "%s",
                 str_or(json_object_get(ds, "id"), ""));
        snprintf(job.dataset_kind, sizeof job.dataset_kind, "%s",
                 str_or(json_object_get(ds, "kind"), ""));
        snprintf(job.dataset_sha256, sizeof job.dataset_sha256, "%s",
                 str_or(json_object_get(ds, "sha256"), ""));
        ckpt_hints hints;
        job_model_hints(json_object_get(run, "model_input"), js.num_heads, &hints);
        if (ckpt_load(&fp, s_model, &hints, NULL, err, sizeof err) == 0) {
            loaded = 1;
            model_dims dims = model_get_dims(&fp);
            rc = job_load_data(&w, &job, &dims, &js, &tr, &te, err, sizeof err);
        }
    }
    gplq_report rep;
    model qm;
    actq_set aq;
    stage2_result s2;
    if (rc == 0) {
        gplq_config c;
        gplq_config_from_spec(&c, &js);
        c.s1.ckpt_path = s_state; /* rank 0's (train_run reads and writes it there alone) */
        c.after_passes = gplq_artifacts_passes(&te, js.ort);
        errno = 0;
        rc = gplq_run(&fp, &tr, &te, &c, on_rank_progress, NULL, &rep, &qm, &aq, &s2, err,
                      sizeof err);
        e = rc < 0 ? errno : 0;
        if (rc == 0 && dist_is_root()) {
            errno = 0;
            rc = gplq_write_artifacts(s_art, &qm, &aq, &s2, &rep, json_object_get(run, "config"),
                                      &te, js.ort, on_rank_progress, NULL, err, sizeof err);
            e = rc < 0 ? errno : 0;
        }
        if (rc == 0) {
            model_free(&qm);
            actq_free(&aq);
            stage2_result_free(&s2);
        }
    }
    if (rc < 0) {
        /* every rank may say it: the worker takes the first; the others are ended at once */
        say_end("error", err, fs_is_full(e) || e == EIO ? e : 0);
        fprintf(stderr, "gplq-worker mpi-rank %d of %d: %s\n", dist_rank(), dist_size(), err);
        dist_abort(1);
        return 1;
    }
    if (dist_is_root()) say_end(rc == 0 ? "done" : "stopped", NULL, 0);
    ds_free(&tr);
    ds_free(&te);
    if (loaded) model_free(&fp);
    json_decref(run);
    dist_finalize();
    return 0;
}
