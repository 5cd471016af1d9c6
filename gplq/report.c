/*
 * report.c: see report.h.
 */
#include "gplq/report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/layout.h"
#include "engine/blas.h"
#include "engine/ops.h"
#include "gplq/export.h"
#include "onnx/export.h"
#include "onnx/ort.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/mem.h"

json_t *gplq_report_json(const gplq_report *r, json_t *config) {
    json_t *acc = json_object(), *blocks = json_array();
#define ACC(k, v) if ((v) >= 0) json_object_set_new(acc, k, json_real(v))
    ACC("fp32", r->fp32);
    ACC("stage1", r->stage1);
    ACC("stage2_noqwt", r->stage2_noqwt);
    ACC("gplq", r->gplq);
    ACC("ptq_baseline", r->ptq_baseline);
    ACC("minmax_baseline", r->minmax_baseline);
#undef ACC
    for (int l = 0; l < r->depth; l++)
        json_array_append_new(blocks, json_pack("{s:i, s:f, s:f, s:f}", "block", l, "qwt_r2",
                                                r->r2[l], "mse_before", r->mse_before[l],
                                                "mse_after", r->mse_after[l]));
    json_t *times = json_object(), *peaks = json_object();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long peak_kb = ru.ru_maxrss; /* restarted with the phases' marks: the largest of them too */
    for (int i = 0; i < r->nphases; i++) {
        json_object_set_new(times, r->phases[i].name, json_real(r->phases[i].seconds));
        if (r->phases[i].peak_kb > peak_kb) peak_kb = r->phases[i].peak_kb;
        if (r->peaks)
            json_object_set_new(peaks, r->phases[i].name,
                                json_integer((json_int_t)(r->phases[i].peak_kb / 1024)));
    }
    json_object_set_new(times, "total", json_real(r->seconds_total));
    if (!r->peaks) { /* the mark could not restart: the phases' values are not theirs */
        json_decref(peaks);
        peaks = json_null();
    }
    return json_pack("{s:o, s:{s:i, s:f, s:f, s:o}, s:o, s:o, s:I, s:s, s:o}",
                     "accuracy", acc,
                     "diagnostics", "pca_k", r->pca_k, "pca_explained", r->pca_explained,
                     "stage1_lr", r->lr, "blocks", blocks,
                     "timings_s", times,
                     "peak_rss_mb_by_phase", peaks,
                     "peak_rss_mb", (json_int_t)(peak_kb / 1024),
                     "blas_core", blas_core(),
                     "config", config ? config : json_object());
}

/* each ONNX file's export and ONNX Runtime pass, in forward passes over the test images */
#define ONNX_FILE_PASSES 2.0

double gplq_artifacts_passes(const ds_set *test, int ort) {
    return test->n * (1 + (ort ? 2 * ONNX_FILE_PASSES : 0));
}

/* gplq_write_artifacts' progress: `done` passes of its own after gplq_run's share */
typedef struct {
    gplq_progress_fn fn;
    void *ctx;
    double base, total; /* forward passes: gplq_run's, and the whole */
} export_relay;

static void export_tick(const export_relay *x, const char *part, int64_t step, int64_t total,
                        double done) {
    if (!x->fn) return;
    gplq_progress g = {.stage = "export", .part = part, .step = step, .total = total,
                       .fraction = x->total > 0 ? (x->base + done) / x->total : 1};
    x->fn(x->ctx, &g);
}

/* model.onnx and model.w4.onnx from the proven model.q.safetensors in dir, and ONNX Runtime's
 * top-1 of each on test: a new "onnx" object for the report, or NULL (err) if a file could
 * not be written. A missing or failing runtime is recorded in the object, not a failure: the
 * files are gplq's model whatever runs them, and a job does not fail for want of node. */
static json_t *write_onnx(const char *dir, const ds_set *test, int ort, const export_relay *x,
                          char *err, size_t errlen) {
    static const struct { const char *name; onnx_kind kind; } files[] = {
        {LAYOUT_ARTIFACT_ONNX, ONNX_KIND_QDQ}, {LAYOUT_ARTIFACT_ONNX_W4, ONNX_KIND_W4}};
    char qpath[4096], path[4200], why[1024] = "";
    if (!ort) snprintf(why, sizeof why, "not measured: the ort option is off");
    snprintf(qpath, sizeof qpath, "%s/" LAYOUT_ARTIFACT_Q, dir);
    const char *tmp = getenv("TMPDIR");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    json_t *o = json_object();
    int measured = 0, nfiles = (int)(sizeof files / sizeof files[0]);
    double per_file = ort ? ONNX_FILE_PASSES * test->n : 0;
    for (int i = 0; i < nfiles; i++) {
        export_tick(x, "onnx", i, nfiles, test->n + i * per_file);
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (onnx_export(qpath, path, files[i].kind, NULL, err, errlen)) {
            json_decref(o);
            return NULL;
        }
        struct stat st;
        json_t *f = json_pack("{s:I}", "bytes", (json_int_t)(stat(path, &st) ? -1 : st.st_size));
        onnx_ort_result r;
        int rc = *why ? 1 : onnx_ort_top1(path, test, ncpu > 0 ? (int)ncpu : 1,
                                          tmp && *tmp ? tmp : "/tmp", &r, why, sizeof why);
        json_object_set_new(f, "top1_ort", rc == 0 ? json_real(r.top1) : json_null());
        if (rc == 0) {
            json_object_set_new(o, "runtime", json_string(r.runtime));
            json_object_set_new(o, "images", json_integer(r.images));
            measured = 1;
        } else if (rc < 0) {
            json_object_set_new(f, "error", json_string(why));
            why[0] = 0; /* the next file may still run */
        }
        json_object_set_new(o, files[i].name, f);
    }
    export_tick(x, "onnx", nfiles, nfiles, test->n + nfiles * per_file);
    if (!measured) json_object_set_new(o, "runtime", json_null());
    if (*why) json_object_set_new(o, "unavailable", json_string(why));
    return o;
}

int gplq_write_artifacts(const char *dir, const model *m, const actq_set *aq,
                         const stage2_result *s2, const gplq_report *r, json_t *config,
                         const ds_set *test, int ort, gplq_progress_fn progress, void *ctx,
                         char *err, size_t errlen) {
    double own = gplq_artifacts_passes(test, ort), base = r->passes - r->after_passes;
    export_relay x = {.fn = progress, .ctx = ctx, .base = base, .total = base + own};
    export_tick(&x, "artifacts", 0, 1, 0);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.900s: %s", dir, strerror(errno));
        return -1;
    }
    double t0 = clock_mono_s();
    char acc[32], path[4096];
    snprintf(acc, sizeof acc, "%.6f", r->gplq);
    char *cfgs = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
    const char *keys[] = {"gplq_config", "top1_gplq"}, *vals[] = {cfgs ? cfgs : "{}", acc};
    int rc = gplq_export(dir, m, aq, s2, keys, vals, 2, err, errlen);
    free(cfgs);
    if (rc) return -1;

    /* proof: the file alone gives the accuracy just measured */
    gplq_qmodel back;
    snprintf(path, sizeof path, "%s/" LAYOUT_ARTIFACT_Q, dir);
    if (gplq_load_quantized(&back, path, err, errlen)) return -1;
    double top1;
    enum matmul_precision caller_precision =
        matmul_set_precision(r->bf16 ? MATMUL_BF16 : MATMUL_FP32); /* as the run measured */
    rc = train_eval_top1(&back.m, test, 256, &top1, err, errlen);
    matmul_set_precision(caller_precision);
    gplq_qmodel_free(&back);
    if (rc) return -1;
    if (top1 != r->gplq) {
        snprintf(err, errlen, "%.900s reloads to top-1 %.6f, not the %.6f measured", path, top1,
                 r->gplq);
        return -1;
    }

    export_tick(&x, "artifacts", 1, 1, test->n);

    double t_onnx = clock_mono_s();
    long peak_artifacts = mem_peak_kb();
    mem_peak_restart();
    json_t *onnx = write_onnx(dir, test, ort, &x, err, errlen);
    if (!onnx) return -1;
    long peak_onnx = mem_peak_kb(); /* the worker's: ONNX Runtime runs in a process of its own */
    json_t *rj = gplq_report_json(r, json_incref(config));
    /* where the time after gplq_run goes: the model files and their reload proof, then the
     * ONNX files and ONNX Runtime's passes over the test images */
    json_t *times = json_object_get(rj, "timings_s");
    double t_end = clock_mono_s();
    json_object_set_new(times, "artifacts", json_real(t_onnx - t0));
    json_object_set_new(times, "onnx", json_real(t_end - t_onnx));
    json_object_set_new(times, "total", json_real(r->seconds_total + t_end - t0));
    json_t *peaks = json_object_get(rj, "peak_rss_mb_by_phase");
    if (json_is_object(peaks)) {
        json_object_set_new(peaks, "artifacts", json_integer((json_int_t)(peak_artifacts / 1024)));
        json_object_set_new(peaks, "onnx", json_integer((json_int_t)(peak_onnx / 1024)));
    }
    long all = peak_artifacts > peak_onnx ? peak_artifacts : peak_onnx;
    if (all / 1024 > json_integer_value(json_object_get(rj, "peak_rss_mb")))
        json_object_set_new(rj, "peak_rss_mb", json_integer((json_int_t)(all / 1024)));
    /* ONNX Runtime's top-1s are accuracies like gplq's own (the job's metrics carry them too) */
    json_t *accj = json_object_get(rj, "accuracy");
    json_t *t1 = json_object_get(json_object_get(onnx, LAYOUT_ARTIFACT_ONNX), "top1_ort");
    json_t *t2 = json_object_get(json_object_get(onnx, LAYOUT_ARTIFACT_ONNX_W4), "top1_ort");
    if (json_is_number(t1)) json_object_set(accj, "ort_onnx", t1);
    if (json_is_number(t2)) json_object_set(accj, "ort_w4", t2);
    json_object_set_new(rj, "onnx", onnx);
    snprintf(path, sizeof path, "%s/" LAYOUT_ARTIFACT_REPORT, dir);
    char *text = json_dumps(rj, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
    json_decref(rj);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* written beside, synced, then renamed, as the model files are: a reader never sees half
     * a report, also after a crash */
    rc = fs_write_atomic(path, text, strlen(text));
    int e = errno;
    free(text);
    if (rc) {
        snprintf(err, errlen, "cannot write %.900s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    return 0;
}
