/*
 * fuzz_image.c: libFuzzer harness of the JPEG and PNG decoding in the image-folder reader
 * (io/imagefolder.h), which has no entry point of its own: the input is one image file, which
 * the harness wraps into a tar as train/a/0.png (the name does not matter: the reader goes by
 * the magic bytes) next to a fixed valid image in train/b/, written to a memfd (fuzz.h). A
 * mutation then changes the image, never the tar around it, which fuzz_imagefolder covers.
 *
 * imgf_inspect reads the image's header; when it accepts, imgf_load decodes the whole image
 * and resizes it, to gray or RGB by the input's size, as a job does. The contract checked: a
 * refusal has a message, and no PNG is refused for decoding to something other than 8-bit gray
 * or RGB (imagefolder.h: palettes and low depths are expanded, alpha and tRNS dropped).
 */
#include "io/imagefolder.h"
#include "tests/fuzz/fuzz.h"

/* A 1x1 gray PNG: the second class, so that the archive is valid whenever the image is. */
static const uint8_t png_1x1[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
    0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3a,
    0x7e, 0x9b, 0x55, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x60,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0xe5, 0x27, 0xde, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x49,
    0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

/* Appends one ustar member (a regular file) to out at *len: a 512-byte header, the data, zero
 * padding to a multiple of 512. */
static void tar_member(uint8_t *out, size_t *len, const char *name, const uint8_t *data,
                       size_t size) {
    uint8_t *h = out + *len;
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);                       /* mode */
    memcpy(h + 108, "0000000", 8);                       /* uid */
    memcpy(h + 116, "0000000", 8);                       /* gid */
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
    memcpy(h + 136, "00000000000", 12);                  /* mtime */
    h[156] = '0';                                        /* a regular file */
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);                             /* the checksum counts as spaces */
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    *len += 512;
    memcpy(out + *len, data, size);
    *len += (size + 511) / 512 * 512;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 20) return 0;
    size_t cap = 512 * 4 + (size + 511) / 512 * 512 + 512 + 1024, len = 0;
    uint8_t *tar = calloc(1, cap);
    if (!tar) return 0;
    tar_member(tar, &len, "train/a/0.png", data, size);
    tar_member(tar, &len, "train/b/0.png", png_1x1, sizeof png_1x1);
    len += 1024; /* two zero blocks end the archive */
    char path[64], err[1024] = "";
    int fd = fuzz_memfd(tar, len, path, sizeof path);
    free(tar);
    if (fd < 0) return 0;
    imgf_limits lim;
    imgf_limits_default(&lim);
    lim.max_pixels = 1 << 20; /* as fuzz_imagefolder: one input must not take seconds */
    json_t *summary = NULL;
    if (imgf_inspect(path, &lim, &summary, err, sizeof err) == 0) {
        json_decref(summary);
        ds_set train, val;
        err[0] = '\0';
        if (imgf_load(path, &lim, size & 1 ? 1 : 3, 8, 0.0, 1, &train, &val, err, sizeof err) ==
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
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
    }
    close(fd);
    return 0;
}
