/*
 * qweights.c: see qweights.h.
 */
#include "onnx/qweights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gplq/quant.h"

static int meta_bits(const st_file *f, const char *key, int dflt) {
    const char *v = st_meta(f, key);
    return v ? atoi(v) : dflt;
}

int onnx_qweights_open(onnx_qweights *qw, const st_file *f, const char *path, char *err,
                       size_t errlen) {
    qw->f = f;
    qw->path = path;
    qw->wbits = meta_bits(f, "wbits", 0);
    qw->patch_wbits = meta_bits(f, "patch_wbits", qw->wbits);
    if (qw->wbits < QUANT_BITS_MIN || qw->wbits > QUANT_BITS_MAX ||
        qw->patch_wbits < QUANT_BITS_MIN || qw->patch_wbits > QUANT_BITS_MAX) {
        snprintf(err, errlen, "%s: metadata wbits/patch_wbits missing or not in %d..%d", path,
                 QUANT_BITS_MIN, QUANT_BITS_MAX);
        return -1;
    }
    return 0;
}

int onnx_qweights_get(const onnx_qweights *qw, const char *name, int rows, int cols,
                      int8_t *codes, float *steps, int *bits, char *err, size_t errlen) {
    char qn[160], sn[160];
    snprintf(qn, sizeof qn, "%s.qweight", name);
    snprintf(sn, sizeof sn, "%s.wscale", name);
    const st_tensor *tq = st_find(qw->f, qn), *ts = st_find(qw->f, sn);
    int b = !strcmp(name, "patch_embed.proj.weight") ? qw->patch_wbits : qw->wbits;
    quant_type t = quant_type_for_bits(b);
    size_t rb = quant_row_bytes(t, cols);
    if (!tq || !ts || tq->dtype != ST_U8 || ts->dtype != ST_F32 || tq->ndim != 2 ||
        tq->shape[0] != rows || (size_t)tq->shape[1] != rb || ts->numel != rows) {
        snprintf(err, errlen, "%s: '%s' is missing, or its packed form does not match %d x %d "
                 "at %d bits", qw->path, name, rows, cols, b);
        return -1;
    }
    for (int r = 0; r < rows; r++)
        quant_unpack_ref(t, codes + (size_t)r * cols, (const uint8_t *)tq->data + rb * r, cols);
    st_to_f32(ts, steps);
    *bits = b;
    return 0;
}
