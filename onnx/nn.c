/*
 * nn.c: see nn.h.
 */
#include "onnx/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gplq/quant.h"
#include "util/half.h"

int onnx_nn_begin(onnx_nn *c, onnx_graph *g, actq_set *aq, const onnx_qweights *qw,
                  onnx_kind kind, const onnx_opts *opts, float ln_eps, char *err, size_t errlen) {
    *c = (onnx_nn){.g = g, .aq = aq, .qw = qw, .kind = kind, .ln_eps = ln_eps, .err = err,
                   .errlen = errlen};
    c->o = opts ? *opts : (onnx_opts){0};
    if (c->o.w4_block && (c->o.w4_block < 16 || (c->o.w4_block & (c->o.w4_block - 1)))) {
        snprintf(err, errlen, "MatMulNBits block size %d is not a power of two >= 16", c->o.w4_block);
        return -1;
    }
    if ((kind == ONNX_KIND_QDQ && (!aq || !qw)) || (kind == ONNX_KIND_W4 && !qw)) {
        snprintf(err, errlen, "a quantized ONNX model needs the quantized model's codes and steps");
        return -1;
    }
    return 0;
}

int onnx_nn_end(onnx_nn *c) {
    if (c->failed) return -1;
    if (onnx_graph_error(c->g)) {
        snprintf(c->err, c->errlen, "%s", onnx_graph_error(c->g));
        return -1;
    }
    return 0;
}

/* ---- activation quantizers ---- */

/* ONNX's element type for codes of `bits` (2..8): INT4/UINT4 up to 4 bits, INT8/UINT8 above. */
static onnx_dtype code_type(int bits, int is_signed) {
    if (bits <= 4) return is_signed ? ONNX_INT4 : ONNX_UINT4;
    return is_signed ? ONNX_INT8 : ONNX_UINT8;
}

/*
 * x through QuantizeLinear / DequantizeLinear with scales steps (n of them: n = 1 per tensor,
 * else per axis along the last dim) and zero points 0 of the code type. The result is gplq's
 * lsq_forward: both compute q = clamp(round_half_even(x / s), Qn, Qp) (ONNX's saturate after
 * rounding equals gplq's clamp before it, the bounds being integers) and q * s. ONNX saturates
 * to the type's range, which is gplq's [Qn, Qp] at 4 and 8 bits; at other widths the tighter
 * range comes first as Min(x, Qp s) and Max(., Qn s), whose bounds divide back to Qp and Qn
 * within rounding.
 */
const char *onnx_nn_qdq_steps(onnx_nn *c, const char *x, const char *tag, const float *steps,
                              int n, int bits, int is_signed) {
    onnx_graph *g = c->g;
    onnx_dtype t = code_type(bits, is_signed);
    int64_t dn = n;
    int nd = n > 1; /* per tensor: scalar scale and zero point */
    const char *sc = onnx_name(g, "%s.scale", tag), *zp = onnx_name(g, "%s.zero", tag);
    onnx_init_f32(g, sc, nd, &dn, steps);
    size_t zbytes = t == ONNX_INT4 || t == ONNX_UINT4 ? ((size_t)n + 1) / 2 : (size_t)n;
    uint8_t *z = calloc(zbytes, 1);
    onnx_init_raw(g, zp, t, nd, &dn, z, z ? zbytes : 0);
    free(z);
    int qn = quant_qn(bits, is_signed), qp = quant_qp(bits, is_signed);
    if (bits != 4 && bits != 8) {
        float *lo = malloc(sizeof(float) * n), *hi = malloc(sizeof(float) * n);
        for (int i = 0; lo && hi && i < n; i++) lo[i] = qn * steps[i], hi[i] = qp * steps[i];
        const char *ln = onnx_name(g, "%s.lo", tag), *hn = onnx_name(g, "%s.hi", tag);
        if (lo && hi) {
            onnx_init_f32(g, ln, nd, &dn, lo);
            onnx_init_f32(g, hn, nd, &dn, hi);
        }
        free(lo);
        free(hi);
        x = onnx_op2(g, "Min", onnx_name(g, "%s.min", tag), x, hn);
        x = onnx_op2(g, "Max", onnx_name(g, "%s.clip", tag), x, ln);
    }
    const char *in[3] = {x, sc, zp}, *q = onnx_name(g, "%s.q", tag), *y = onnx_name(g, "%s.dq", tag);
    int nq = onnx_node(g, "QuantizeLinear", NULL, 3, in, 1, &q);
    in[0] = q;
    int nd2 = onnx_node(g, "DequantizeLinear", NULL, 3, in, 1, &y);
    if (nd) {
        onnx_attr_int(g, nq, "axis", -1);
        onnx_attr_int(g, nd2, "axis", -1);
    }
    return y;
}

/* x through gplq's quantizer at (layer, p), in the QDQ model; x itself otherwise. */
const char *onnx_nn_qdq(onnx_nn *c, const char *x, const char *tag, int layer, qpoint p) {
    if (c->kind != ONNX_KIND_QDQ) return x;
    const lsq_quantizer *q = actq_get(c->aq, layer, p);
    return onnx_nn_qdq_steps(c, x, tag, q->step, q->channels, q->bits, q->is_signed);
}

/* ---- weights ---- */

/* Codes and steps of the quantized matrix name (rows, cols); NULL (message set) on failure. */
static int8_t *get_codes(onnx_nn *c, const char *name, int rows, int cols, float **steps, int *bits) {
    int8_t *codes = malloc((size_t)rows * cols);
    *steps = malloc(sizeof(float) * rows);
    if (!codes || !*steps) {
        snprintf(c->err, c->errlen, "out of memory");
    } else if (!onnx_qweights_get(c->qw, name, rows, cols, codes, *steps, bits, c->err, c->errlen)) {
        return codes;
    }
    c->failed = 1;
    free(codes);
    free(*steps);
    *steps = NULL;
    return NULL;
}

/* An integer initializer of codes (shape ndim/dims, elements in order) as INT4 (bits <= 4) or
 * INT8. */
static void init_codes(onnx_nn *c, const char *name, int ndim, const int64_t *dims, const int8_t *codes,
                       size_t n, int bits) {
    if (bits > 4) {
        onnx_init_raw(c->g, name, ONNX_INT8, ndim, dims, codes, n);
        return;
    }
    uint8_t *p = malloc((n + 1) / 2);
    if (!p) {
        snprintf(c->err, c->errlen, "out of memory");
        c->failed = 1;
        return;
    }
    onnx_pack_int4(p, codes, n);
    onnx_init_raw(c->g, name, ONNX_INT4, ndim, dims, p, (n + 1) / 2);
    free(p);
}

/*
 * The MatMulNBits form of codes (N = rows, K = cols) with one step per row, as ORT's
 * MatMul4BitsQuantizer writes a symmetric 4-bit weight: B (N, k_blocks, block / 2) uint8, each
 * block's values code + 8 (the zero point the op assumes when none is given) two per byte, the
 * first of a pair in the low nibble; K padded to whole blocks with 8 (a weight of 0); scales
 * (N * k_blocks), here the row's step repeated, since gplq's steps are per output channel.
 */
static const char *matmul_nbits(onnx_nn *c, const char *x, const char *tag, const int8_t *codes,
                                const float *steps, int rows, int cols) {
    int bs = c->o.w4_block;
    if (!bs) /* ORT's default 128, or the largest smaller block that tiles K without padding */
        for (bs = ONNX_W4_BLOCK; bs > 16 && cols % bs; bs /= 2) {}
    if (cols % bs) bs = ONNX_W4_BLOCK;
    int kb = (cols + bs - 1) / bs, blob = bs / 2;
    uint8_t *b = malloc((size_t)rows * kb * blob);
    float *s = malloc(sizeof(float) * rows * kb);
    if (!b || !s) {
        free(b), free(s);
        snprintf(c->err, c->errlen, "out of memory");
        c->failed = 1;
        return x;
    }
    for (int n = 0; n < rows; n++) {
        for (int k = 0; k < kb * bs; k += 2) {
            int v0 = k < cols ? codes[(size_t)n * cols + k] + 8 : 8;
            int v1 = k + 1 < cols ? codes[(size_t)n * cols + k + 1] + 8 : 8;
            b[(size_t)n * kb * blob + k / 2] = (uint8_t)(v0 | v1 << 4);
        }
        for (int k = 0; k < kb; k++) s[(size_t)n * kb + k] = steps[n];
    }
    int64_t db[3] = {rows, kb, blob}, ds = (int64_t)rows * kb;
    const char *bn = onnx_name(c->g, "%s.weight.nbits", tag), *sn = onnx_name(c->g, "%s.weight.scales", tag);
    onnx_init_raw(c->g, bn, ONNX_UINT8, 3, db, b, (size_t)rows * kb * blob);
    onnx_init_f32(c->g, sn, 1, &ds, s);
    free(b);
    free(s);
    const char *in[3] = {x, bn, sn}, *y = onnx_name(c->g, "%s.mm", tag);
    int nd = onnx_node(c->g, "MatMulNBits", "com.microsoft", 3, in, 1, &y);
    onnx_attr_int(c->g, nd, "K", cols);
    onnx_attr_int(c->g, nd, "N", rows);
    onnx_attr_int(c->g, nd, "bits", 4);
    onnx_attr_int(c->g, nd, "block_size", bs);
    return y;
}

/*
 * y = x W^T + b for W (rows = out, cols = in), timm name wname; b (rows) or none. FP32: W^T a float
 * initializer. QDQ: gplq's codes of W transposed to (in, out), DequantizeLinear along axis 1
 * with the per-output-channel steps. W4: MatMulNBits (codes of up to 4 bits; wider ones take
 * the QDQ form).
 */
const char *onnx_nn_linear(onnx_nn *c, const char *x, const char *tag, const char *wname,
                           const float *w, const float *b, int rows, int cols) {
    onnx_graph *g = c->g;
    const char *wt = onnx_name(g, "%s.weight", tag), *mm;
    int64_t dims[2] = {cols, rows};
    if (c->kind == ONNX_KIND_FP32) {
        float *t = malloc(sizeof(float) * rows * cols);
        if (!t) {
            snprintf(c->err, c->errlen, "out of memory");
            c->failed = 1;
            return x;
        }
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) t[(size_t)k * rows + r] = w[(size_t)r * cols + k];
        onnx_init_f32(g, wt, 2, dims, t);
        free(t);
        mm = onnx_op2(g, "MatMul", onnx_name(g, "%s.mm", tag), x, wt);
    } else {
        float *steps;
        int bits;
        int8_t *codes = get_codes(c, wname, rows, cols, &steps, &bits);
        if (!codes) return x;
        if (c->kind == ONNX_KIND_W4 && bits <= 4) {
            mm = matmul_nbits(c, x, tag, codes, steps, rows, cols);
        } else {
            int8_t *t = malloc((size_t)rows * cols);
            if (!t) {
                free(codes), free(steps);
                snprintf(c->err, c->errlen, "out of memory");
                c->failed = 1;
                return x;
            }
            for (int r = 0; r < rows; r++)
                for (int k = 0; k < cols; k++) t[(size_t)k * rows + r] = codes[(size_t)r * cols + k];
            int64_t dr = rows;
            const char *sn = onnx_name(g, "%s.weight.scale", tag);
            init_codes(c, wt, 2, dims, t, (size_t)rows * cols, bits);
            onnx_init_f32(g, sn, 1, &dr, steps);
            free(t);
            const char *in[2] = {wt, sn}, *wd = onnx_name(g, "%s.weight.dq", tag);
            int nd = onnx_node(g, "DequantizeLinear", NULL, 2, in, 1, &wd);
            onnx_attr_int(g, nd, "axis", 1);
            mm = onnx_op2(g, "MatMul", onnx_name(g, "%s.mm", tag), x, wd);
        }
        free(codes);
        free(steps);
    }
    if (!b) return mm; /* a Swin's PatchMerging reduction has none */
    int64_t dr = rows;
    const char *bn = onnx_name(g, "%s.bias", tag);
    onnx_init_f32(g, bn, 1, &dr, b);
    return onnx_op2(g, "Add", onnx_name(g, "%s.out", tag), mm, bn);
}


/* ---- the other layers ---- */

const char *onnx_nn_layernorm(onnx_nn *c, const char *x, const char *tag, const float *w,
                              const float *b, int C) {
    onnx_graph *g = c->g;
    int64_t dc = C;
    const char *wn = onnx_name(g, "%s.weight", tag), *bn = onnx_name(g, "%s.bias", tag);
    onnx_init_f32(g, wn, 1, &dc, w);
    onnx_init_f32(g, bn, 1, &dc, b);
    const char *in[3] = {x, wn, bn}, *y = onnx_name(g, "%s.out", tag);
    int nd = onnx_node(g, "LayerNormalization", NULL, 3, in, 1, &y);
    onnx_attr_int(g, nd, "axis", -1);
    onnx_attr_float(g, nd, "epsilon", c->ln_eps);
    return y;
}

const char *onnx_nn_gelu(onnx_nn *c, const char *x, const char *out) {
    int n = onnx_node(c->g, "Gelu", NULL, 1, &x, 1, &out); /* opset 20+, exact (erf) form */
    onnx_attr_string(c->g, n, "approximate", "none");
    return out;
}

const char *onnx_nn_patch_embed(onnx_nn *c, const char *x, const float *w, const float *b,
                                int C, int in_chans, int P) {
    onnx_graph *g = c->g;
    /* patch_embed.proj as Conv: gplq's (C, Pd) rows are (C, Cin, P, P), the Conv weight */
    int64_t wd[4] = {C, in_chans, P, P}, dc = C;
    int Pd = in_chans * P * P;
    const char *wn = "patch_embed.proj.weight";
    if (c->kind == ONNX_KIND_FP32) {
        onnx_init_f32(g, wn, 4, wd, w);
    } else {
        float *steps;
        int bits;
        int8_t *codes = get_codes(c, wn, C, Pd, &steps, &bits);
        if (!codes) return x;
        init_codes(c, "patch_embed.proj.weight.q", 4, wd, codes, (size_t)C * Pd, bits);
        onnx_init_f32(g, "patch_embed.proj.weight.scale", 1, &dc, steps);
        free(codes);
        free(steps);
        const char *in[2] = {"patch_embed.proj.weight.q", "patch_embed.proj.weight.scale"};
        int nd = onnx_node(g, "DequantizeLinear", NULL, 2, in, 1, &wn);
        onnx_attr_int(g, nd, "axis", 0);
    }
    onnx_init_f32(g, "patch_embed.proj.bias", 1, &dc, b);
    const char *cin[3] = {x, wn, "patch_embed.proj.bias"}, *co = "patch_embed.out";
    int nc = onnx_node(g, "Conv", NULL, 3, cin, 1, &co);
    int64_t k2[2] = {P, P};
    onnx_attr_ints(g, nc, "kernel_shape", 2, k2);
    onnx_attr_ints(g, nc, "strides", 2, k2);
    /* (N, C, g, g) -> (N, np, C) */
    onnx_init_ints(g, "shape.n_c_np", 3, (int64_t)0, (int64_t)C, (int64_t)-1);
    const char *flat = onnx_op2(g, "Reshape", "patch_embed.flat", co, "shape.n_c_np");
    int nt = onnx_node(g, "Transpose", NULL, 1, &flat, 1, (const char *[]){"patch_embed.tokens"});
    onnx_attr_ints(g, nt, "perm", 3, (int64_t[]){0, 2, 1});
    return "patch_embed.tokens";
}

/* 1 if every one of the n values is a half: FP16 storage then loses nothing. */
static int all_half(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (half_round(v[i]) != v[i]) return 0;
    return 1;
}

const char *onnx_nn_qwt(onnx_nn *c, const char *x, const char *y, int l, const float *w,
                        const float *b, int C) {
    onnx_graph *g = c->g;
    float *tw = malloc(sizeof(float) * C * C);
    if (!tw) {
        snprintf(c->err, c->errlen, "out of memory");
        c->failed = 1;
        return y;
    }
    for (int i = 0; i < C; i++)
        for (int k = 0; k < C; k++) tw[(size_t)k * C + i] = w[(size_t)i * C + k];
    int64_t dw[2] = {C, C}, db = C;
    const char *wq = onnx_name(g, "blocks.%d.qwt.weight_t", l), *bq = onnx_name(g, "blocks.%d.qwt.bias", l);
    if (c->o.qwt_fp16 || (all_half(tw, (size_t)C * C) && all_half(b, C))) {
        /* stored in half precision, computed in float: the FP16 values are exact floats */
        const char *wh = onnx_name(g, "blocks.%d.qwt.weight_t.f16", l);
        const char *bh = onnx_name(g, "blocks.%d.qwt.bias.f16", l);
        onnx_init_f16(g, wh, 2, dw, tw);
        onnx_init_f16(g, bh, 1, &db, b);
        int n1 = onnx_node(g, "Cast", NULL, 1, &wh, 1, &wq);
        onnx_attr_int(g, n1, "to", ONNX_FLOAT);
        int n2 = onnx_node(g, "Cast", NULL, 1, &bh, 1, &bq);
        onnx_attr_int(g, n2, "to", ONNX_FLOAT);
    } else {
        onnx_init_f32(g, wq, 2, dw, tw);
        onnx_init_f32(g, bq, 1, &db, b);
    }
    free(tw);
    const char *mq = onnx_op2(g, "MatMul", onnx_name(g, "b%d.qwt.mm", l), x, wq);
    mq = onnx_op2(g, "Add", onnx_name(g, "b%d.qwt.out", l), mq, bq);
    return onnx_op2(g, "Add", onnx_name(g, "b%d.out", l), y, mq);
}

const char *onnx_nn_mlp_half(onnx_nn *c, const char *x, const char *r1, int l,
                             const char *wprefix, const onnx_nn_mlp_weights *p, int C, int H) {
    onnx_graph *g = c->g;
    char t[64], wn[160];
#define TAG(s) (snprintf(t, sizeof t, "b%d.%s", l, s), t)
#define WN(s) (snprintf(wn, sizeof wn, "%s.%s.weight", wprefix, s), wn)
    const char *h = onnx_nn_layernorm(c, r1, TAG("norm2"), p->ln2_w, p->ln2_b, C);
    h = onnx_nn_qdq(c, h, TAG("fc1_in"), l, QP_FC1_IN);
    h = onnx_nn_linear(c, h, TAG("fc1"), WN("mlp.fc1"), p->fc1_w, p->fc1_b, H, C);
    h = onnx_nn_gelu(c, h, onnx_name(g, "b%d.gelu", l));
    h = onnx_nn_qdq(c, h, TAG("fc2_in"), l, QP_FC2_IN);
    h = onnx_nn_linear(c, h, TAG("fc2"), WN("mlp.fc2"), p->fc2_w, p->fc2_b, C, H);
#undef TAG
#undef WN
    const char *r2 = onnx_op2(g, "Add", onnx_name(g, "b%d.res2", l), h, r1);
    if (p->qwt_w) /* added after the residual, as the engines do */
        r2 = onnx_nn_qwt(c, x, r2, l, p->qwt_w, p->qwt_b, C);
    return r2;
}

void onnx_nn_qkv_split(onnx_nn *c, const char *qkv, int l, const char *out[3]) {
    onnx_graph *g = c->g;
    out[0] = onnx_name(g, "b%d.q", l);
    out[1] = onnx_name(g, "b%d.k", l);
    out[2] = onnx_name(g, "b%d.v", l);
    int nsp = onnx_node(g, "Split", NULL, 1, &qkv, 3, out);
    onnx_attr_int(g, nsp, "axis", 2);
    onnx_attr_int(g, nsp, "num_outputs", 3);
    if (c->kind != ONNX_KIND_QDQ) return;
    const lsq_quantizer *q = actq_get(c->aq, l, QP_QKV_OUT); /* one step each for q, k, v */
    static const char *const part[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        char pt[64];
        snprintf(pt, sizeof pt, "b%d.qkv_out.%s", l, part[i]);
        out[i] = onnx_nn_qdq_steps(c, out[i], pt, &q->step[i], 1, q->bits, q->is_signed);
    }
}
