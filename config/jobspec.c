/*
 * jobspec.c: see jobspec.h.
 */
#include "config/jobspec.h"

#include <string.h>

void jobspec_table(jobspec *js, opt_spec t[JOBSPEC_NOPTS]) {
    const opt_spec specs[JOBSPEC_NOPTS] = {
        {"wbits", OPT_INT, &js->wbits, "4", 2, 8, "weight bits"},
        {"abits", OPT_INT, &js->abits, "4", 2, 8, "activation bits"},
        {"train-subset", OPT_INT, &js->train_subset, "0", 0, 100000000, "use the first N training images (0 = all)"},
        {"eval-subset", OPT_INT, &js->eval_subset, "0", 0, 100000000, "use the first N test images (0 = all)"},
        {"baselines", OPT_FLAG, &js->baselines, "1", 0, 0, "also PTQ alone and min-max (--no-baselines to skip)"},
        {"epochs", OPT_INT, &js->epochs, "1", 1, 1000, "stage 1 epochs"},
        {"batch-size", OPT_INT, &js->batch_size, "128", 1, 65536, "stage 1 batch size"},
        {"lr", OPT_FLOAT_AUTO, &js->lr, "auto", 1e-10, 1, "stage 1 learning rate, constant (auto: 1e-4 below 10M parameters, measured best on the demo model; the paper's 5e-6 above)"},
        {"weight-decay", OPT_FLOAT, &js->weight_decay, "0", 0, 10, "stage 1 AdamW weight decay"},
        {"alpha", OPT_FLOAT, &js->alpha, "1", 0, 1000, "weight of the PCA feature-mimicking term"},
        {"label-smoothing", OPT_FLOAT, &js->label_smoothing, "0", 0, 0.99, "stage 1 label smoothing"},
        {"pca-samples", OPT_INT, &js->pca_samples, "10000", 2, 100000000, "teacher features for the PCA"},
        {"pca-var", OPT_FLOAT, &js->pca_var, "0.6", 0.01, 1, "variance the PCA keeps (in multiples of 32 components)"},
        {"calib-images", OPT_INT, &js->calib_images, "512", 1, 100000000, "images that initialize the activation steps"},
        {"percentile-init", OPT_FLAG, &js->percentile_init, "0", 0, 0, "per-tensor activation steps from the 1st/99th percentiles, as the paper; better on the demo Swin, worse on the demo ViT (default: min-max)"},
        {"qwt-images", OPT_INT, &js->qwt_images, "512", 1, 100000, "calibration images of QwT"},
        {"qwt", OPT_FLAG, &js->qwt, "1", 0, 0, "QwT compensation (--no-qwt to skip)"},
        {"lambda", OPT_FLOAT, &js->lambda, "0.001", 0, 1e6, "QwT ridge strength (relative to the mean diagonal)"},
        {"pad", OPT_INT, &js->pad, "2", 0, 64, "stage 1 random-crop padding"},
        {"hflip", OPT_FLAG, &js->hflip, "1", 0, 0, "stage 1 random horizontal flips (--no-hflip to skip)"},
        {"bf16", OPT_FLAG, &js->bf16, "0", 0, 0, "the linear layers' matrix products in BF16 with FP32 sums, in every pass of the run: faster on CPUs with AVX512-BF16, emulated (slower than FP32) on others"},
        {"seed", OPT_INT, &js->seed, "0", 0, 2147483647, "seed of every random choice"},
        {"ckpt-every", OPT_INT, &js->ckpt_every, "200", 0, 100000000, "stage 1 steps between state checkpoints"},
        {"num-heads", OPT_INT, &js->num_heads, "0", 0, 64, "attention heads if the checkpoint does not say"},
        {"ort", OPT_FLAG, &js->ort, "1", 0, 0, "measure model.onnx and model.w4.onnx in ONNX Runtime on the test images (--no-ort to skip; the files are written either way)"},
        {"mpi", OPT_FLAG, &js->mpi, "0", 0, 0, "a job of gplqd: run it across processes or machines through the server's mpi_launch (stage 1 data-parallel, evaluations split); offline, start gplq quantize under mpirun instead"},
    };
    memcpy(t, specs, sizeof specs);
}

void jobspec_defaults(jobspec *js) {
    opt_spec t[JOBSPEC_NOPTS];
    memset(js, 0, sizeof *js);
    jobspec_table(js, t);
    opt_defaults(t, JOBSPEC_NOPTS);
}

const char *const jobspec_refs[] = {"model_id", "dataset_id", "model_input", NULL};

int jobspec_apply_json(jobspec *js, json_t *obj, const char *const *skip, const char **field,
                       char *err, size_t errlen) {
    opt_spec t[JOBSPEC_NOPTS];
    jobspec_table(js, t);
    return opt_apply_json(t, JOBSPEC_NOPTS, obj, skip, field, err, errlen);
}

json_t *jobspec_to_json(const jobspec *js) {
    opt_spec t[JOBSPEC_NOPTS];
    jobspec copy = *js; /* the table binds mutable fields; reading through a copy keeps js const */
    jobspec_table(&copy, t);
    return opt_to_json(t, JOBSPEC_NOPTS);
}

json_t *jobspec_schema(void) {
    opt_spec t[JOBSPEC_NOPTS];
    jobspec js;
    jobspec_table(&js, t);
    return opt_schema(t, JOBSPEC_NOPTS);
}
