/*
 * export.h: the quantized artifacts of a GPLQ job, and loading them back.
 *
 * model.q.safetensors (format "gplq-q-1"): for each quantized matrix, "<timm name>.qweight" (U8,
 * (rows, packed bytes per row): 4-bit codes two per byte, low nibble first, up to 8 bits one per
 * byte, see gplq/quant.h) and "<timm name>.wscale" (F32, (rows)); every other parameter in FP32
 * under its timm name; the activation steps as "actq.<where>.step" (F32, (channels)) with
 * <where> "blocks.N.qkv_in", "blocks.N.qkv_out" (q, k, v), "blocks.N.attn" (softmax),
 * "blocks.N.proj_in", "blocks.N.fc1_in", "blocks.N.fc2_in", "patch_in", "head_in", and for a
 * Swin "layers.S.merge_in" (actq_slot_name; N counts blocks over the whole model, also in a
 * Swin); QwT as "blocks.N.qwt.weight" ((C, C), applied as x W^T) and "blocks.N.qwt.bias",
 * F16 when every value is a half (what the pipeline computes: it rounds QwT's terms to FP16,
 * as the official QwT code runs them), else F32; readers take either. __metadata__ holds
 * the format version, the model config, the bits and granularity of every quantizer kind, and
 * whatever the caller adds (the job's config, its accuracies).
 * model.fakequant.safetensors: the same model with dequantized FP32 weights under timm names
 * (loadable by timm), plus the same steps and QwT tensors.
 */
#ifndef GPLQ_EXPORT_H
#define GPLQ_EXPORT_H

#include "engine/model.h"
#include "gplq/actq.h"
#include "gplq/stage2.h"

#define GPLQ_Q_FORMAT "gplq-q-1"

/* Writes both files into dir (existing). m is the final model (dequantized weights), aq its
 * quantizers, s2 the stage-2 result (codes, scales, QwT). nextra metadata pairs are added. */
int gplq_export(const char *dir, const model *m, const actq_set *aq, const stage2_result *s2,
                const char *const *keys, const char *const *vals, int nextra, char *err,
                size_t errlen);

/* A model loaded from model.q.safetensors: the weights dequantized, the quantizers in QUANT
 * mode and installed, QwT installed. Free with gplq_qmodel_free. */
typedef struct {
    model m;
    actq_set aq;
    int depth;              /* blocks */
    float **qwt_w, **qwt_b; /* (depth) owned */
} gplq_qmodel;

int gplq_load_quantized(gplq_qmodel *q, const char *path, char *err, size_t errlen);
void gplq_qmodel_free(gplq_qmodel *q);

#endif
