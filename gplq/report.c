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
#include "gplq/export.h"
#include "train/trainer.h"
#include "util/fs.h"

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
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return json_pack("{s:o, s:{s:i, s:f, s:f, s:o}, s:{s:f, s:f, s:f}, s:I, s:s, s:o}",
                     "accuracy", acc,
                     "diagnostics", "pca_k", r->pca_k, "pca_explained", r->pca_explained,
                     "stage1_lr", r->lr, "blocks", blocks,
                     "timings_s", "stage1", r->seconds_stage1, "stage2", r->seconds_stage2,
                     "total", r->seconds_total,
                     "peak_rss_mb", (json_int_t)(ru.ru_maxrss / 1024),
                     "blas_core", blas_core(),
                     "config", config ? config : json_object());
}

int gplq_write_artifacts(const char *dir, const model *m, const actq_set *aq,
                         const stage2_result *s2, const gplq_report *r, json_t *config,
                         const ds_set *test, char *err, size_t errlen) {
    if (mkdir(dir, 0755) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %.900s: %s", dir, strerror(errno));
        return -1;
    }
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
    rc = train_eval_top1(&back.m, test, 256, &top1, err, errlen);
    gplq_qmodel_free(&back);
    if (rc) return -1;
    if (top1 != r->gplq) {
        snprintf(err, errlen, "%.900s reloads to top-1 %.6f, not the %.6f measured", path, top1,
                 r->gplq);
        return -1;
    }

    json_t *rj = gplq_report_json(r, json_incref(config));
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
