/*
 * fuzz_checkpoint.c: libFuzzer harness of loading a checkpoint (io/checkpoint.h): the
 * safetensors reader, then the name mapping of the ViT's three conventions (timm, HuggingFace,
 * torchvision) and the Swin's (timm, timm < 0.9, HuggingFace: io/swin_names.c), the config
 * inferred from the shapes and the metadata, and the check of every tensor against it. The input is a whole safetensors file, read from memory (st_open_mem).
 *
 * Each accepted file is loaded as the upload inspector does it (gplq-worker inspect-model:
 * check_only, no weights copied), then as a job loads it (the weights converted), and its
 * config written out as JSON. The first byte of the input picks the num_heads hint (0 to 7), as
 * the upload's ?num_heads= does when the file's metadata does not say, and the second the
 * img_size hint (0, or 4 to 259 px) a Swin file needs when its metadata does not say.
 */
#include "io/checkpoint.h"
#include "tests/fuzz/fuzz.h"

/* A file that infers a model of more parameters than this is checked but not loaded with its
 * weights: the allocation (4 bytes a parameter) would make the run slow, not reach more code. */
#define FUZZ_MAX_PARAMS (1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[1024] = "";
    if (st_open_mem(&f, data, size, err, sizeof err)) {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
        return 0;
    }
    ckpt_hints hints = {.num_heads = size ? data[0] & 7 : 0, .check_only = 1};
    if (size > 1 && data[1]) hints.img_size = 4 + data[1];
    model_config cfg;
    ckpt_convention conv;
    if (ckpt_infer(&f, &hints, &cfg, &conv, err, sizeof err)) {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
        st_close(&f);
        return 0;
    }
    model m;
    err[0] = '\0';
    if (ckpt_load_file(&m, &f, &hints, &conv, err, sizeof err) == 0) {
        model_config mc = model_get_config(&m);
        json_t *j = ckpt_config_json(&mc);
        char *s = json_dumps(j, JSON_COMPACT);
        fuzz_say(ckpt_convention_name(conv), s ? s : "?");
        free(s);
        json_decref(j);
        size_t nparams = model_num_params(&m);
        model_free(&m);
        if (nparams <= FUZZ_MAX_PARAMS) {
            hints.check_only = 0;
            err[0] = '\0';
            if (ckpt_load_file(&m, &f, &hints, &conv, err, sizeof err) == 0) model_free(&m);
            else abort(); /* what the inspector accepted, a job must load */
        }
    } else {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
    }
    st_close(&f);
    return 0;
}
