/*
 * layout.h: where a job's files live under the data dir, and what the artifacts are called.
 * gplqd (which creates the folders and serves the artifacts), its workers (which write them)
 * and the offline `gplq quantize` (which writes the same artifacts) all name them here, so a
 * path or a name is written once. The content-addressed blobs and their temporary files are
 * storage/blob.c's (storage owns them: the blob-plus-row invariant).
 *
 *   DATA/gplq.db                              the SQLite database
 *   DATA/gplqd.lock                           held by the one gplqd serving DATA
 *   DATA/secret.key                           the key webhook secrets are sealed under (the
 *                                             default of gplqd's secret-key-file)
 *   DATA/jobs/<id>/stage1.state               stage 1's resumable state (gone when the job ends)
 *   DATA/jobs/<id>/artifacts/<artifact name>  the job's outputs, listed by layout_artifacts
 *   DATA/cache/<sha>-c<C>-s<S>-v<V>-r<seed>.gds  an uploaded dataset decoded at one input shape
 *
 * jobs/, cache/ (and storage's blobs/ and tmp/) are under gplqd's --blob-dir, which is DATA
 * unless given: a cluster's nodes share one (its secret.key too), each keeping its own DATA.
 *
 * Every function writes a path into buf (n bytes) and returns 0, or -1 if it does not fit
 * (buf then holds a truncated path that must not be used).
 */
#ifndef GPLQ_LAYOUT_H
#define GPLQ_LAYOUT_H

#include <stddef.h>

#define LAYOUT_ARTIFACT_Q "model.q.safetensors"                 /* packed 4-bit weights, steps */
#define LAYOUT_ARTIFACT_FAKEQUANT "model.fakequant.safetensors" /* the same, dequantized */
#define LAYOUT_ARTIFACT_REPORT "report.json"                    /* accuracies, options, times */
#define LAYOUT_ARTIFACT_ONNX "model.onnx"                       /* ONNX: INT4 weights, QDQ */
#define LAYOUT_ARTIFACT_ONNX_W4 "model.w4.onnx"                 /* ONNX: MatMulNBits, W4A32 */

/* Every artifact a finished job has, in the order they are listed (NULL-terminated). */
extern const char *const layout_artifacts[];
/* 1 if name is one of layout_artifacts. */
int layout_is_artifact(const char *name);

int layout_db(char *buf, size_t n, const char *data_dir);
int layout_lock(char *buf, size_t n, const char *data_dir);
int layout_secret_key(char *buf, size_t n, const char *data_dir);
int layout_jobs(char *buf, size_t n, const char *data_dir);
int layout_job_dir(char *buf, size_t n, const char *data_dir, const char *job_id);
int layout_job_state(char *buf, size_t n, const char *data_dir, const char *job_id);
int layout_artifacts_dir(char *buf, size_t n, const char *data_dir, const char *job_id);
int layout_artifact(char *buf, size_t n, const char *data_dir, const char *job_id,
                    const char *name);
int layout_cache_dir(char *buf, size_t n, const char *data_dir);
/* The packed cache of dataset sha256 decoded for a model of in_chans x img_size^2, split with
 * val_fraction and seed: one file per (dataset, input shape, split). */
int layout_dataset_cache(char *buf, size_t n, const char *data_dir, const char *sha256,
                         int in_chans, int img_size, double val_fraction, int seed);

#endif
