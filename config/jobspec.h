/*
 * jobspec.h: the options of one quantization job, in one table shared by everything that takes
 * them: `gplq quantize` flags, the JSON body of POST /v1/jobs (the same names with '_'), the
 * resolved spec stored with each job, and the artifacts' metadata. One table means one set of
 * names, defaults and bounds: a value the command accepts the API accepts, and vice versa.
 *
 * The table is the only place an option's default is written: gplq_defaults, the CLI's --help,
 * the API's validation and its OpenAPI schema all read it. Math-free (gplqd links it);
 * gplq/pipeline.h turns a jobspec into a gplq_config.
 */
#ifndef GPLQ_JOBSPEC_H
#define GPLQ_JOBSPEC_H

#include <jansson.h>
#include <stddef.h>

#include "config/options.h"

typedef struct {
    int wbits, abits;
    int train_subset, eval_subset;  /* 0 = all */
    int baselines;                  /* also PTQ alone and min-max */
    int epochs, batch_size;         /* stage 1 */
    float lr;                       /* NAN: "auto", resolved by gplq_resolve_lr (in the report) */
    float weight_decay, alpha, label_smoothing;
    int pca_samples;
    float pca_var;
    int calib_images, percentile_init, qwt_images, qwt;
    float lambda;
    int pad, hflip, seed, ckpt_every;
    int bf16;                       /* linear layers' products in BF16 (engine/ops.h) */
    int num_heads;                  /* when the checkpoint does not say */
    int ort;                        /* ONNX Runtime's top-1 of the ONNX artifacts */
    int mpi;                        /* stage 1 across processes through gplqd's mpi_launch */
} jobspec;

#define JOBSPEC_NOPTS 26

/* Fills specs (JOBSPEC_NOPTS entries) with the table bound to js's fields. */
void jobspec_table(jobspec *js, opt_spec specs[JOBSPEC_NOPTS]);
/* Every option at its default. */
void jobspec_defaults(jobspec *js);
/* The keys of a stored spec that are references, not options (NULL-terminated): model_id,
 * dataset_id, and model_input, which gplqd sets from the model's stored config (img_size,
 * mean, std, a ViT's num_heads: how its upload was loaded) for the worker to load it alike. */
extern const char *const jobspec_refs[];

/* Applies a JSON object of options over js, skipping the keys in skip (NULL-terminated, or NULL);
 * an unknown name or a bad value is an error whose message names the field (e.g. "lr 5 is out
 * of range [1e-10, 1]") and *field (if not NULL) the key, borrowed from obj. 0 or -1. */
int jobspec_apply_json(jobspec *js, json_t *obj, const char *const *skip, const char **field,
                       char *err, size_t errlen);
/* The resolved options as a new JSON object with '_' names (json_decref). */
json_t *jobspec_to_json(const jobspec *js);
/* The options as JSON Schema "properties" (type, default, bounds, description), for the API's
 * OpenAPI document. New reference (json_decref). */
json_t *jobspec_schema(void);

#endif
