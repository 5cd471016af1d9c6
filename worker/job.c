/*
 * job.c: see job.h.
 */
#include "worker/job.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/jobspec.h"
#include "config/layout.h"
#include "gplq/pipeline.h"
#include "gplq/report.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/imagefolder.h"
#include "storage/blob.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/jlog.h"
#include "util/sha256.h"
#include "worker/mpijob.h"

void job_log(const char *worker, const char *level, const char *job, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:o}", "worker", worker, "msg", jlog_str(msg));
    if (job) json_object_set_new(o, "job", json_string(job));
    jlog_json_fd(1, level, o); /* stdout: the pipe the daemon reads lines from */
    json_decref(o);
}

/* ---- the heartbeat ---- */

typedef struct {
    const worker_env *w;
    const char *job_id;
    store *s;                  /* the heartbeat's own connection */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *progress;          /* latest snapshot, immutable once published (under mu) */
    char stage[32];            /* (under mu) */
    int changed;               /* a snapshot not yet written (under mu) */
    int done;                  /* the job thread is finished with us (under mu) */
    volatile sig_atomic_t cancel, lost;
    double t0;                 /* when the job started on this worker */
    double last_event;
} beat;

static void beat_publish(beat *b, const char *stage, json_t *progress) {
    pthread_mutex_lock(&b->mu);
    json_decref(b->progress);
    b->progress = progress;
    int new_stage = strcmp(b->stage, stage) != 0;
    snprintf(b->stage, sizeof b->stage, "%s", stage);
    b->changed = 1;
    if (new_stage) pthread_cond_signal(&b->cv); /* a stage change is written at once */
    pthread_mutex_unlock(&b->mu);
}

static void *beat_main(void *arg) {
    beat *b = arg;
    int64_t every = b->w->lease_ms / 3 < 1000 ? b->w->lease_ms / 3 : 1000;
    if (every < 50) every = 50;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        json_t *p = json_incref(b->progress);
        char stage[32];
        snprintf(stage, sizeof stage, "%s", b->stage);
        int changed = b->changed;
        b->changed = 0;
        pthread_mutex_unlock(&b->mu);

        /* progress events (for live views) at most twice a second; the row every tick */
        double t = clock_mono_s();
        int event = changed && t - b->last_event >= 0.5;
        if (event) b->last_event = t;
        int rc = store_job_progress(b->s, b->job_id, b->w->name, b->w->lease_ms,
                                    stage[0] ? stage : NULL, p, event);
        json_decref(p);
        if (rc == STORE_ECONFLICT && !b->cancel) {
            b->cancel = 1;
            job_log(b->w->name, "info", b->job_id, "cancel requested");
        } else if (rc == STORE_ELEASE && !b->lost) {
            b->lost = 1;
            job_log(b->w->name, "warn", b->job_id,
                    "lease lost: the job belongs to another worker now");
        } else if (rc != STORE_OK && rc != STORE_ECONFLICT && rc != STORE_ELEASE) {
            job_log(b->w->name, "error", b->job_id, "heartbeat: %s", store_errmsg(b->s));
        }

        pthread_mutex_lock(&b->mu);
        if (b->done && !b->changed) break; /* a last snapshot is written before we go */
        struct timespec until;
        clock_deadline(&until, every);
        while (!b->done && !(b->changed && strcmp(stage, b->stage)))
            if (pthread_cond_timedwait(&b->cv, &b->mu, &until) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static int beat_start(beat *b, const worker_env *w, const char *job_id, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    b->w = w;
    b->job_id = job_id;
    b->t0 = clock_mono_s();
    b->progress = json_object();
    if (store_open(&b->s, w->db_path, 5000, err, errlen)) return -1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    if (pthread_create(&b->thread, NULL, beat_main, b)) {
        snprintf(err, errlen, "cannot start the heartbeat thread");
        store_close(b->s);
        return -1;
    }
    return 0;
}

static void beat_stop(beat *b) {
    pthread_mutex_lock(&b->mu);
    b->done = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    store_close(b->s);
    json_decref(b->progress);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

/* ---- the pipeline's progress, as the job's ---- */

typedef struct {
    beat *b;
    const worker_env *w;
    const char *job_id;
    int lost_metrics;          /* a metrics write found the lease gone */
    int recorded;              /* the artifacts are listed: the job's fraction is 1 */
} job_ui;

static int on_progress(void *ctx, const gplq_progress *p) {
    job_ui *ui = ctx;
    beat *b = ui->b;
    if (p->metric) {
        json_t *m = json_pack("{s:f}", p->metric, p->value);
        int rc = store_job_metrics(ui->w->s, ui->job_id, ui->w->name, m);
        json_decref(m);
        if (rc == STORE_ELEASE) ui->lost_metrics = 1;
        job_log(ui->w->name, "info", ui->job_id, "top-1 %s %.4f", p->metric, p->value);
    } else {
        double el = clock_mono_s() - b->t0;
        /* The run's and the artifacts' 0..1 (gplq_config.after_passes) is the job's 0..0.99:
         * recording the files is the last hundredth, 1 only once they are listed. */
        double f = ui->recorded ? 1 : 0.99 * p->fraction;
        json_t *pj = json_pack("{s:s, s:s, s:I, s:I, s:f}", "stage", p->stage, "part", p->part,
                               "step", (json_int_t)p->step, "total", (json_int_t)p->total,
                               "fraction", f);
        /* the whole job's ETA, from its pace so far */
        if (f > 0.01) json_object_set_new(pj, "eta_s", json_real(el * (1 - f) / f));
        else json_object_set_new(pj, "eta_s", json_null());
        if (!strcmp(p->stage, "stage1") && p->step > 0) {
            json_object_set_new(pj, "losses", json_pack("{s:f, s:f}", "ce", p->ce, "pca", p->pca));
            json_object_set_new(pj, "images_per_s", json_real(p->images_per_s));
        }
        beat_publish(b, p->stage, pj);
    }
    return *ui->w->stop || b->cancel || b->lost || ui->lost_metrics;
}

/* ---- files ---- */

/* ONNX Runtime's top-1 of model.onnx and model.w4.onnx (report.json's "onnx", measured by
 * gplq_write_artifacts where the runtime is installed) as the job's metrics "ort_onnx" and
 * "ort_w4", beside gplq's own: the job's table, the dashboard and the client show them. */
static void report_ort_metrics(job_ui *ui, const char *art) {
    char path[4200];
    snprintf(path, sizeof path, "%s/" LAYOUT_ARTIFACT_REPORT, art);
    json_t *r = json_load_file(path, 0, NULL), *o = json_object_get(r, "onnx");
    static const char *const files[2] = {LAYOUT_ARTIFACT_ONNX, LAYOUT_ARTIFACT_ONNX_W4};
    static const char *const keys[2] = {"ort_onnx", "ort_w4"};
    for (int i = 0; i < 2; i++) {
        json_t *t = json_object_get(json_object_get(o, files[i]), "top1_ort");
        if (!json_is_number(t)) continue;
        gplq_progress p = {.stage = "export", .part = "artifacts", .metric = keys[i],
                           .value = json_number_value(t)};
        on_progress(ui, &p);
    }
    json_decref(r);
}

static int file_sha256(const char *path, char hex[65], int64_t *bytes) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    sha256_ctx c;
    sha256_init(&c);
    static __thread uint8_t buf[1 << 16];
    ssize_t n;
    *bytes = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        sha256_update(&c, buf, (size_t)n);
        *bytes += n;
    }
    close(fd);
    if (n < 0) return -1;
    uint8_t d[32];
    sha256_final(&c, d);
    sha256_hex(d, hex);
    return 0;
}

/* ---- data ---- */

/* The job's training and held-out images, at the model's input size. */
int job_load_data(const worker_env *w, const store_claim *job, const model_dims *cfg,
                  const jobspec *js, ds_set *tr, ds_set *te, char *err, size_t errlen) {
    memset(tr, 0, sizeof *tr);
    memset(te, 0, sizeof *te);
    if (!strcmp(job->dataset_kind, "builtin")) {
        if (ds_open_builtin(job->dataset_id, NULL, tr, te, err, errlen)) return -1;
    } else {
        if (!*job->dataset_sha256) {
            snprintf(err, errlen, "dataset %s has no stored file (deleted since?)", job->dataset_id);
            return -1;
        }
        if (job->val_fraction < 0) {
            snprintf(err, errlen, "dataset %s has no recorded val_fraction", job->dataset_id);
            return -1;
        }
        char cache[4096], blob[4096];
        layout_cache_dir(cache, sizeof cache, w->data_dir);
        if (fs_mkdirs(cache)) {
            snprintf(err, errlen, "cannot create %.900s: %s", cache, strerror(errno));
            return -1;
        }
        /* decoded and resized once per (dataset, input shape, split): later jobs and resumed
         * ones read the packed pixels instead of decoding again */
        layout_dataset_cache(cache, sizeof cache, w->data_dir, job->dataset_sha256, cfg->in_chans,
                             cfg->img_size, job->val_fraction, js->seed);
        if (imgf_cache_read(cache, tr, te, err, errlen)) {
            blob_path(blob, sizeof blob, w->data_dir, job->dataset_sha256);
            imgf_limits lim;
            imgf_limits_default(&lim);
            if (imgf_load(blob, &lim, cfg->in_chans, cfg->img_size, job->val_fraction,
                          (uint64_t)js->seed, tr, te, err, errlen))
                return -1;
            char werr[512];
            if (imgf_cache_write(cache, tr, te, werr, sizeof werr))
                job_log(w->name, "warn", NULL, "dataset cache not written: %s", werr);
        }
    }
    if (tr->channels != cfg->in_chans || tr->height != cfg->img_size) {
        snprintf(err, errlen, "the dataset's images are %dx%dx%d but the model takes %dx%dx%d",
                 tr->channels, tr->height, tr->width, cfg->in_chans, cfg->img_size, cfg->img_size);
        goto fail;
    }
    if (tr->num_classes != cfg->num_classes) {
        snprintf(err, errlen, "the dataset has %d classes but the model's head has %d",
                 tr->num_classes, cfg->num_classes);
        goto fail;
    }
    if (te->n == 0) {
        snprintf(err, errlen, "the dataset has no held-out images to measure accuracy on");
        goto fail;
    }
    /* uploads come sorted by class: a subset of them must be a sample, not the first classes */
    if (strcmp(job->dataset_kind, "builtin") && (js->train_subset || js->eval_subset) &&
        (ds_permute(tr, (uint64_t)js->seed) || ds_permute(te, (uint64_t)js->seed + 1))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (js->train_subset) ds_truncate(tr, js->train_subset < tr->n ? js->train_subset : tr->n);
    if (js->eval_subset) ds_truncate(te, js->eval_subset < te->n ? js->eval_subset : te->n);
    return 0;
fail:
    ds_free(tr);
    ds_free(te);
    return -1;
}

/* ---- the job ---- */

/* model_input is what the model's upload was inspected with (api/jobs.c puts it in the spec).
 * A spec without it (submitted before there was one) gets the job's num_heads alone, as then. */
void job_model_hints(json_t *in, int num_heads, ckpt_hints *h) {
    *h = (ckpt_hints){.num_heads = num_heads};
    json_t *img = json_object_get(in, "img_size"), *heads = json_object_get(in, "num_heads");
    json_t *mean = json_object_get(in, "mean"), *std = json_object_get(in, "std");
    if (json_is_integer(img)) h->img_size = (int)json_integer_value(img);
    if (!h->num_heads && json_is_integer(heads)) h->num_heads = (int)json_integer_value(heads);
    /* one entry per input channel: a grey model's one value stands for all three */
    size_t nm = json_array_size(mean), ns = json_array_size(std);
    if (nm < 1 || nm > 3 || ns != nm) return;
    for (int i = 0; i < 3; i++) {
        size_t k = (size_t)i < nm ? (size_t)i : 0;
        h->mean[i] = (float)json_number_value(json_array_get(mean, k));
        h->std[i] = (float)json_number_value(json_array_get(std, k));
    }
    h->have_norm = 1;
}

static int finish(const worker_env *w, const char *id, const char *state, const char *error) {
    int rc = store_job_finish(w->s, id, w->name, state, error);
    /* A database that is restarting (a cluster's PostgreSQL) fails the call that meets it and
     * the next connects again: a finished job is worth waiting a little for, rather than
     * leaving it to run again once its lease runs out. */
    for (int tries = 0; rc == STORE_EDB && tries < 30 && !*w->stop; tries++) {
        sleep(1);
        rc = store_job_finish(w->s, id, w->name, state, error);
    }
    if (rc == STORE_ELEASE) {
        job_log(w->name, "warn", id, "not recorded as %s: the lease is gone", state);
        return 0;
    }
    if (rc) {
        job_log(w->name, "error", id, "cannot record the end (%s): %s", state, store_errmsg(w->s));
        return -1;
    }
    job_log(w->name, "info", id, "%s%s%s", state, error ? ": " : "", error ? error : "");
    return 0;
}

/* 1 if errno e says the disk failed us (full, or an I/O error) rather than the job: such an
 * attempt is retried (retry below), anything else fails the job. */
static int disk_fault(int e) {
    return fs_is_full(e) || e == EIO;
}

/* Ends an attempt that failed because of the disk (what: the step it was in; e: its errno):
 * back to the queue, the attempt counted, to resume from its stage-1 checkpoint (a failed write
 * leaves the last one as it was) once space is freed; or failed after its last attempt. The
 * details, with paths, go to the log; the job's error only says what happened. */
static int retry_msg(const worker_env *w, const char *id, const char *state_path,
                     const char *msg, const char *detail);
static int retry(const worker_env *w, const char *id, const char *state_path, const char *what,
                 int e, const char *detail) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s while %s",
             fs_is_full(e) ? "the server's disk was full" : "the server's disk failed (I/O error)",
             what);
    return retry_msg(w, id, state_path, msg, detail);
}

/* The same for any reason msg (the job's error) beside detail (the log's). */
static int retry_msg(const worker_env *w, const char *id, const char *state_path,
                     const char *msg, const char *detail) {
    job_log(w->name, "warn", id, "%s: %s", msg, detail);
    int requeued = 0, rc = store_job_retry(w->s, id, w->name, msg, &requeued);
    if (rc == STORE_ELEASE) {
        job_log(w->name, "warn", id, "not given back: the lease is gone");
        return 0;
    }
    if (rc) {
        job_log(w->name, "error", id, "cannot give back: %s", store_errmsg(w->s));
        return -1;
    }
    if (!requeued) unlink(state_path); /* it ended: nothing will resume from it */
    job_log(w->name, "info", id, requeued ? "given back to the queue, to be retried"
                                          : "ended: no attempts left, or canceled");
    return 0;
}

int job_run(const worker_env *w, const store_claim *job) {
    const char *id = job->id;
    char err[2048], dir[4096], state_path[4096], art[4096];
    job_log(w->name, "info", id, "claimed (attempt %d)", job->attempts);

    /* the stored spec: its options (the references beside them are the claim's own fields) */
    jobspec js;
    jobspec_defaults(&js);
    if (jobspec_apply_json(&js, job->spec, jobspec_refs, NULL, err, sizeof err))
        return finish(w, id, "failed", err);
    if (layout_job_dir(dir, sizeof dir, w->data_dir, id) ||
        layout_job_state(state_path, sizeof state_path, w->data_dir, id) ||
        layout_artifacts_dir(art, sizeof art, w->data_dir, id)) {
        snprintf(err, sizeof err, "the data dir's path is too long");
        return finish(w, id, "failed", err);
    }
    if (fs_mkdirs(dir)) {
        snprintf(err, sizeof err, "cannot create %.900s: %s", dir, strerror(errno));
        return finish(w, id, "failed", err);
    }

    beat b;
    if (beat_start(&b, w, id, err, sizeof err)) return finish(w, id, "failed", err);
    job_ui ui = {.b = &b, .w = w, .job_id = id};
    gplq_progress p0 = {.stage = "calibrate", .part = "load", .total = 1};
    on_progress(&ui, &p0);

    model fp;
    ds_set tr, te;
    char blob[4096];
    blob_path(blob, sizeof blob, w->data_dir, job->model_sha256);
    ckpt_hints hints;
    job_model_hints(json_object_get(job->spec, "model_input"), js.num_heads, &hints);
    int loaded = 0, rc = -1;
    if (!*job->model_sha256) {
        snprintf(err, sizeof err, "the job's model has no stored file (deleted since?)");
    } else if (ckpt_load(&fp, blob, &hints, NULL, err, sizeof err) == 0) {
        loaded = 1;
        model_dims dims = model_get_dims(&fp);
        rc = job_load_data(w, job, &dims, &js, &tr, &te, err, sizeof err);
    }

    gplq_report rep;
    model qm;
    actq_set aq;
    stage2_result s2;
    /* Set when a failure was the disk's: the step, and errno (errno is cleared before each
     * step that writes, so a stale value is never taken for the step's). */
    const char *disk_step = NULL;
    int disk_errno = 0;
    if (rc == 0) {
        gplq_config c;
        gplq_config_from_spec(&c, &js);
        c.s1.ckpt_path = state_path;
        c.after_passes = gplq_artifacts_passes(&te, js.ort);
        if (access(state_path, F_OK) == 0)
            job_log(w->name, "info", id, "resuming stage 1 from %s", state_path);
        errno = 0;
        if (js.mpi) /* across processes: rank 0 writes the artifacts (worker/mpijob.h) */
            rc = mpijob_run(w, job, &js, state_path, art, on_progress, &ui, err, sizeof err);
        else
            rc = gplq_run(&fp, &tr, &te, &c, on_progress, &ui, &rep, &qm, &aq, &s2, err,
                          sizeof err);
        if (rc < 0 && disk_fault(errno))
            disk_step = "saving the stage-1 checkpoint", disk_errno = errno;
        if (rc == 0 && !js.mpi) {
            json_t *config = jobspec_to_json(&js);
            json_object_set_new(config, "model_id", json_string(job->model_id));
            json_object_set_new(config, "dataset_id", json_string(job->dataset_id));
            json_object_set_new(config, "job_id", json_string(id));
            errno = 0;
            rc = gplq_write_artifacts(art, &qm, &aq, &s2, &rep, config, &te, js.ort,
                                      on_progress, &ui, err, sizeof err);
            if (rc && disk_fault(errno))
                disk_step = "writing the artifacts", disk_errno = errno;
            if (rc == 0) report_ort_metrics(&ui, art);
            json_decref(config);
            model_free(&qm);
            actq_free(&aq);
            stage2_result_free(&s2);
        }
        ds_free(&tr);
        ds_free(&te);
    }
    if (loaded) model_free(&fp);

    /* record the artifacts: the files are complete (written and renamed) before any row names them */
    const char *const *names = layout_artifacts;
    for (int i = 0; rc == 0 && names[i]; i++) {
        char path[8400], hex[65];
        int64_t bytes;
        layout_artifact(path, sizeof path, w->data_dir, id, names[i]);
        int src;
        if (file_sha256(path, hex, &bytes)) {
            int e = errno;
            snprintf(err, sizeof err, "cannot read back %s: %s", names[i], strerror(e));
            if (disk_fault(e)) disk_step = "reading back the artifacts", disk_errno = e;
            rc = -1;
        } else if ((src = store_artifact_add(w->s, id, names[i], bytes, hex))) {
            snprintf(err, sizeof err, "cannot record %s: %s", names[i], store_errmsg(w->s));
            if (src == STORE_EFULL || src == STORE_EIO)
                disk_step = "recording the artifacts",
                disk_errno = src == STORE_EFULL ? ENOSPC : EIO;
            rc = -1;
        }
    }
    if (rc == 0) {
        gplq_progress pd = {.stage = "export", .part = "artifacts", .step = 1, .total = 1,
                            .fraction = 1};
        ui.recorded = 1;
        on_progress(&ui, &pd);
    }
    int cancel = b.cancel, lost = b.lost || ui.lost_metrics;
    beat_stop(&b);

    if (lost) {
        job_log(w->name, "warn", id, "abandoned: the lease went to another worker");
        return 0;
    }
    if (rc == 0) {
        unlink(state_path);
        return finish(w, id, "succeeded", NULL);
    }
    if (rc == 1 && cancel) {
        unlink(state_path);
        return finish(w, id, "canceled", NULL);
    }
    if (rc < 0 && disk_step) return retry(w, id, state_path, disk_step, disk_errno, err);
    if (rc == MPIJOB_RANK_DIED) return retry_msg(w, id, state_path, err, err);
    if (rc == 1) {  /* asked to stop: stage 1 checkpointed; another worker (or this one, restarted) resumes */
        int r = store_job_release(w->s, id, w->name);
        job_log(w->name, "info", id,
                r == STORE_OK ? "given back to the queue" : "could not give back: %s",
                store_errmsg(w->s));
        return 0;
    }
    unlink(state_path);
    return finish(w, id, "failed", err);
}
