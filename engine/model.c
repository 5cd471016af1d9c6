/*
 * model.c: see model.h. Dispatch, and the two architectures described as data.
 */
#include "engine/model.h"

#include <stdio.h>
#include <string.h>

/* The architecture's function of the same name on m's own model, arguments after it. */
#define DISPATCH(m, fn, ...) \
    ((m)->arch == MODEL_SWIN ? swin_##fn(&(m)->swin, __VA_ARGS__) : vit_##fn(&(m)->vit, __VA_ARGS__))
#define DISPATCH0(m, fn) ((m)->arch == MODEL_SWIN ? swin_##fn(&(m)->swin) : vit_##fn(&(m)->vit))

const char *model_arch_name(model_arch a) { return a == MODEL_SWIN ? "swin" : "vit"; }

model_dims model_config_dims(const model_config *c) {
    model_dims d;
    if (c->arch == MODEL_SWIN) {
        const swin_config *s = &c->swin;
        d = (model_dims){.img_size = s->img_size, .in_chans = s->in_chans,
                         .num_classes = s->num_classes,
                         .feature_dim = swin_stage_dim(s, s->stages - 1),
                         .blocks = swin_num_blocks(s), .mean = s->mean, .std = s->std};
    } else {
        const vit_config *v = &c->vit;
        d = (model_dims){.img_size = v->img_size, .in_chans = v->in_chans,
                         .num_classes = v->num_classes, .feature_dim = v->dim,
                         .blocks = v->depth, .mean = v->mean, .std = v->std};
    }
    return d;
}

int model_config_check(const model_config *c, char *err, size_t errlen) {
    return c->arch == MODEL_SWIN ? swin_config_check(&c->swin, err, errlen)
                                 : vit_config_check(&c->vit, err, errlen);
}

void model_block_shape(const model_config *c, int l, int *tokens, int *dim) {
    if (c->arch == MODEL_SWIN) {
        int s = swin_block_stage(&c->swin, l), r = swin_stage_res(&c->swin, s);
        *tokens = r * r;
        *dim = swin_stage_dim(&c->swin, s);
    } else {
        *tokens = vit_num_tokens(&c->vit);
        *dim = c->vit.dim;
    }
}

int model_infer_batch(const model *m, int rows, int max) {
    model_config c = model_get_config(m);
    int tokens, dim;
    model_block_shape(&c, 0, &tokens, &dim); /* block 0 has the most tokens */
    int b = rows / tokens;
    if (b > max) b = max;
    return b > 0 ? b : 1;
}

int model_block_merge(const model_config *c, int l) {
    if (c->arch != MODEL_SWIN || l <= 0) return 0;
    int s = swin_block_stage(&c->swin, l);
    return s != swin_block_stage(&c->swin, l - 1) ? s : 0;
}

void model_config_describe(const model_config *c, char *out, size_t outlen) {
    if (c->arch == MODEL_SWIN) {
        const swin_config *s = &c->swin;
        char depths[64] = "", heads[64] = "";
        for (int i = 0; i < s->stages; i++) {
            size_t nd = strlen(depths), nh = strlen(heads);
            snprintf(depths + nd, sizeof depths - nd, "%s%d", i ? "-" : "", s->depths[i]);
            snprintf(heads + nh, sizeof heads - nh, "%s%d", i ? "-" : "", s->heads[i]);
        }
        snprintf(out, outlen, "Swin: img %d, patch %d, %d channel%s, embed %d, depths %s, heads %s, "
                 "window %d, MLP ratio %d, %d classes", s->img_size, s->patch, s->in_chans,
                 s->in_chans == 1 ? "" : "s", s->embed_dim, depths, heads, s->window,
                 s->mlp_ratio, s->num_classes);
    } else {
        const vit_config *v = &c->vit;
        snprintf(out, outlen, "%s: img %d, patch %d, %d channel%s, dim %d, depth %d, %d heads, "
                 "MLP %d, %d classes", v->distilled ? "DeiT (distilled)" : "ViT", v->img_size,
                 v->patch, v->in_chans, v->in_chans == 1 ? "" : "s", v->dim, v->depth, v->heads,
                 v->mlp_hidden, v->num_classes);
    }
}

double model_forward_flops(const model_config *c) {
    return c->arch == MODEL_SWIN ? swin_forward_flops(&c->swin) : vit_forward_flops(&c->vit);
}

int model_init(model *m, const model_config *c, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->arch = c->arch;
    return c->arch == MODEL_SWIN ? swin_init(&m->swin, &c->swin, err, errlen)
                                 : vit_init(&m->vit, &c->vit, err, errlen);
}

void model_free(model *m) {
    DISPATCH0(m, free);
    memset(m, 0, sizeof *m);
}

int model_clone(model *dst, const model *src, char *err, size_t errlen) {
    memset(dst, 0, sizeof *dst);
    dst->arch = src->arch;
    return src->arch == MODEL_SWIN ? swin_clone(&dst->swin, &src->swin, err, errlen)
                                   : vit_clone(&dst->vit, &src->vit, err, errlen);
}

int model_alloc_grads(model *m, char *err, size_t errlen) {
    return DISPATCH(m, alloc_grads, err, errlen);
}
void model_zero_grad(model *m) { DISPATCH0(m, zero_grad); }
void model_init_weights(model *m, uint64_t seed) { DISPATCH(m, init_weights, seed); }

model_config model_get_config(const model *m) {
    model_config c;
    memset(&c, 0, sizeof c); /* whole, padding included: state files compare configs bytewise */
    c.arch = m->arch;
    if (m->arch == MODEL_SWIN) c.swin = m->swin.cfg;
    else c.vit = m->vit.cfg;
    return c;
}

int model_same_config(const model *a, const model *b) {
    model_config ca = model_get_config(a), cb = model_get_config(b);
    return !memcmp(&ca, &cb, sizeof ca);
}

model_dims model_get_dims(const model *m) {
    /* the dims borrow mean and std from the model's own config, not from a copy */
    model_dims d;
    if (m->arch == MODEL_SWIN) {
        model_config c = {.arch = MODEL_SWIN};
        c.swin = m->swin.cfg;
        d = model_config_dims(&c);
        d.mean = m->swin.cfg.mean;
        d.std = m->swin.cfg.std;
    } else {
        model_config c = {.arch = MODEL_VIT};
        c.vit = m->vit.cfg;
        d = model_config_dims(&c);
        d.mean = m->vit.cfg.mean;
        d.std = m->vit.cfg.std;
    }
    return d;
}

float *model_params(const model *m) {
    return m->arch == MODEL_SWIN ? m->swin.param_mem : m->vit.param_mem;
}
float *model_grads(const model *m) {
    return m->arch == MODEL_SWIN ? m->swin.grad_mem : m->vit.grad_mem;
}
size_t model_num_params(const model *m) {
    return m->arch == MODEL_SWIN ? m->swin.num_params : m->vit.num_params;
}
const param_info *model_param_info(const model *m, int *n) {
    if (m->arch == MODEL_SWIN) {
        *n = m->swin.ninfo;
        return m->swin.info;
    }
    *n = VIT_NUM_PARAM_TENSORS;
    return m->vit.info;
}
int model_param_lookup(const model *m, const char *name, int *layer) {
    return DISPATCH(m, param_lookup, name, layer);
}

void model_set_hooks(model *m, const model_hooks *hooks) { DISPATCH(m, set_hooks, hooks); }
void model_set_recompute(model *m, int on) { DISPATCH(m, set_recompute, on); }

void model_set_qwt(model *m, const float *const *w, const float *const *b) {
    if (m->arch == MODEL_SWIN) {
        m->swin.qwt_w = w;
        m->swin.qwt_b = w ? b : NULL;
    } else {
        m->vit.qwt_w = w;
        m->vit.qwt_b = w ? b : NULL;
    }
}

void model_release_acts(model *m) { DISPATCH0(m, release_acts); }

int model_forward(model *m, const float *images, int B, char *err, size_t errlen) {
    return DISPATCH(m, forward, images, B, err, errlen);
}
int model_forward_infer(model *m, const float *images, int B, char *err, size_t errlen) {
    return DISPATCH(m, forward_infer, images, B, err, errlen);
}
const float *model_logits(const model *m) {
    return m->arch == MODEL_SWIN ? m->swin.logits : m->vit.logits;
}
const float *model_feature(const model *m, int b) { return DISPATCH(m, feature, b); }
int model_backward(model *m, const float *dlogits, const float *dfeature, float *dimages,
                   char *err, size_t errlen) {
    return DISPATCH(m, backward, dlogits, dfeature, dimages, err, errlen);
}

int model_embed_forward(model *m, float *x, const float *images, int B, char *err,
                        size_t errlen) {
    return DISPATCH(m, embed_forward, x, images, B, err, errlen);
}
int model_merge_forward(model *m, int s, float *y, const float *x, int B, char *err,
                        size_t errlen) {
    if (m->arch != MODEL_SWIN) {
        snprintf(err, errlen, "a ViT has no patch merging");
        return -1;
    }
    return swin_merge_forward(&m->swin, s, y, x, B, err, errlen);
}
int model_block_forward(model *m, int l, float *y, const float *x, int B, char *err,
                        size_t errlen) {
    return DISPATCH(m, block_forward, l, y, x, B, err, errlen);
}
int model_head_forward(model *m, float *logits, const float *x, int B, char *err,
                       size_t errlen) {
    return DISPATCH(m, head_forward, logits, x, B, err, errlen);
}

/* Appends one linear to the list (when there is room; n counts them all). */
static void add_linear(model_linear *out, int cap, int *n, model_lin_kind kind, float *w, int rows,
                       int cols, const char *fmt, int a, int b) {
    if (out && *n < cap) {
        model_linear *e = &out[*n];
        snprintf(e->name, sizeof e->name, fmt, a, b);
        e->w = w;
        e->rows = rows;
        e->cols = cols;
        e->kind = kind;
    }
    (*n)++;
}

static int vit_linears(const vit_model *m, model_linear *out, int cap) {
    const vit_config *c = &m->cfg;
    const vit_params *p = &m->params;
    int n = 0, C = c->dim, H = c->mlp_hidden, K = c->num_classes;
    add_linear(out, cap, &n, MODEL_LIN_PATCH, p->patch_w, C, c->in_chans * c->patch * c->patch,
               "patch_embed.proj.weight", 0, 0);
    for (int l = 0; l < c->depth; l++) {
        add_linear(out, cap, &n, MODEL_LIN_BLOCK, p->qkv_w + (size_t)l * 3 * C * C, 3 * C, C,
                   "blocks.%d.attn.qkv.weight", l, 0);
        add_linear(out, cap, &n, MODEL_LIN_BLOCK, p->proj_w + (size_t)l * C * C, C, C,
                   "blocks.%d.attn.proj.weight", l, 0);
        add_linear(out, cap, &n, MODEL_LIN_BLOCK, p->fc1_w + (size_t)l * H * C, H, C,
                   "blocks.%d.mlp.fc1.weight", l, 0);
        add_linear(out, cap, &n, MODEL_LIN_BLOCK, p->fc2_w + (size_t)l * C * H, C, H,
                   "blocks.%d.mlp.fc2.weight", l, 0);
    }
    add_linear(out, cap, &n, MODEL_LIN_HEAD, p->head_w, K, C, "head.weight", 0, 0);
    if (c->distilled)
        add_linear(out, cap, &n, MODEL_LIN_HEAD, p->headd_w, K, C, "head_dist.weight", 0, 0);
    return n;
}

static int swin_linears(const swin_model *m, model_linear *out, int cap) {
    const swin_config *c = &m->cfg;
    const swin_params *p = &m->params;
    int n = 0;
    add_linear(out, cap, &n, MODEL_LIN_PATCH, p->patch_w, c->embed_dim,
               c->in_chans * c->patch * c->patch, "patch_embed.proj.weight", 0, 0);
    for (int s = 0; s < c->stages; s++) {
        const swin_stage_params *sp = &p->stage[s];
        int C = swin_stage_dim(c, s), H = c->mlp_ratio * C;
        if (s > 0)
            add_linear(out, cap, &n, MODEL_LIN_MERGE, sp->merge_w, C, 2 * C,
                       "layers.%d.downsample.reduction.weight", s, 0);
        for (int b = 0; b < c->depths[s]; b++) {
            add_linear(out, cap, &n, MODEL_LIN_BLOCK, sp->qkv_w + (size_t)b * 3 * C * C, 3 * C, C,
                       "layers.%d.blocks.%d.attn.qkv.weight", s, b);
            add_linear(out, cap, &n, MODEL_LIN_BLOCK, sp->proj_w + (size_t)b * C * C, C, C,
                       "layers.%d.blocks.%d.attn.proj.weight", s, b);
            add_linear(out, cap, &n, MODEL_LIN_BLOCK, sp->fc1_w + (size_t)b * H * C, H, C,
                       "layers.%d.blocks.%d.mlp.fc1.weight", s, b);
            add_linear(out, cap, &n, MODEL_LIN_BLOCK, sp->fc2_w + (size_t)b * C * H, C, H,
                       "layers.%d.blocks.%d.mlp.fc2.weight", s, b);
        }
    }
    add_linear(out, cap, &n, MODEL_LIN_HEAD, p->head_w, c->num_classes,
               swin_stage_dim(c, c->stages - 1), "head.fc.weight", 0, 0);
    return n;
}

int model_linears(const model *m, model_linear *out, int cap) {
    return m->arch == MODEL_SWIN ? swin_linears(&m->swin, out, cap)
                                 : vit_linears(&m->vit, out, cap);
}

static void add_point(model_qpoint *out, int cap, int *n, int layer, qpoint p, int cols) {
    if (out && *n < cap) out[*n] = (model_qpoint){.layer = layer, .p = p, .cols = cols};
    (*n)++;
}

/* One block's six points: its linears' inputs, q|k|v and the softmax output (rows of the
 * window's, or the image's, tokens). */
static void add_block_points(model_qpoint *out, int cap, int *n, int l, int C, int H, int T) {
    add_point(out, cap, n, l, QP_QKV_IN, C);
    add_point(out, cap, n, l, QP_QKV_OUT, 3 * C);
    add_point(out, cap, n, l, QP_ATTN, T);
    add_point(out, cap, n, l, QP_PROJ_IN, C);
    add_point(out, cap, n, l, QP_FC1_IN, C);
    add_point(out, cap, n, l, QP_FC2_IN, H);
}

int model_qpoints(const model_config *c, model_qpoint *out, int cap) {
    int n = 0;
    if (c->arch == MODEL_SWIN) {
        const swin_config *s = &c->swin;
        int l = 0;
        for (int st = 0; st < s->stages; st++) {
            int C = swin_stage_dim(s, st), w = swin_stage_window(s, st);
            for (int b = 0; b < s->depths[st]; b++, l++)
                add_block_points(out, cap, &n, l, C, s->mlp_ratio * C, w * w);
        }
        add_point(out, cap, &n, -1, QP_PATCH_IN, s->in_chans * s->patch * s->patch);
        add_point(out, cap, &n, -1, QP_HEAD_IN, swin_stage_dim(s, s->stages - 1));
        for (int st = 1; st < s->stages; st++)
            add_point(out, cap, &n, st, QP_MERGE_IN, 2 * swin_stage_dim(s, st));
    } else {
        const vit_config *v = &c->vit;
        for (int l = 0; l < v->depth; l++)
            add_block_points(out, cap, &n, l, v->dim, v->mlp_hidden, vit_num_tokens(v));
        add_point(out, cap, &n, -1, QP_PATCH_IN, v->in_chans * v->patch * v->patch);
        add_point(out, cap, &n, -1, QP_HEAD_IN, v->dim);
    }
    return n;
}
