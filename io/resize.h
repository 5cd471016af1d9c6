/*
 * resize.h: timm's eval transform of one decoded 8-bit image (torchvision's Resize(int) of the
 * shorter side to size / 0.875 with PIL's antialiased BILINEAR, then CenterCrop(size)), as
 * imgf_load applies it to every image of an uploaded dataset. A fast version that computes
 * only the cropped pixels, and the slow, obviously right reference that defines it; the tests
 * compare the two.
 */
#ifndef GPLQ_RESIZE_H
#define GPLQ_RESIZE_H

#include <stdint.h>

/* The resized longer side above which the transform refuses an image: beyond it, the int
 * arithmetic of the geometry and the filters would overflow. */
#define RESIZE_MAX_LONG_SIDE (1 << 24)

/* The eval transform's geometry for a w x h image at crop size: the resized dimensions
 * (*rw, *rh: the shorter side becomes floor(size / 0.875) = size * 8 / 7, the longer one
 * floor(that * long / short), as torchvision's Resize(int)) and the crop's top-left corner in
 * the resized image (round((r - size) / 2) with ties to even, as torchvision's CenterCrop). */
void resize_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top);

/* The resized longer side as resize_eval_geometry computes it, in 64 bits (its int would
 * overflow on a very elongated image): the transforms refuse an image when this exceeds
 * RESIZE_MAX_LONG_SIDE. */
int64_t resize_long_side(int w, int h, int size);

/* The eval transform of one decoded image: src (h, w, c) interleaved 8-bit, c = 1 or 3 (the
 * model's channel count already), resized as resize_eval_geometry says with PIL's antialiased
 * BILINEAR (a triangle filter whose support grows with the shrink factor; 22-bit fixed point,
 * horizontal pass first, rounded to 8 bits between the passes, exactly as Pillow), computing
 * only the cropped pixels, into dst (c, size, size) planar. src and dst are the caller's.
 * Returns 0, or -1 when out of memory or when resize_long_side exceeds RESIZE_MAX_LONG_SIDE
 * (imgf_load refuses such an image, naming it). */
int resize_eval(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);

/* The same transform, slow and obviously right: the full resize as two dense weight matrices
 * in double precision with no rounding between passes, then the crop. It defines what
 * resize_eval computes; the two differ by at most 1 (resize_eval rounds between passes).
 * Returns 0, or -1 as resize_eval. */
int resize_eval_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst);

#endif
