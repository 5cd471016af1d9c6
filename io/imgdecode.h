/*
 * imgdecode.h: JPEG (libjpeg-turbo) and PNG (libpng) decoding straight from an archive
 * member, for the image-folder walk. Members are never read whole into memory: the decoders
 * pull from archive_read_data, so checking an image's header reads only the header and a huge
 * member costs nothing until it is decoded. Which decoder runs is decided by the content's
 * magic bytes, whatever the member's name says.
 *
 * Decoding, as timm's loader (PIL's convert("RGB") or convert("L")) does it: PNG palettes and
 * gray below 8 bits are expanded, 16-bit samples keep their high byte, alpha (a channel or
 * tRNS) is dropped, not composited; RGB to gray is ITU-R 601 luma (0.299 R + 0.587 G +
 * 0.114 B, rounded), except that a JPEG decoded for 1 channel is libjpeg's own luma plane
 * (within 1 of it); gray to RGB replicates. CMYK JPEGs are refused. A JPEG or PNG cut short
 * inside its image data is refused, as PIL refuses it. Nothing is ever printed.
 */
#ifndef GPLQ_IMGDECODE_H
#define GPLQ_IMGDECODE_H

#include <stdint.h>

struct archive;

/* A decoder: the read buffer, the libjpeg state and the last decoded image, reused from one
 * member to the next. */
typedef struct imgdecode imgdecode;

/* Returns a new decoder (free with imgdecode_free), or NULL when out of memory. */
imgdecode *imgdecode_new(void);
void imgdecode_free(imgdecode *d);

/* Reads the member a (borrowed) is positioned on, after archive_read_next_header, as an image
 * and sets *width and *height. decode 0: the header only; 1: the whole image, converted to
 * channels (1 or 3), which imgdecode_pixels then gives. Refuses an image of more than
 * max_pixels pixels. Returns 0, or -1 with the reason in imgdecode_msg. */
int imgdecode_member(imgdecode *d, struct archive *a, int decode, int channels,
                     int64_t max_pixels, int *width, int *height);

/* The image the last successful imgdecode_member with decode 1 produced: (height, width,
 * channels) interleaved 8-bit. Borrowed: valid until the next imgdecode_member or
 * imgdecode_free. */
const uint8_t *imgdecode_pixels(const imgdecode *d);

/* Why the last imgdecode_member failed, e.g. "not a valid PNG: IHDR: CRC error", to be quoted
 * after the member's name. Borrowed, like imgdecode_pixels. It may hold bytes from the file
 * (libjpeg and libpng messages), so it goes through imgmsg_err before anyone sees it. */
const char *imgdecode_msg(const imgdecode *d);

#endif
