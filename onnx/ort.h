/*
 * ort.h: ONNX Runtime's own top-1 of an exported model on a test set, the number a deploying
 * user cares about, measured where they will run it. gplq does not link ONNX Runtime (Debian
 * does not package it; npm ships its CPU build inside onnxruntime-node): it runs
 * tools/onnx/ort_eval.mjs in node, handing it the test set as raw files, and reads the JSON
 * line it prints.
 *
 * Where the runtime is: $GPLQ_ORT_EVAL (the script; its folder's node_modules holds
 * onnxruntime-node) or else tools/onnx/ort_eval.mjs of the source tree gplq was built from, and
 * $GPLQ_NODE or else node on the PATH. A machine without them (the slim runtime image) gets
 * "unavailable" with the reason, and the job goes on: the artifacts do not depend on it.
 */
#ifndef GPLQ_ONNX_ORT_H
#define GPLQ_ONNX_ORT_H

#include <stddef.h>

#include "io/dataset.h"

typedef struct {
    double top1;          /* on the n images */
    int images;
    double images_per_s;
    char runtime[64];     /* "onnxruntime-node 1.30.0" */
} onnx_ort_result;

/* Runs model (an .onnx file whose metadata_props has mean and std) over test in ONNX Runtime
 * with `threads` intra-op threads. 0 with *r filled; 1 if ONNX Runtime is not installed here
 * (err says what is missing); -1 on a failure (err). tmpdir holds the raw test set while it
 * runs (removed after). */
int onnx_ort_top1(const char *model, const ds_set *test, int threads, const char *tmpdir,
                  onnx_ort_result *r, char *err, size_t errlen);

#endif
