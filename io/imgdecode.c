/*
 * imgdecode.c: JPEG and PNG decoding straight from an archive member (see imgdecode.h).
 */
#include "io/imgdecode.h"

#include <archive.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE */
#include <jerror.h>  /* WARNMS and the warning codes */
#include <png.h>     /* brings setjmp.h */

/* The source libjpeg and libpng pull from (the archive's current member), their error
 * state, and the decoded image. */
struct imgdecode {
    struct archive *a;
    uint8_t buf[1 << 16];
    size_t len, pos;        /* bytes in buf; next byte PNG has not consumed yet */
    int eof;
    int have_msg;           /* msg already says what went wrong (a read error) */
    char msg[JMSG_LENGTH_MAX + 256];
    jmp_buf jmp;            /* libjpeg's errors land here (libpng has its own jmp_buf) */
    struct jpeg_decompress_struct jd;
    struct jpeg_error_mgr jerr;
    struct jpeg_source_mgr jsrc;
    uint8_t **rows;         /* PNG row pointers during a decode */
    int decode;             /* this member: 0 the header only, 1 the whole image */
    int channels;           /* this member: what the image is converted to (1 or 3) */
    int64_t max_pixels;     /* this member: larger images are refused */
    uint8_t *native;        /* one decoded image (h, w, up to 3) */
    size_t native_cap;
};

/* Reads the next chunk of the member into buf. Returns 0 (eof set at the end) or -1. */
static int src_fill(imgdecode *s) {
    la_ssize_t n = archive_read_data(s->a, s->buf, sizeof s->buf);
    if (n < 0) {
        snprintf(s->msg, sizeof s->msg, "cannot read it from the archive: %s",
                 archive_error_string(s->a) ? archive_error_string(s->a) : "read error");
        s->have_msg = 1;
        return -1;
    }
    s->len = (size_t)n;
    s->pos = 0;
    s->eof = n == 0;
    return 0;
}

/* Starts a member: reads until the 8 bytes that identify a JPEG or PNG are in buf. */
static int src_begin(imgdecode *s) {
    s->len = s->pos = 0;
    s->eof = 0;
    s->have_msg = 0;
    s->msg[0] = 0;
    while (s->len < 8) {
        la_ssize_t n = archive_read_data(s->a, s->buf + s->len, sizeof s->buf - s->len);
        if (n < 0) {
            snprintf(s->msg, sizeof s->msg, "cannot read it from the archive: %s",
                     archive_error_string(s->a) ? archive_error_string(s->a) : "read error");
            return -1;
        }
        if (n == 0) {
            s->eof = 1;
            break;
        }
        s->len += (size_t)n;
    }
    return 0;
}

/* libjpeg: errors longjmp back with the library's message; nothing is ever printed. Warnings
 * (stray bytes, corrupt data) are tolerated as djpeg and PIL tolerate them, except image data
 * missing because the file ended (see jpeg_warn). */
static void jpeg_fail(j_common_ptr c) {
    imgdecode *s = c->client_data;
    if (!s->have_msg) {
        char m[JMSG_LENGTH_MAX];
        (*c->err->format_message)(c, m);
        snprintf(s->msg, sizeof s->msg, "not a valid JPEG: %s", m);
    }
    s->have_msg = 1;
    longjmp(s->jmp, 1);
}

static void jpeg_quiet(j_common_ptr c) { (void)c; }

/* libjpeg's emit_message. The decoder warns JWRN_HIT_MARKER when it needs entropy-coded bits
 * that are not there; after the end of the member that means the image was cut short, which
 * PIL (and so timm) refuses as "image file is truncated" instead of training on the gray
 * that libjpeg fills in. A file that lacks only its final EOI marker needs no more bits and
 * still decodes. */
static void jpeg_warn(j_common_ptr c, int level) {
    imgdecode *s = c->client_data;
    if (level >= 0) return; /* trace messages */
    c->err->num_warnings++;
    if (c->err->msg_code == JWRN_HIT_MARKER && s->eof) {
        snprintf(s->msg, sizeof s->msg, "not a valid JPEG: the file ends in the middle of the image");
        s->have_msg = 1;
        longjmp(s->jmp, 1);
    }
}

static void jsrc_init(j_decompress_ptr c) { (void)c; }

static boolean jsrc_fill(j_decompress_ptr c) {
    imgdecode *s = c->client_data;
    static const JOCTET eoi[2] = {0xFF, JPEG_EOI};
    if (src_fill(s)) longjmp(s->jmp, 1);
    if (s->eof) {
        /* A truncated file: end it here, as libjpeg's own sources do, with a warning. */
        c->src->next_input_byte = eoi;
        c->src->bytes_in_buffer = 2;
        WARNMS(c, JWRN_JPEG_EOF);
        return TRUE;
    }
    c->src->next_input_byte = s->buf;
    c->src->bytes_in_buffer = s->len;
    return TRUE;
}

static void jsrc_skip(j_decompress_ptr c, long n) {
    struct jpeg_source_mgr *src = c->src;
    if (n <= 0) return;
    while (n > (long)src->bytes_in_buffer) {
        n -= (long)src->bytes_in_buffer;
        jsrc_fill(c); /* at the end it supplies a 2-byte EOI, so this terminates */
    }
    src->next_input_byte += n;
    src->bytes_in_buffer -= (size_t)n;
}

static void jsrc_term(j_decompress_ptr c) { (void)c; }

static int ensure_native(imgdecode *s, int64_t width, int64_t height) {
    size_t need = (size_t)width * (size_t)height * 3;
    if (need <= s->native_cap) return 0;
    uint8_t *p = realloc(s->native, need);
    if (!p) return -1;
    s->native = p;
    s->native_cap = need;
    return 0;
}

static int check_pixels(imgdecode *s, int64_t width, int64_t height) {
    if (width * height <= s->max_pixels) return 0;
    snprintf(s->msg, sizeof s->msg, "%lldx%lld is %lld pixels, more than the limit of %lld",
             (long long)width, (long long)height, (long long)(width * height),
             (long long)s->max_pixels);
    return -1;
}

/* Decodes the JPEG whose first bytes are in s->buf: the header only, or (s->decode) the whole
 * image into s->native as (h, w, s->channels), which libjpeg converts to: its grayscale
 * output is the JPEG's luma plane, its RGB output replicates a grayscale JPEG. Returns 0 or -1
 * with s->msg. */
static int jpeg_run(imgdecode *s, int *width, int *height) {
    struct jpeg_decompress_struct *c = &s->jd;
    c->err = jpeg_std_error(&s->jerr);
    s->jerr.error_exit = jpeg_fail;
    s->jerr.output_message = jpeg_quiet;
    s->jerr.emit_message = jpeg_warn;
    c->client_data = s;
    if (setjmp(s->jmp)) {
        jpeg_destroy_decompress(c);
        return -1;
    }
    jpeg_create_decompress(c);
    c->client_data = s; /* jpeg_create_decompress clears the struct */
    s->jsrc.init_source = jsrc_init;
    s->jsrc.fill_input_buffer = jsrc_fill;
    s->jsrc.skip_input_data = jsrc_skip;
    s->jsrc.resync_to_restart = jpeg_resync_to_restart;
    s->jsrc.term_source = jsrc_term;
    s->jsrc.next_input_byte = s->buf;
    s->jsrc.bytes_in_buffer = s->len;
    c->src = &s->jsrc;
    jpeg_read_header(c, TRUE);
    switch (c->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        snprintf(s->msg, sizeof s->msg,
                 "a CMYK JPEG, which is not supported (save it as RGB or grayscale)");
        jpeg_destroy_decompress(c);
        return -1;
    default:
        snprintf(s->msg, sizeof s->msg, "a JPEG with %d color components, not gray or RGB",
                 c->num_components);
        jpeg_destroy_decompress(c);
        return -1;
    }
    *width = (int)c->image_width;
    *height = (int)c->image_height;
    if (check_pixels(s, c->image_width, c->image_height)) {
        jpeg_destroy_decompress(c);
        return -1;
    }
    if (!s->decode) {
        jpeg_destroy_decompress(c);
        return 0;
    }
    c->out_color_space = s->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(c);
    if ((int)c->output_components != s->channels) {
        snprintf(s->msg, sizeof s->msg, "libjpeg decodes it to %d channels, not %d",
                 c->output_components, s->channels);
        jpeg_destroy_decompress(c);
        return -1;
    }
    if (ensure_native(s, *width, *height)) {
        snprintf(s->msg, sizeof s->msg, "out of memory decoding it");
        jpeg_destroy_decompress(c);
        return -1;
    }
    size_t stride = (size_t)*width * (size_t)s->channels;
    while (c->output_scanline < c->output_height) {
        JSAMPROW row = s->native + (size_t)c->output_scanline * stride;
        jpeg_read_scanlines(c, &row, 1);
    }
    /* No jpeg_finish_decompress: whatever follows the last scanline does not matter. */
    jpeg_destroy_decompress(c);
    return 0;
}

static void png_fail(png_structp png, png_const_charp msg) {
    imgdecode *s = png_get_error_ptr(png);
    if (!s->have_msg) snprintf(s->msg, sizeof s->msg, "not a valid PNG: %s", msg);
    s->have_msg = 1;
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_src_read(png_structp png, png_bytep out, size_t n) {
    imgdecode *s = png_get_io_ptr(png);
    while (n) {
        if (s->pos == s->len) {
            if (src_fill(s)) png_error(png, "read error");
            if (s->eof) png_error(png, "the file ends in the middle of the image");
        }
        size_t k = s->len - s->pos < n ? s->len - s->pos : n;
        memcpy(out, s->buf + s->pos, k);
        s->pos += k;
        out += k;
        n -= k;
    }
}

/* Decodes the PNG whose first bytes are in s->buf: the header only, or the whole image into
 * s->native as 8-bit gray or RGB, *nc channels. Palettes and gray below 8 bits are expanded,
 * 16-bit samples keep their high byte, and alpha (an alpha channel or a tRNS chunk) is dropped,
 * not composited: this is what PIL's convert("RGB") does, which timm's loader calls. */
static int png_run(imgdecode *s, int *width, int *height, int *nc) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        snprintf(s->msg, sizeof s->msg, "out of memory decoding it");
        png_destroy_read_struct(&png, NULL, NULL);
        return -1;
    }
    s->rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(s->rows);
        s->rows = NULL;
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, s, png_src_read);
    png_read_info(png, info);
    png_uint_32 pw, ph;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
    *width = (int)pw;
    *height = (int)ph;
    if (check_pixels(s, pw, ph) || !s->decode) {
        int bad = s->msg[0] != 0; /* check_pixels explained itself */
        png_destroy_read_struct(&png, &info, NULL);
        return bad ? -1 : 0;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    /* the expansions above turn a tRNS chunk into an alpha channel: dropped like any alpha */
    if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    *nc = png_get_channels(png, info);
    if ((*nc != 1 && *nc != 3) || png_get_rowbytes(png, info) != (size_t)pw * (size_t)*nc) {
        snprintf(s->msg, sizeof s->msg, "a PNG that does not decode to 8-bit gray or RGB");
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (ensure_native(s, pw, ph) || !(s->rows = malloc(ph * sizeof *s->rows))) {
        snprintf(s->msg, sizeof s->msg, "out of memory decoding it");
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    for (png_uint_32 y = 0; y < ph; y++) s->rows[y] = s->native + (size_t)y * pw * (size_t)*nc;
    png_read_image(png, s->rows);
    /* No png_read_end: chunks after the image data do not matter. */
    free(s->rows);
    s->rows = NULL;
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

/* Converts n pixels in place from nc to want channels: gray to RGB by replication, RGB to gray
 * by ITU-R 601 luma in PIL's fixed point ((19595 R + 38470 G + 7471 B + 2^15) >> 16, i.e.
 * 0.299 R + 0.587 G + 0.114 B rounded). buf holds 3n bytes. */
static void convert_channels(uint8_t *buf, size_t n, int nc, int want) {
    if (nc == want) return;
    if (nc == 3) {
        for (size_t i = 0; i < n; i++) {
            const uint8_t *p = buf + 3 * i;
            buf[i] = (uint8_t)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 32768u) >> 16);
        }
    } else {
        /* backwards, so that no gray value is overwritten before it is copied */
        for (size_t i = n; i-- > 0;) buf[3 * i] = buf[3 * i + 1] = buf[3 * i + 2] = buf[i];
    }
}

imgdecode *imgdecode_new(void) { return calloc(1, sizeof(imgdecode)); }

void imgdecode_free(imgdecode *d) {
    if (!d) return;
    free(d->native);
    free(d);
}

int imgdecode_member(imgdecode *s, struct archive *a, int decode, int channels,
                     int64_t max_pixels, int *width, int *height) {
    s->a = a;
    s->decode = decode;
    s->channels = channels;
    s->max_pixels = max_pixels;
    *width = *height = 0;
    if (src_begin(s)) return -1;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    int nc = channels, rc;
    if (s->len >= 3 && s->buf[0] == 0xFF && s->buf[1] == 0xD8 && s->buf[2] == 0xFF) {
        rc = jpeg_run(s, width, height);
    } else if (s->len >= 8 && !memcmp(s->buf, png_sig, 8)) {
        rc = png_run(s, width, height, &nc);
    } else {
        snprintf(s->msg, sizeof s->msg, "%s", s->len ? "not a JPEG or PNG image (its first "
                 "bytes say otherwise)" : "an empty file, not an image");
        return -1;
    }
    if (rc || !decode) return rc;
    convert_channels(s->native, (size_t)*width * *height, nc, channels);
    return 0;
}

const uint8_t *imgdecode_pixels(const imgdecode *d) { return d->native; }

const char *imgdecode_msg(const imgdecode *d) { return d->msg; }
