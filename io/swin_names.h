/*
 * swin_names.h: the tensor names of Swin Transformer checkpoints, and the config their shapes
 * tell.
 *
 * Three namings are in use and all three load into the engine (engine/swin.h), whose names are
 * timm's >= 0.9:
 *   - timm >= 0.9: PatchMerging at the START of stage s as layers.{s}.downsample (s >= 1), the
 *     classifier as head.fc (timm 0.9.0 still saved the relative_position_index and attn_mask
 *     buffers, later versions do not);
 *   - timm < 0.9 (and Microsoft's original code): the merge at the END of the stage before,
 *     layers.{s-1}.downsample, the classifier as head, the buffers
 *     layers.{s}.blocks.{j}.attn.relative_position_index and, in shifted blocks,
 *     layers.{s}.blocks.{j}.attn_mask;
 *   - HuggingFace transformers' SwinForImageClassification: swin.embeddings.*,
 *     swin.encoder.layers.{s}.blocks.{j}.{layernorm_before, attention.self.{query, key, value,
 *     relative_position_bias_table, relative_position_index}, attention.output.dense,
 *     layernorm_after, intermediate.dense, output.dense}, the merge at the END of stage s as
 *     swin.encoder.layers.{s}.downsample.{reduction, norm}, swin.layernorm, classifier.
 * Buffers are recomputed from the config, so a loader ignores them.
 *
 * Errors: functions returning int give 0 on success and -1 on failure, with a message in the
 * caller's err buffer (errlen bytes, always NUL-terminated), in io/checkpoint.c's words.
 */
#ifndef GPLQ_SWIN_NAMES_H
#define GPLQ_SWIN_NAMES_H

#include <stddef.h>

#include "engine/swin.h"
#include "io/safetensors.h"

typedef enum { SWIN_NAMING_TIMM, SWIN_NAMING_TIMM_OLD, SWIN_NAMING_HF } swin_naming;

/* "timm", "timm < 0.9" or "huggingface"; a static string. */
const char *swin_naming_name(swin_naming n);

typedef enum {
    SWIN_NAME_UNKNOWN = -1, /* not a tensor of a Swin in this naming */
    SWIN_NAME_PARAM = 0,    /* a whole parameter; out gets its timm >= 0.9 name */
    SWIN_NAME_PART = 1,     /* HuggingFace's query, key or value: rows [part*C, (part+1)*C) of
                               the timm tensor out (attn.qkv.weight (3C, C) or .bias (3C)) */
    SWIN_NAME_BUFFER = 2,   /* relative_position_index or attn_mask: recomputed, ignore it */
} swin_name_kind;

/* Maps name, a tensor name in naming n, to its timm >= 0.9 name in out (outlen bytes; an
 * empty string unless the kind is PARAM or PART) and, for PART, *part to 0 (query), 1 (key)
 * or 2 (value); part may be NULL. Block and stage indices are taken as written (up to 999);
 * nothing is checked against a config. */
swin_name_kind swin_names_map(swin_naming n, const char *name, char *out, size_t outlen,
                              int *part);

/* The inverse: the name in naming n of timm >= 0.9 parameter timm_name (for attn.qkv.* in
 * HuggingFace naming, of its third part: 0 query, 1 key, 2 value; part is ignored otherwise)
 * into out. Returns 0, or -1 if timm_name is not a Swin parameter name. */
int swin_names_source(swin_naming n, const char *timm_name, int part, char *out, size_t outlen);

/* Which naming the tensor names of f follow: HuggingFace by swin.embeddings.*, timm by
 * patch_embed.proj.weight with layers.*, then timm < 0.9 by head.weight or a merge in
 * layers.0, timm >= 0.9 by head.fc.weight or a merge past layers.0 (a one-stage model
 * without a head is the same in both: timm >= 0.9). Fails, saying what is missing and what
 * is there instead, on a file of neither family, and on one that mixes the two timm namings. */
int swin_names_detect(const st_file *f, swin_naming *n, char *err, size_t errlen);

/* The naming (detected as above, into *n if n is not NULL) and the config of the Swin in f,
 * from its shapes: embed_dim, in_chans and patch from the patch conv, stages and depths from
 * the block indices, heads per stage from the bias tables' columns, window from stage 0's
 * table ((2w-1)^2 rows), mlp_ratio from fc1, num_classes from the head. Every parameter of
 * that config must be present in f with its shape (other tensors are not looked at).
 * img_size cannot be told from shapes: the caller passes it (from metadata or a flag), and
 * with it (> 0) each stage's table is checked against the window timm gives that stage,
 * min(window, resolution); with 0 each table only has to be of a window <= stage 0's, and
 * cfg->img_size is left 0. ln_eps is 1e-5 (timm's and HuggingFace's), mean and std
 * ImageNet's: the caller overrides them from metadata. Swin V2 files (logit_scale, cpb_mlp) and
 * absolute position embeddings are refused by name. Does not call swin_config_check. */
int swin_names_infer(const st_file *f, int img_size, swin_config *cfg, swin_naming *n,
                     char *err, size_t errlen);

#endif
