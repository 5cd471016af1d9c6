/*
 * vit.c: see vit.h. Tensor names say where they are ("b3.fc1.out"), so the graph reads like
 * engine/vit.c in a viewer (Netron).
 */
#include "onnx/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/nn.h"

typedef struct {
    onnx_nn nn; /* the graph, the quantized model's parts, the error */
    const vit_model *m;
} ctx;

static const char *qdq(ctx *c, const char *x, const char *tag, int layer, qpoint p) {
    return onnx_nn_qdq(&c->nn, x, tag, layer, p);
}

static const char *linear(ctx *c, const char *x, const char *tag, const char *wname,
                          const float *w, const float *b, int rows, int cols) {
    return onnx_nn_linear(&c->nn, x, tag, wname, w, b, rows, cols);
}

static const char *layernorm(ctx *c, const char *x, const char *tag, const float *w, const float *b) {
    return onnx_nn_layernorm(&c->nn, x, tag, w, b, c->m->cfg.dim);
}

/* ---- the model ---- */

static const char *embed(ctx *c, const char *pix) {
    onnx_graph *g = c->nn.g;
    const vit_config *cf = &c->m->cfg;
    const vit_params *p = &c->m->params;
    int C = cf->dim, T = vit_num_tokens(cf);
    const char *x = qdq(c, pix, "patch_in", -1, QP_PATCH_IN);
    onnx_nn_patch_embed(&c->nn, x, p->patch_w, p->patch_b, C, cf->in_chans, cf->patch);
    /* class (and distillation) token broadcast over the batch: Expand to (N, 1, C) */
    const char *nb = "batch.n";
    int ns = onnx_node(g, "Shape", NULL, 1, &pix, 1, &nb);
    onnx_attr_int(g, ns, "start", 0);
    onnx_attr_int(g, ns, "end", 1);
    onnx_init_ints(g, "shape.1_c", 2, (int64_t)1, (int64_t)C);
    const char *cat_in[2] = {nb, "shape.1_c"}, *shp = "shape.n_1_c";
    int ncat = onnx_node(g, "Concat", NULL, 2, cat_in, 1, &shp);
    onnx_attr_int(g, ncat, "axis", 0);
    int64_t td[3] = {1, 1, C};
    const char *parts[3];
    int np = 0;
    onnx_init_f32(g, "cls_token", 3, td, p->cls_token);
    parts[np++] = onnx_op2(g, "Expand", "cls_token.batch", "cls_token", shp);
    if (cf->distilled) {
        onnx_init_f32(g, "dist_token", 3, td, p->dist_token);
        parts[np++] = onnx_op2(g, "Expand", "dist_token.batch", "dist_token", shp);
    }
    parts[np++] = "patch_embed.tokens";
    const char *tok = "embed.tokens";
    int nk = onnx_node(g, "Concat", NULL, np, parts, 1, &tok);
    onnx_attr_int(g, nk, "axis", 1);
    int64_t pd[3] = {1, T, C};
    onnx_init_f32(g, "pos_embed", 3, pd, p->pos_embed);
    return onnx_op2(g, "Add", "embed.out", tok, "pos_embed");
}

/* x (N, T, C) of one of q, k, v to (N, NH, T, hd), or k to (N, NH, hd, T) */
static const char *heads(ctx *c, const char *x, const char *tag, int transpose_k) {
    onnx_graph *g = c->nn.g;
    const char *r = onnx_op2(g, "Reshape", onnx_name(g, "%s.heads", tag), x, "shape.n_t_nh_hd");
    const char *y = onnx_name(g, "%s.bhtd", tag);
    int nt = onnx_node(g, "Transpose", NULL, 1, &r, 1, &y);
    int64_t perm_q[4] = {0, 2, 1, 3}, perm_k[4] = {0, 2, 3, 1};
    onnx_attr_ints(g, nt, "perm", 4, transpose_k ? perm_k : perm_q);
    return y;
}

static const char *block(ctx *c, const char *x, int l) {
    onnx_graph *g = c->nn.g;
    const vit_config *cf = &c->m->cfg;
    const vit_params *p = &c->m->params;
    int C = cf->dim, H = cf->mlp_hidden;
    char t[64], wn[96];
#define TAG(s) (snprintf(t, sizeof t, "b%d.%s", l, s), t)
#define WN(s) (snprintf(wn, sizeof wn, "blocks.%d.%s.weight", l, s), wn)
    const char *h = layernorm(c, x, TAG("norm1"), p->ln1_w + (size_t)l * C, p->ln1_b + (size_t)l * C);
    h = qdq(c, h, TAG("qkv_in"), l, QP_QKV_IN);
    const char *qkv = linear(c, h, TAG("qkv"), WN("attn.qkv"), p->qkv_w + (size_t)l * 3 * C * C,
                             p->qkv_b + (size_t)l * 3 * C, 3 * C, C);
    const char *qkvs[3];
    onnx_nn_qkv_split(&c->nn, qkv, l, qkvs);
    const char *q4 = heads(c, qkvs[0], TAG("q"), 0);
    const char *k4 = heads(c, qkvs[1], TAG("k"), 1);
    const char *v4 = heads(c, qkvs[2], TAG("v"), 0);
    const char *s = onnx_op2(g, "MatMul", onnx_name(g, "b%d.attn.dot", l), q4, k4);
    s = onnx_op2(g, "Mul", onnx_name(g, "b%d.attn.scaled", l), s, "attn.scale");
    const char *a = onnx_name(g, "b%d.attn.softmax", l);
    int nsm = onnx_node(g, "Softmax", NULL, 1, &s, 1, &a);
    onnx_attr_int(g, nsm, "axis", -1);
    a = qdq(c, a, TAG("attn"), l, QP_ATTN);
    const char *o = onnx_op2(g, "MatMul", onnx_name(g, "b%d.attn.bhtd", l), a, v4);
    const char *ot = onnx_name(g, "b%d.attn.bthd", l);
    int nt = onnx_node(g, "Transpose", NULL, 1, &o, 1, &ot);
    onnx_attr_ints(g, nt, "perm", 4, (int64_t[]){0, 2, 1, 3});
    o = onnx_op2(g, "Reshape", onnx_name(g, "b%d.attn.out", l), ot, "shape.n_t_c");
    o = qdq(c, o, TAG("proj_in"), l, QP_PROJ_IN);
    o = linear(c, o, TAG("proj"), WN("attn.proj"), p->proj_w + (size_t)l * C * C,
               p->proj_b + (size_t)l * C, C, C);
    const char *r1 = onnx_op2(g, "Add", onnx_name(g, "b%d.res1", l), o, x);
#undef TAG
#undef WN
    onnx_nn_mlp_weights mw = {p->ln2_w + (size_t)l * C, p->ln2_b + (size_t)l * C,
                              p->fc1_w + (size_t)l * H * C, p->fc1_b + (size_t)l * H,
                              p->fc2_w + (size_t)l * C * H, p->fc2_b + (size_t)l * C,
                              c->m->qwt_w ? c->m->qwt_w[l] : NULL,
                              c->m->qwt_b ? c->m->qwt_b[l] : NULL};
    snprintf(wn, sizeof wn, "blocks.%d", l);
    return onnx_nn_mlp_half(&c->nn, x, r1, l, wn, &mw, C, H);
}

static void head(ctx *c, const char *x) {
    onnx_graph *g = c->nn.g;
    const vit_config *cf = &c->m->cfg;
    const vit_params *p = &c->m->params;
    int C = cf->dim, K = cf->num_classes;
    const char *outs[2];
    for (int i = 0; i < 1 + cf->distilled; i++) {
        /* the prefix token i: (N, C) */
        const char *idx = onnx_name(g, "index.%d", i);
        int64_t v = i;
        onnx_init_i64(g, idx, 0, NULL, &v);
        const char *in[2] = {x, idx}, *tk = onnx_name(g, "head.token%d", i);
        int ng = onnx_node(g, "Gather", NULL, 2, in, 1, &tk);
        onnx_attr_int(g, ng, "axis", 1);
        const char *h = layernorm(c, tk, i ? "norm.dist" : "norm", p->norm_w, p->norm_b);
        h = qdq(c, h, i ? "head_in.dist" : "head_in", -1, QP_HEAD_IN);
        outs[i] = i ? linear(c, h, "head_dist", "head_dist.weight", p->headd_w, p->headd_b, K, C)
                    : linear(c, h, "head", "head.weight", p->head_w, p->head_b, K, C);
    }
    if (!cf->distilled) {
        onnx_op1(g, "Identity", "logits", outs[0]);
        return;
    }
    /* DeiT: the mean of the two heads, 0.5 * (head + head_dist) as engine/vit.c computes it */
    const char *sum = onnx_op2(g, "Add", "head.sum", outs[0], outs[1]);
    onnx_init_scalar_f32(g, "half", 0, 0.5f);
    onnx_op2(g, "Mul", "logits", sum, "half");
}

int onnx_vit_build(onnx_graph *g, const vit_model *m, actq_set *aq, const onnx_qweights *qw,
                   onnx_kind kind, const onnx_opts *opts, char *err, size_t errlen) {
    ctx c = {.m = m};
    if (onnx_nn_begin(&c.nn, g, aq, qw, kind, opts, m->cfg.ln_eps, err, errlen)) return -1;
    const vit_config *cf = &m->cfg;
    int C = cf->dim, NH = cf->heads, T = vit_num_tokens(cf);
    int64_t in_dims[4] = {-1, cf->in_chans, cf->img_size, cf->img_size};
    int64_t out_dims[2] = {-1, cf->num_classes};
    onnx_graph_input(g, "pixel_values", 4, in_dims, "batch");
    onnx_graph_output(g, "logits", 2, out_dims, "batch");
    /* shapes shared by every block */
    onnx_init_ints(g, "shape.n_t_nh_hd", 4, (int64_t)0, (int64_t)T, (int64_t)NH, (int64_t)(C / NH));
    onnx_init_ints(g, "shape.n_t_c", 3, (int64_t)0, (int64_t)T, (int64_t)C);
    /* engine/ops.c scales q k^T by 1 / sqrtf(hd) in float */
    onnx_init_scalar_f32(g, "attn.scale", 0, 1.0f / sqrtf((float)(C / NH)));
    const char *x = embed(&c, "pixel_values");
    for (int l = 0; l < cf->depth && !c.nn.failed; l++) x = block(&c, x, l);
    if (!c.nn.failed) head(&c, x);
    return onnx_nn_end(&c.nn);
}
