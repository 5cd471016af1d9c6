/*
 * swin.c: see swin.h. Tensor names say where they are ("b3.fc1.out", blocks numbered over the
 * whole model as gplq's quantizers are; weights under timm's names in model.q.safetensors).
 *
 * The constants that encode the window layout (the partition index, the relative position
 * bias, the shift mask) are computed by the engine's own functions (engine/swin_ops.h), so
 * the graph cannot disagree with swin_forward_infer about where a token goes.
 */
#include "onnx/swin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/swin_ops.h"
#include "onnx/nn.h"

typedef struct {
    onnx_nn nn; /* the graph, the quantized model's parts, the error */
    const swin_model *m;
} ctx;

static void oom(ctx *c) {
    if (!c->nn.failed) snprintf(c->nn.err, c->nn.errlen, "out of memory");
    c->nn.failed = 1;
}

/* The first block of stage s. */
static int stage_first(const swin_config *cf, int s) {
    int n = 0;
    for (int i = 0; i < s; i++) n += cf->depths[i];
    return n;
}

/*
 * x (N, R*R, C) raster -> windows (N, nW * w*w, C) (roll by -shift, then window_partition), or
 * back (inverse = 1: window_reverse, then roll by +shift): one Gather along the token axis with
 * the permutation swin_window_partition_forward applies, read off by running it on the token
 * numbers. The identity (one window, no shift) adds nothing.
 */
static const char *windows(ctx *c, const char *x, const char *tag, int R, int w, int shift,
                           int inverse) {
    onnx_graph *g = c->nn.g;
    int T = R * R;
    if (w == R && !shift) return x;
    float *num = calloc(T, sizeof(float)), *perm = calloc(T, sizeof(float));
    int64_t *idx = malloc(sizeof(int64_t) * T);
    if (!num || !perm || !idx) {
        free(num), free(perm), free(idx);
        oom(c);
        return x;
    }
    for (int t = 0; t < T; t++) num[t] = (float)t; /* exact: T < 2^24 */
    swin_window_partition_forward(perm, num, 1, R, 1, w, shift);
    /* perm[i]: the raster token at window position i; the inverse sends it back */
    for (int i = 0; i < T; i++) {
        int src = (int)perm[i];
        if (inverse) idx[src] = i;
        else idx[i] = src;
    }
    int64_t dt = T;
    const char *in = onnx_name(g, "%s.index", tag);
    onnx_init_i64(g, in, 1, &dt, idx);
    free(num), free(perm), free(idx);
    const char *args[2] = {x, in}, *y = onnx_name(g, "%s.out", tag);
    int n = onnx_node(g, "Gather", NULL, 2, args, 1, &y);
    onnx_attr_int(g, n, "axis", 1);
    return y;
}

/* x (N, T, C) windowed, of one of q, k, v, to (N, nW, NH, w*w, hd), or k to (N, nW, NH, hd,
 * w*w); shape the (0, nW, w*w, NH, hd) initializer. */
static const char *heads(ctx *c, const char *x, const char *tag, const char *shape,
                         int transpose_k) {
    onnx_graph *g = c->nn.g;
    const char *r = onnx_op2(g, "Reshape", onnx_name(g, "%s.heads", tag), x, shape);
    const char *y = onnx_name(g, "%s.bwhnd", tag);
    int nt = onnx_node(g, "Transpose", NULL, 1, &r, 1, &y);
    int64_t perm_q[5] = {0, 1, 3, 2, 4}, perm_k[5] = {0, 1, 3, 4, 2};
    onnx_attr_ints(g, nt, "perm", 5, transpose_k ? perm_k : perm_q);
    return y;
}

/* The attention's additive constants of block l: the relative position bias (NH, N, N) of its
 * table, and for a shifted block the mask (nW, 1, N, N) that broadcasts over the heads. The
 * engine adds both in one pass (swin_attention_softmax_forward adds bias + mask); the two Adds
 * here differ from that only on masked entries, which the softmax sends to 0 either way. */
static void attn_consts(ctx *c, int l, const float *table, int R, int w, int NH, int shift,
                        const char **bias, const char **mask) {
    onnx_graph *g = c->nn.g;
    int N = w * w, nW = (R / w) * (R / w);
    int *idx = malloc(sizeof(int) * N * N);
    float *b = malloc(sizeof(float) * NH * N * N);
    float *mk = shift ? malloc(sizeof(float) * nW * N * N) : NULL;
    *bias = onnx_name(g, "b%d.attn.relpos_bias", l);
    *mask = shift ? onnx_name(g, "b%d.attn.shift_mask", l) : NULL;
    if (!idx || !b || (shift && !mk)) {
        free(idx), free(b), free(mk);
        oom(c);
        return;
    }
    swin_relpos_index(idx, w);
    swin_relpos_bias_forward(b, table, idx, N, NH);
    int64_t db[3] = {NH, N, N};
    onnx_init_f32(g, *bias, 3, db, b);
    if (shift) {
        swin_shift_mask(mk, R, w, shift);
        int64_t dm[4] = {nW, 1, N, N};
        onnx_init_f32(g, *mask, 4, dm, mk);
    }
    free(idx), free(b), free(mk);
}

static const char *embed(ctx *c, const char *pix) {
    const swin_config *cf = &c->m->cfg;
    const swin_params *p = &c->m->params;
    const char *x = onnx_nn_qdq(&c->nn, pix, "patch_in", -1, QP_PATCH_IN);
    x = onnx_nn_patch_embed(&c->nn, x, p->patch_w, p->patch_b, cf->embed_dim, cf->in_chans,
                            cf->patch);
    return onnx_nn_layernorm(&c->nn, x, "patch_embed.norm", p->patch_norm_w, p->patch_norm_b,
                             cf->embed_dim);
}

/* Stage s's PatchMerging of x (N, Rp*Rp, Cp): the 2x2 neighbourhood of token (i, j) is
 * x[(2i + dy) Rp + 2j + dx]; viewed as (N, i, dy, j, dx, Cp) and transposed to (N, i, j, dx,
 * dy, Cp), its 4Cp row is timm's x(0,0), x(1,0), x(0,1), x(1,1) (row offset dy first in each
 * name), the order swin_merge_gather_forward writes. */
static const char *merge(ctx *c, const char *x, int s) {
    onnx_graph *g = c->nn.g;
    const swin_config *cf = &c->m->cfg;
    const swin_stage_params *st = &c->m->params.stage[s];
    int Rp = swin_stage_res(cf, s - 1), Cp = swin_stage_dim(cf, s - 1), R = Rp / 2;
    int C = swin_stage_dim(cf, s);
    char t[64];
    /* node inputs are borrowed: names made by onnx_name live as long as the graph */
    const char *sh6 = onnx_name(g, "layers.%d.merge.shape_2x2", s);
    const char *sh3 = onnx_name(g, "layers.%d.merge.shape_tokens", s);
    onnx_init_ints(g, sh6, 6, (int64_t)0, (int64_t)R, (int64_t)2, (int64_t)R, (int64_t)2,
                   (int64_t)Cp);
    onnx_init_ints(g, sh3, 3, (int64_t)0, (int64_t)R * R, (int64_t)4 * Cp);
    const char *v = onnx_op2(g, "Reshape", onnx_name(g, "layers.%d.merge.2x2", s), x, sh6);
    const char *tr = onnx_name(g, "layers.%d.merge.ijxy", s);
    int nt = onnx_node(g, "Transpose", NULL, 1, &v, 1, &tr);
    onnx_attr_ints(g, nt, "perm", 6, (int64_t[]){0, 1, 3, 4, 2, 5});
    const char *cat = onnx_op2(g, "Reshape", onnx_name(g, "layers.%d.merge.cat", s), tr, sh3);
    snprintf(t, sizeof t, "layers.%d.downsample.norm", s);
    const char *h = onnx_nn_layernorm(&c->nn, cat, t, st->merge_norm_w, st->merge_norm_b, 4 * Cp);
    snprintf(t, sizeof t, "layers.%d.merge_in", s);
    h = onnx_nn_qdq(&c->nn, h, t, s, QP_MERGE_IN);
    char wn[80];
    snprintf(wn, sizeof wn, "layers.%d.downsample.reduction.weight", s);
    snprintf(t, sizeof t, "layers.%d.downsample.reduction", s);
    return onnx_nn_linear(&c->nn, h, t, wn, st->merge_w, NULL, C, 4 * Cp);
}

static const char *block(ctx *c, const char *x, int l) {
    onnx_graph *g = c->nn.g;
    const swin_config *cf = &c->m->cfg;
    int s = swin_block_stage(cf, l), j = l - stage_first(cf, s);
    const swin_stage_params *st = &c->m->params.stage[s];
    int C = swin_stage_dim(cf, s), H = cf->mlp_ratio * C, NH = cf->heads[s], hd = C / NH;
    int R = swin_stage_res(cf, s), w = swin_stage_window(cf, s), N = w * w;
    int nW = (R / w) * (R / w), T = R * R, shift = swin_block_shift(cf, l);
    size_t nb = (size_t)(2 * w - 1) * (2 * w - 1) * NH;
    char t[64], wn[96];
#define TAG(x_) (snprintf(t, sizeof t, "b%d.%s", l, x_), t)
#define WN(x_) (snprintf(wn, sizeof wn, "layers.%d.blocks.%d.%s.weight", s, j, x_), wn)
    const char *h = onnx_nn_layernorm(&c->nn, x, TAG("norm1"), st->ln1_w + (size_t)j * C,
                                      st->ln1_b + (size_t)j * C, C);
    h = windows(c, h, TAG("partition"), R, w, shift, 0);
    h = onnx_nn_qdq(&c->nn, h, TAG("qkv_in"), l, QP_QKV_IN);
    const char *qkv = onnx_nn_linear(&c->nn, h, TAG("qkv"), WN("attn.qkv"),
                                     st->qkv_w + (size_t)j * 3 * C * C,
                                     st->qkv_b + (size_t)j * 3 * C, 3 * C, C);
    const char *qkvs[3];
    onnx_nn_qkv_split(&c->nn, qkv, l, qkvs);
    const char *shh = onnx_name(g, "b%d.shape.heads", l);
    const char *sht = onnx_name(g, "b%d.shape.tokens", l);
    onnx_init_ints(g, shh, 5, (int64_t)0, (int64_t)nW, (int64_t)N, (int64_t)NH, (int64_t)hd);
    onnx_init_ints(g, sht, 3, (int64_t)0, (int64_t)T, (int64_t)C);
    const char *q5 = heads(c, qkvs[0], TAG("q"), shh, 0);
    const char *k5 = heads(c, qkvs[1], TAG("k"), shh, 1);
    const char *v5 = heads(c, qkvs[2], TAG("v"), shh, 0);
    /* swin_attention_softmax_forward scales q k^T by 1 / sqrtf(hd) in float (not named
     * b<l>.attn.scale: that is the softmax quantizer's step) */
    const char *sc = onnx_name(g, "b%d.attn.qk_scale", l);
    onnx_init_scalar_f32(g, sc, 0, 1.0f / sqrtf((float)hd));
    const char *bias, *mask;
    attn_consts(c, l, st->bias_table + (size_t)j * nb, R, w, NH, shift, &bias, &mask);
    const char *sco = onnx_op2(g, "MatMul", onnx_name(g, "b%d.attn.dot", l), q5, k5);
    sco = onnx_op2(g, "Mul", onnx_name(g, "b%d.attn.scaled", l), sco, sc);
    sco = onnx_op2(g, "Add", onnx_name(g, "b%d.attn.biased", l), sco, bias);
    if (mask) sco = onnx_op2(g, "Add", onnx_name(g, "b%d.attn.masked", l), sco, mask);
    const char *a = onnx_name(g, "b%d.attn.softmax", l);
    int nsm = onnx_node(g, "Softmax", NULL, 1, &sco, 1, &a);
    onnx_attr_int(g, nsm, "axis", -1);
    a = onnx_nn_qdq(&c->nn, a, TAG("attn"), l, QP_ATTN);
    const char *o = onnx_op2(g, "MatMul", onnx_name(g, "b%d.attn.bwhnd", l), a, v5);
    const char *ot = onnx_name(g, "b%d.attn.bwnhd", l);
    int nt = onnx_node(g, "Transpose", NULL, 1, &o, 1, &ot);
    onnx_attr_ints(g, nt, "perm", 5, (int64_t[]){0, 1, 3, 2, 4});
    o = onnx_op2(g, "Reshape", onnx_name(g, "b%d.attn.out", l), ot, sht);
    o = onnx_nn_qdq(&c->nn, o, TAG("proj_in"), l, QP_PROJ_IN);
    o = onnx_nn_linear(&c->nn, o, TAG("proj"), WN("attn.proj"), st->proj_w + (size_t)j * C * C,
                       st->proj_b + (size_t)j * C, C, C);
    o = windows(c, o, TAG("reverse"), R, w, shift, 1);
    const char *r1 = onnx_op2(g, "Add", onnx_name(g, "b%d.res1", l), o, x);
#undef TAG
#undef WN
    onnx_nn_mlp_weights mw = {st->ln2_w + (size_t)j * C, st->ln2_b + (size_t)j * C,
                              st->fc1_w + (size_t)j * H * C, st->fc1_b + (size_t)j * H,
                              st->fc2_w + (size_t)j * C * H, st->fc2_b + (size_t)j * C,
                              c->m->qwt_w ? c->m->qwt_w[l] : NULL,
                              c->m->qwt_b ? c->m->qwt_b[l] : NULL};
    snprintf(wn, sizeof wn, "layers.%d.blocks.%d", s, j);
    return onnx_nn_mlp_half(&c->nn, x, r1, l, wn, &mw, C, H);
}

static void head(ctx *c, const char *x) {
    onnx_graph *g = c->nn.g;
    const swin_config *cf = &c->m->cfg;
    const swin_params *p = &c->m->params;
    int C = swin_stage_dim(cf, cf->stages - 1), K = cf->num_classes;
    const char *h = onnx_nn_layernorm(&c->nn, x, "norm", p->norm_w, p->norm_b, C);
    /* the mean over tokens: (N, T, C) -> (N, C) (opset 18+: the axes are an input) */
    onnx_init_ints(g, "pool.axes", 1, (int64_t)1);
    const char *in[2] = {h, "pool.axes"}, *pool = "pool.out";
    int nr = onnx_node(g, "ReduceMean", NULL, 2, in, 1, &pool);
    onnx_attr_int(g, nr, "keepdims", 0);
    h = onnx_nn_qdq(&c->nn, pool, "head_in", -1, QP_HEAD_IN);
    h = onnx_nn_linear(&c->nn, h, "head", "head.fc.weight", p->head_w, p->head_b, K, C);
    onnx_op1(g, "Identity", "logits", h);
}

int onnx_swin_build(onnx_graph *g, const swin_model *m, actq_set *aq, const onnx_qweights *qw,
                    onnx_kind kind, const onnx_opts *opts, char *err, size_t errlen) {
    ctx c = {.m = m};
    if (onnx_nn_begin(&c.nn, g, aq, qw, kind, opts, m->cfg.ln_eps, err, errlen)) return -1;
    const swin_config *cf = &m->cfg;
    int64_t in_dims[4] = {-1, cf->in_chans, cf->img_size, cf->img_size};
    int64_t out_dims[2] = {-1, cf->num_classes};
    onnx_graph_input(g, "pixel_values", 4, in_dims, "batch");
    onnx_graph_output(g, "logits", 2, out_dims, "batch");
    const char *x = embed(&c, "pixel_values");
    for (int s = 0, l = 0; s < cf->stages && !c.nn.failed; s++) {
        if (s > 0) x = merge(&c, x, s);
        for (int j = 0; j < cf->depths[s] && !c.nn.failed; j++, l++) x = block(&c, x, l);
    }
    if (!c.nn.failed) head(&c, x);
    return onnx_nn_end(&c.nn);
}
