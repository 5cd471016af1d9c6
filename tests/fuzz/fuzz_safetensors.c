/*
 * fuzz_safetensors.c: libFuzzer harness of the safetensors reader (io/safetensors.h), the
 * parser of every uploaded model. The input is a whole file. It goes through st_open_mem, and
 * through st_open on a memfd (fuzz.h) when it is small, so both entry points (the buffer and the
 * mapped file) meet the same bytes. An accepted file is then used the way the loaders use it:
 * every tensor found by name and converted to float32, every metadata value looked up.
 */
#include "io/safetensors.h"
#include "tests/fuzz/fuzz.h"

/* Conversion of tensors larger than this is skipped: a valid 64 MB file would make each run
 * slow without reaching more code. */
#define FUZZ_MAX_NUMEL (1 << 20)

static void use(const st_file *f) {
    for (int i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (st_find(f, t->name) != t) abort(); /* names are unique: the lookup finds this one */
        if (t->nbytes != (size_t)t->numel * st_dtype_size(t->dtype)) abort();
        if (t->nbytes && ((const char *)t->data < (const char *)f->map ||
                          (const char *)t->data + t->nbytes > (const char *)f->map + f->map_len))
            abort();
        if (t->numel > FUZZ_MAX_NUMEL) continue;
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        if (!out) continue;
        if (st_to_f32(t, out)) abort(); /* never fails for a validated tensor */
        free(out);
    }
    for (int i = 0; i < f->nmeta; i++)
        if (!st_meta(f, f->meta_keys[i])) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    char err[512] = "";
    if (st_open_mem(&f, data, size, err, sizeof err) == 0) {
        fuzz_say("accepted", "");
        use(&f);
        st_close(&f);
    } else {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
    }
    if (size > 1 << 16) return 0;
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    err[0] = '\0';
    if (st_open(&f, path, err, sizeof err) == 0) {
        use(&f);
        st_close(&f);
    } else {
        fuzz_check_err(err, sizeof err);
    }
    close(fd);
    return 0;
}
