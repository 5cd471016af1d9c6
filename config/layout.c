/*
 * layout.c: see layout.h.
 */
#include "config/layout.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const layout_artifacts[] = {LAYOUT_ARTIFACT_Q, LAYOUT_ARTIFACT_FAKEQUANT,
                                        LAYOUT_ARTIFACT_REPORT, LAYOUT_ARTIFACT_ONNX,
                                        LAYOUT_ARTIFACT_ONNX_W4, NULL};

int layout_is_artifact(const char *name) {
    for (const char *const *a = layout_artifacts; *a; a++)
        if (!strcmp(*a, name)) return 1;
    return 0;
}

static int path(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

int layout_db(char *buf, size_t n, const char *data_dir) {
    return path(buf, n, "%s/gplq.db", data_dir);
}

int layout_lock(char *buf, size_t n, const char *data_dir) {
    return path(buf, n, "%s/gplqd.lock", data_dir);
}

int layout_secret_key(char *buf, size_t n, const char *data_dir) {
    return path(buf, n, "%s/secret.key", data_dir);
}

int layout_jobs(char *buf, size_t n, const char *data_dir) {
    return path(buf, n, "%s/jobs", data_dir);
}

int layout_job_dir(char *buf, size_t n, const char *data_dir, const char *job_id) {
    return path(buf, n, "%s/jobs/%s", data_dir, job_id);
}

int layout_job_state(char *buf, size_t n, const char *data_dir, const char *job_id) {
    return path(buf, n, "%s/jobs/%s/stage1.state", data_dir, job_id);
}

int layout_artifacts_dir(char *buf, size_t n, const char *data_dir, const char *job_id) {
    return path(buf, n, "%s/jobs/%s/artifacts", data_dir, job_id);
}

int layout_artifact(char *buf, size_t n, const char *data_dir, const char *job_id,
                    const char *name) {
    return path(buf, n, "%s/jobs/%s/artifacts/%s", data_dir, job_id, name);
}

int layout_cache_dir(char *buf, size_t n, const char *data_dir) {
    return path(buf, n, "%s/cache", data_dir);
}

int layout_dataset_cache(char *buf, size_t n, const char *data_dir, const char *sha256,
                         int in_chans, int img_size, double val_fraction, int seed) {
    return path(buf, n, "%s/cache/%s-c%d-s%d-v%04d-r%d.gds", data_dir, sha256, in_chans, img_size,
                (int)(val_fraction * 1000 + 0.5), seed);
}
