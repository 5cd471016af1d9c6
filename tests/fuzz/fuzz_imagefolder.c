/*
 * fuzz_imagefolder.c: libFuzzer harness of the image-folder reader (io/imagefolder.h) on whole
 * archives: libarchive's formats and filters (tar, tar.gz, zip, ...), our rules on member names
 * and kinds, the class folders, and the JPEG and PNG headers and data. The input is the
 * uploaded archive; both functions take a path, so it is written to a memfd (fuzz.h).
 *
 * As the service does it: imgf_inspect (the upload inspector), and for an archive it accepts,
 * imgf_load (a job), which must either load it or refuse it with a message. The limits are
 * lower than the defaults (fuzz_limits) so that one input cannot make a run take seconds: a
 * header that claims 50 million pixels is refused at 1 million here, by the same check.
 * The contract checked: a refusal has a message (and no summary), and no PNG is refused for
 * decoding to something other than 8-bit gray or RGB (see fuzz_image.c).
 */
#include "io/imagefolder.h"
#include "tests/fuzz/fuzz.h"

static void fuzz_limits(imgf_limits *lim) {
    imgf_limits_default(lim);
    lim->max_images = 64;
    lim->max_pixels = 1 << 20;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64], err[1024] = "";
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    imgf_limits lim;
    fuzz_limits(&lim);
    json_t *summary = NULL;
    if (imgf_inspect(path, &lim, &summary, err, sizeof err) == 0) {
        if (!summary) abort();
        char *s = json_dumps(summary, JSON_COMPACT);
        free(s);
        json_decref(summary);
        /* The channel count and the held-out fraction vary with the input, so both decode
         * paths (gray, RGB) and both splits (val/ given, held out) are reached. */
        int channels = size & 1 ? 1 : 3;
        double val_fraction = size & 2 ? 0.25 : 0.0;
        ds_set train, val;
        err[0] = '\0';
        if (imgf_load(path, &lim, channels, 8, val_fraction, 7, &train, &val, err, sizeof err) ==
            0) {
            fuzz_say("loaded", "");
            ds_free(&train);
            ds_free(&val);
        } else {
            fuzz_check_err(err, sizeof err);
            fuzz_say("load refused", err);
            /* Every PNG decodes to gray or RGB (alpha and tRNS dropped, imagefolder.h): the
             * reader's check for anything else is a guard that no input should reach. */
            if (strstr(err, "does not decode to 8-bit gray or RGB")) abort();
        }
    } else {
        if (summary) abort();
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
    }
    close(fd);
    return 0;
}
