/*
 * jobspec.h: the options of one quantization job, in one table shared by everything that takes
 * them: `gplq quantize` flags, the JSON body of POST /v1/jobs (the same names with '_'), the
 * resolved spec stored with each job, and the artifacts' metadata. One table means one set of
 * names, defaults and bounds: a value the command accepts the API accepts, and vice versa.
 *
 * Math-free (gplqd links it); gplq/pipeline.h turns a jobspec into a gplq_config.
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
    float lr, weight_decay, alpha, label_smoothing;
    int pca_samples;
    float pca_var;
    int calib_images, percentile_init, qwt_images, qwt;
    float lambda;
    int pad, hflip, seed, ckpt_every;
    int num_heads;                  /* when the checkpoint does not say */
} jobspec;

#define JOBSPEC_NOPTS 23

/* Fills specs (JOBSPEC_NOPTS entries) with the table bound to js's fields. */
void jobspec_table(jobspec *js, opt_spec specs[JOBSPEC_NOPTS]);
/* Every option at its default. */
void jobspec_defaults(jobspec *js);
/* Applies a JSON object of options over js; an unknown name or a bad value is an error whose
 * message names the field (e.g. "lr 5 is out of range [0, 1]"). 0 or -1. */
int jobspec_apply_json(jobspec *js, json_t *obj, char *err, size_t errlen);
/* The resolved options as a new JSON object with '_' names (json_decref). */
json_t *jobspec_to_json(const jobspec *js);

#endif
