/*
 * report.h: a finished GPLQ run as files: report.json and the quantized artifacts, written
 * the same way by `gplq quantize --out` and by the service's workers, and proven before they
 * are handed out (the quantized file is loaded back and must reproduce the measured accuracy
 * exactly).
 */
#ifndef GPLQ_REPORT_H
#define GPLQ_REPORT_H

#include <jansson.h>

#include "gplq/pipeline.h"
#include "io/dataset.h"

/* The report as a new JSON object: "accuracy" (top-1 fractions under the keys fp32, stage1,
 * stage2_noqwt, gplq, ptq_baseline, minmax_baseline: the names pipelines read), "diagnostics"
 * (PCA, per-block QwT R^2 and output MSE), "timings_s" (each of r's phases, and "total"),
 * "peak_rss_mb_by_phase" (the process's resident peak in each phase, MB; null where the mark
 * cannot restart, see util/mem.h), "peak_rss_mb" (the whole run's), "blas_core" and "config". config is stolen (the caller's reference passes to
 * the report). */
json_t *gplq_report_json(const gplq_report *r, json_t *config);

/* Writes into dir (created if missing): model.q.safetensors, model.fakequant.safetensors (with
 * config and the accuracies in their metadata) and report.json; then loads model.q.safetensors
 * back and checks that it reproduces r->gplq on test bit for bit; then exports it as
 * model.onnx and model.w4.onnx (onnx/export.h) and, if ort, runs both in ONNX Runtime on test
 * where it is installed (onnx/ort.h), the report's "onnx" object: each file's bytes and
 * top1_ort (null, with "unavailable" or "error" saying why, when it could not run), also under
 * "accuracy" as ort_onnx and ort_w4 when measured. timings_s gains "artifacts" (the model
 * files and their proof) and "onnx", and its "total" counts them; so does
 * peak_rss_mb_by_phase (the onnx phase's is the worker's: ONNX Runtime runs in a process of
 * its own). m, aq, s2: gplq_run's
 * outputs. config is borrowed. progress (may be NULL) hears stage "export", parts "artifacts"
 * and "onnx", with fractions that go on from gplq_run's where it left room for them
 * (gplq_config.after_passes); what it returns is not heard, the files are written whole.
 * Returns 0 or -1 with err; each file is written to a temporary
 * name, synced and renamed, so a failed write (errno ENOSPC, say) leaves no part of a file. */
int gplq_write_artifacts(const char *dir, const model *m, const actq_set *aq,
                         const stage2_result *s2, const gplq_report *r, json_t *config,
                         const ds_set *test, int ort, gplq_progress_fn progress, void *ctx,
                         char *err, size_t errlen);

/* gplq_write_artifacts' work in test-image forward passes, progress's unit (gplq_config's
 * after_passes): the reload proof is a pass over test; the two ONNX files' export and
 * ONNX Runtime's passes about four (the demo: 89 s for both against 24 s for an evaluation). */
double gplq_artifacts_passes(const ds_set *test, int ort);

#endif
