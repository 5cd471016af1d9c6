/*
 * checkpoint.h: models (engine/model.h: ViT/DeiT and Swin) to and from safetensors files.
 *
 * Loading accepts the naming conventions users really have and maps them onto the engine's
 * timm layout. ViTs: timm's VisionTransformer (native), HuggingFace transformers'
 * ViTForImageClassification (separate query/key/value, LayerNorm eps 1e-12) and torchvision's
 * vit_b_16 (in_proj_weight). Swins (io/swin_names.h): timm >= 0.9 (native), timm < 0.9 and
 * HuggingFace's SwinForImageClassification. The config comes from the tensor shapes; what
 * shapes cannot tell (a ViT's heads, a Swin's image size, the input normalization) comes from
 * the file's metadata, else the caller's hints, else timm's conventions (dim / 64 heads,
 * ImageNet mean and std; a Swin without an image size is refused).
 * Saving always writes timm names, with the whole config in __metadata__.
 */
#ifndef GPLQ_CHECKPOINT_H
#define GPLQ_CHECKPOINT_H

#include <stddef.h>

#include <jansson.h>

#include "engine/model.h"
#include "io/safetensors.h"

/* CKPT_TIMM_LEGACY: a Swin in timm < 0.9 names (merges at the end of a stage, head.*). */
typedef enum { CKPT_TIMM, CKPT_HF, CKPT_TORCHVISION, CKPT_TIMM_LEGACY } ckpt_convention;
const char *ckpt_convention_name(ckpt_convention c);

typedef struct {
    int num_heads;           /* 0 = unknown (a ViT's; a Swin's come from its bias tables) */
    int img_size;            /* 0 = unknown; a Swin file may not say it (a ViT's position
                              * embedding does, and a different value here is an error) */
    int have_norm;           /* 1 if mean and std below are given */
    float mean[3], std[3];
    int allow_extra;         /* 1: ignore tensors the model does not use (files that carry more
                              * than a model: training checkpoints, test fixtures) */
    int check_only;          /* 1: check every tensor's presence, shape and dtype but copy no
                              * weights (the parameters stay zero): the upload inspector */
} ckpt_hints;

/* Infers the convention and config of an open file. hints optional. */
int ckpt_infer(const st_file *f, const ckpt_hints *hints, model_config *cfg,
               ckpt_convention *conv, char *err, size_t errlen);
/* Loads path into a new model (*m initialized here; model_free it). hints and conv optional. */
int ckpt_load(model *m, const char *path, const ckpt_hints *hints, ckpt_convention *conv,
              char *err, size_t errlen);
/* Same, from an open file (the model copies the weights, f may be closed afterwards). */
int ckpt_load_file(model *m, const st_file *f, const ckpt_hints *hints, ckpt_convention *conv,
                   char *err, size_t errlen);

/* Writes m's parameters under timm names, config in metadata, plus nextra extra metadata
 * pairs (keys[i], vals[i]); atomic (see st_writer_save). */
int ckpt_save(const model *m, const char *path, const char *const *keys,
              const char *const *vals, int nextra, char *err, size_t errlen);

/* Adds m's parameters (timm names) and config metadata to an existing writer, for files that
 * carry more than a model (training checkpoints, quantized artifacts). Data is borrowed. */
int ckpt_add_model(st_writer *w, const model *m, char *err, size_t errlen);
/* The config that ckpt_add_config wrote, read back from f's metadata alone (for files whose
 * tensors are not a checkpoint's, such as quantized artifacts). 0, or -1 with a message. */
int ckpt_config_from_meta(const st_file *f, model_config *c, char *err, size_t errlen);
/* Only the config metadata (what ckpt_add_model writes besides the tensors). */
int ckpt_add_config(st_writer *w, const model_config *c, char *err, size_t errlen);
/* The config as a new JSON object (json_decref) with the metadata's key names (img_size,
 * patch_size, in_chans, embed_dim, depth, num_heads, mlp_hidden, num_classes, distilled, ln_eps,
 * mean, std), and "arch" ("vit" or "swin"). */
json_t *ckpt_config_json(const model_config *c);
/* The timm name of parameter tensor pi at block layer (ignored for non-block tensors). */
void ckpt_param_name(char *out, size_t n, const param_info *pi, int layer);

#endif
