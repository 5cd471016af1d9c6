/*
 * vit.c: the ViT forward and backward passes on the ops of ops.h. See vit.h for the design;
 * the comments here say what each buffer holds and why it is kept.
 */
#include "engine/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "engine/rng.h"

struct vit_acts {
    int B, quant;        /* batch and whether quantized copies have room of their own */
    int qslots;          /* per-block slots of the block's quantized copies (ln1q ... fchgq):
                            slots, or 1 when the backward recomputes them (hooks->reforward) or
                            for a forward-only pass; the one slot is a single scratch (qs) that
                            each copy takes in turn, the moment the last one is dead: ln1q,
                            qkvq, attyq, ln2q and fchgq at its start, attq after 3C columns
                            (it lives beside qkvq) */
    int rslots;          /* per-block slots of the norm and GELU outputs (ln1, ln2, fchg):
                            slots, or 1 when the backward recomputes them (vit_model.recompute) */
    int slots;           /* per-block slots: L (a forward the backward can follow), or 1 for a
                            forward-only pass, which reuses one block's buffers for every block
                            (res2 then has 2 slots, used in turn, so a block's input survives
                            its own forward: the residual and QwT read it at the end) */
    float *mem;
    float *qs;           /* the quantized copies' one slot (qslots 1), else NULL */
    /* embedding */
    float *cols, *colsq; /* (B*np, Pd) im2col'ed image, and its quantized copy */
    float *tok;          /* (B*np, C) patch tokens before positions */
    float *x0;           /* (B, T, C) block 0's input */
    /* per block, each (L, ...): */
    float *ln1, *ln1_mean, *ln1_rstd, *ln1q; /* (L,B,T,C), (L,B,T) x2, (L,B,T,C) */
    float *qkv, *qkvq;   /* (L, B, T, 3C) */
    float *att, *attq;   /* (L, B, NH, T, T) */
    float *atty, *attyq; /* (L, B, T, C) attention output, proj's input */
    float *res1;         /* (L, B, T, C) x + attn */
    float *ln2, *ln2_mean, *ln2_rstd, *ln2q;
    float *fch, *fchg, *fchgq; /* (L, B, T, H) fc1 output, GELU output, its quantized copy */
    float *res2;         /* (L, B, T, C) block output */
    /* head */
    float *pre;          /* (B*prefix, C) prefix tokens of the last block's output */
    float *lnf, *lnf_mean, *lnf_rstd, *lnfq; /* (B*prefix, C), (B*prefix) x2, (B*prefix, C) */
    float *hout, *houtd; /* (B*prefix, K) head and head_dist applied to every prefix row */
    float *logits;       /* (B, K) */
    /* backward scratch, one block's worth, reused block after block */
    float *dres;         /* (B, T, C) gradient of the residual stream */
    float *dC;           /* (B, T, C) */
    float *dqkv;         /* (B, T, 3C) */
    float *datt;         /* (B, NH, T, T) */
    float *dH, *dH2;     /* (B, T, H) */
    float *dpre;         /* (B*prefix, C) */
    float *dhout, *dhoutd; /* (B*prefix, K) */
    float *dtok;         /* (B*np, C) */
    float *dcols;        /* (B*np, Pd) */
};

int vit_num_prefix(const vit_config *c) { return 1 + (c->distilled ? 1 : 0); }
int vit_num_tokens(const vit_config *c) {
    int g = c->img_size / c->patch;
    return vit_num_prefix(c) + g * g;
}

int vit_config_check(const vit_config *c, char *err, size_t errlen) {
    const char *why = NULL;
    if (c->img_size <= 0 || c->patch <= 0 || c->img_size % c->patch)
        why = "img_size must be a positive multiple of patch";
    else if (c->in_chans <= 0 || c->in_chans > 3) why = "in_chans must be 1, 2 or 3";
    else if (c->dim <= 0 || c->heads <= 0 || c->dim % c->heads)
        why = "dim must be a positive multiple of heads";
    else if (c->depth <= 0) why = "depth must be positive";
    else if (c->mlp_hidden <= 0) why = "mlp_hidden must be positive";
    else if (c->num_classes <= 0) why = "num_classes must be positive";
    else if (!(c->ln_eps > 0)) why = "ln_eps must be positive";
    if (why) {
        snprintf(err, errlen, "bad model config: %s (img_size %d, patch %d, in_chans %d, dim %d, "
                 "heads %d, depth %d)", why, c->img_size, c->patch, c->in_chans, c->dim, c->heads,
                 c->depth);
        return -1;
    }
    return 0;
}

/* Fills m->info and points params at param_mem. */
static void layout(vit_model *m) {
    const vit_config *c = &m->cfg;
    int64_t C = c->dim, L = c->depth, H = c->mlp_hidden, K = c->num_classes, T = vit_num_tokens(c);
    int64_t P = c->patch, Ci = c->in_chans, D = c->distilled ? 1 : 0;
    struct { const char *name; int per_layer, ndim; int64_t s[4]; int decay; } t[] = {
        {"patch_embed.proj.weight", 0, 4, {C, Ci, P, P}, 1},
        {"patch_embed.proj.bias", 0, 1, {C}, 0},
        {"cls_token", 0, 3, {1, 1, C}, 0},
        {"dist_token", 0, 3, {1, D, C}, 0},
        {"pos_embed", 0, 3, {1, T, C}, 0},
        {"blocks.{}.norm1.weight", 1, 1, {C}, 0},
        {"blocks.{}.norm1.bias", 1, 1, {C}, 0},
        {"blocks.{}.attn.qkv.weight", 1, 2, {3 * C, C}, 1},
        {"blocks.{}.attn.qkv.bias", 1, 1, {3 * C}, 0},
        {"blocks.{}.attn.proj.weight", 1, 2, {C, C}, 1},
        {"blocks.{}.attn.proj.bias", 1, 1, {C}, 0},
        {"blocks.{}.norm2.weight", 1, 1, {C}, 0},
        {"blocks.{}.norm2.bias", 1, 1, {C}, 0},
        {"blocks.{}.mlp.fc1.weight", 1, 2, {H, C}, 1},
        {"blocks.{}.mlp.fc1.bias", 1, 1, {H}, 0},
        {"blocks.{}.mlp.fc2.weight", 1, 2, {C, H}, 1},
        {"blocks.{}.mlp.fc2.bias", 1, 1, {C}, 0},
        {"norm.weight", 0, 1, {C}, 0},
        {"norm.bias", 0, 1, {C}, 0},
        {"head.weight", 0, 2, {K, C}, 1},
        {"head.bias", 0, 1, {K}, 0},
        {"head_dist.weight", 0, 2, {K * D, C}, 1},
        {"head_dist.bias", 0, 1, {K * D}, 0},
    };
    size_t off = 0;
    for (int i = 0; i < VIT_NUM_PARAM_TENSORS; i++) {
        param_info *pi = &m->info[i];
        pi->name = t[i].name;
        pi->per_layer = t[i].per_layer;
        pi->layers = t[i].per_layer ? (int)L : 1;
        pi->ndim = t[i].ndim;
        size_t n = 1;
        for (int d = 0; d < 4; d++) {
            pi->shape[d] = d < t[i].ndim ? t[i].s[d] : 0;
            if (d < t[i].ndim) n *= (size_t)t[i].s[d];
        }
        pi->numel = n * (t[i].per_layer ? (size_t)L : 1);
        pi->offset = off;
        pi->decay = t[i].decay;
        off += pi->numel;
    }
    m->num_params = off;
}

_Static_assert(sizeof(vit_params) == VIT_NUM_PARAM_TENSORS * sizeof(float *),
               "vit_params must be exactly the parameter pointers, in param_info order");

static void point_params(vit_params *p, float *mem, const param_info *info) {
    float **ptrs = (float **)p;
    for (int i = 0; i < VIT_NUM_PARAM_TENSORS; i++) ptrs[i] = mem + info[i].offset;
}

int vit_init(vit_model *m, const vit_config *cfg, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (vit_config_check(cfg, err, errlen)) return -1;
    m->cfg = *cfg;
    layout(m);
    m->param_mem = calloc(m->num_params, sizeof(float));
    if (!m->param_mem) {
        snprintf(err, errlen, "out of memory for %zu parameters", m->num_params);
        return -1;
    }
    point_params(&m->params, m->param_mem, m->info);
    return 0;
}

static void acts_free(vit_acts *a) {
    if (a) free(a->mem);
    free(a);
}

void vit_free(vit_model *m) {
    free(m->param_mem);
    free(m->grad_mem);
    acts_free(m->acts);
    memset(m, 0, sizeof *m);
}

int vit_clone(vit_model *dst, const vit_model *src, char *err, size_t errlen) {
    if (vit_init(dst, &src->cfg, err, errlen)) return -1;
    memcpy(dst->param_mem, src->param_mem, sizeof(float) * src->num_params);
    return 0;
}

int vit_alloc_grads(vit_model *m, char *err, size_t errlen) {
    if (m->grad_mem) return 0;
    m->grad_mem = calloc(m->num_params, sizeof(float));
    if (!m->grad_mem) {
        snprintf(err, errlen, "out of memory for gradients");
        return -1;
    }
    point_params(&m->grads, m->grad_mem, m->info);
    return 0;
}

void vit_zero_grad(vit_model *m) {
    if (m->grad_mem) memset(m->grad_mem, 0, m->num_params * sizeof(float));
}

void vit_init_weights(vit_model *m, uint64_t seed) {
    const vit_config *c = &m->cfg;
    vit_params *p = &m->params;
    rng_t r;
    rng_seed(&r, seed);
    memset(m->param_mem, 0, m->num_params * sizeof(float));
    for (int i = 0; i < VIT_NUM_PARAM_TENSORS; i++) {
        const param_info *pi = &m->info[i];
        float *w = m->param_mem + pi->offset;
        if (pi->decay && i != 0) /* every Linear: trunc_normal(.02), bias stays 0 */
            for (size_t j = 0; j < pi->numel; j++) w[j] = rng_trunc_normal(&r, .02f, -2, 2);
    }
    /* The patch embedding keeps PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
    int fan_in = c->in_chans * c->patch * c->patch;
    float bound = 1.0f / sqrtf((float)fan_in);
    for (size_t j = 0; j < m->info[0].numel; j++) p->patch_w[j] = (2 * rng_uniform(&r) - 1) * bound;
    for (int j = 0; j < c->dim; j++) p->patch_b[j] = (2 * rng_uniform(&r) - 1) * bound;
    for (int j = 0; j < c->dim; j++) p->cls_token[j] = 1e-6f * rng_normal(&r);
    if (c->distilled)
        for (int j = 0; j < c->dim; j++) p->dist_token[j] = rng_trunc_normal(&r, .02f, -2, 2);
    for (size_t j = 0; j < m->info[4].numel; j++) p->pos_embed[j] = rng_trunc_normal(&r, .02f, -2, 2);
    for (size_t j = 0; j < (size_t)c->depth * c->dim; j++) p->ln1_w[j] = p->ln2_w[j] = 1.0f;
    for (int j = 0; j < c->dim; j++) p->norm_w[j] = 1.0f;
}

int vit_param_lookup(const vit_model *m, const char *name, int *layer) {
    for (int i = 0; i < VIT_NUM_PARAM_TENSORS; i++) {
        const param_info *pi = &m->info[i];
        if (pi->numel == 0) continue;
        if (!pi->per_layer) {
            if (!strcmp(name, pi->name)) { *layer = -1; return i; }
            continue;
        }
        /* "blocks.{}.rest": match the prefix, a decimal index in range, then the rest */
        const char *brace = strstr(pi->name, "{}");
        size_t pre = (size_t)(brace - pi->name);
        if (strncmp(name, pi->name, pre)) continue;
        const char *s = name + pre;
        if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) continue;
        long l = 0;
        while (*s >= '0' && *s <= '9' && l < 100000) l = l * 10 + (*s++ - '0');
        if (l >= m->cfg.depth || strcmp(s, brace + 2)) continue;
        *layer = (int)l;
        return i;
    }
    return -1;
}

/* Slots of quantized copies a pass keeps: one for a forward-only pass or when the backward
 * recomputes them (hooks->reforward), else one per block. */
static int qslots_for(const vit_model *m, const model_hooks *hooks, int infer) {
    return infer || (hooks && hooks->reforward) ? 1 : m->cfg.depth;
}

/* Slots of the norm and GELU outputs: one for a forward-only pass or when the backward
 * recomputes them (vit_model.recompute), else one per block. */
static int rslots_for(const vit_model *m, int infer) {
    return infer || m->recompute ? 1 : m->cfg.depth;
}

/* 1 if a's training layout is not the one m now asks for. */
static int acts_stale(const vit_model *m, const vit_acts *a) {
    return a->quant != (m->hooks != NULL) ||
           (a->slots == m->cfg.depth &&
            (a->qslots != qslots_for(m, m->hooks, 0) || a->rslots != rslots_for(m, 0)));
}

void vit_set_hooks(vit_model *m, const model_hooks *hooks) {
    m->hooks = hooks;
    /* activations of another kind (plain or quantized; copies kept or recomputed) go */
    if (m->acts && acts_stale(m, m->acts)) vit_release_acts(m);
}

void vit_set_recompute(vit_model *m, int on) {
    m->recompute = on != 0;
    if (m->acts && acts_stale(m, m->acts)) vit_release_acts(m);
}

void vit_release_acts(vit_model *m) {
    acts_free(m->acts);
    m->acts = NULL;
    m->acts_batch = 0;
    m->logits = NULL;
}

/* (Re)allocates activations for B images, for a pass the backward can follow (infer = 0) or a
 * forward-only one (infer = 1: one block's worth); keeps them if big enough and of the right
 * kind (a training allocation serves a forward-only pass too). */
static int acts_ensure(vit_model *m, int B, int infer, char *err, size_t errlen) {
    int quant = m->hooks != NULL;
    int qslots = qslots_for(m, m->hooks, infer), rslots = rslots_for(m, infer);
    if (m->acts && m->acts_batch >= B && m->acts->quant == quant &&
        (infer || (m->acts->slots == m->cfg.depth && !acts_stale(m, m->acts))))
        return 0;
    acts_free(m->acts);
    m->acts = NULL;
    const vit_config *c = &m->cfg;
    size_t C = c->dim, L = infer ? 1 : c->depth, H = c->mlp_hidden, K = c->num_classes;
    size_t NH = c->heads, L2 = infer ? 2 : L;
    size_t T = vit_num_tokens(c), np = T - vit_num_prefix(c), pf = vit_num_prefix(c);
    size_t Pd = (size_t)c->in_chans * c->patch * c->patch, BT = (size_t)B * T;
    vit_acts *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->B = B;
    a->quant = quant;
    a->slots = (int)L;
    a->qslots = qslots;
    a->rslots = rslots;
    size_t LQ = (size_t)qslots, LR = (size_t)rslots;
    size_t nA = (size_t)B * NH * T * T, at3 = (BT * 3 * C + 15) & ~(size_t)15;
    size_t nqs = at3 + nA > BT * H ? at3 + nA : BT * H;
    if (qslots == 1) LQ = 0; /* the copies live in qs */
    /* Two passes over the same list: the first counts, the second assigns. */
    struct { float **p; size_t n; int q; } list[] = {
        {&a->cols, B * np * Pd, 0}, {&a->colsq, B * np * Pd, 1}, {&a->tok, B * np * C, 0},
        {&a->x0, BT * C, 0},
        {&a->ln1, LR * BT * C, 0}, {&a->ln1_mean, L * BT, 0}, {&a->ln1_rstd, L * BT, 0},
        {&a->ln1q, LQ * BT * C, 1}, {&a->qkv, L * BT * 3 * C, 0}, {&a->qkvq, LQ * BT * 3 * C, 1},
        {&a->att, L * B * NH * T * T, 0}, {&a->attq, LQ * B * NH * T * T, 1},
        {&a->atty, L * BT * C, 0}, {&a->attyq, LQ * BT * C, 1}, {&a->res1, L * BT * C, 0},
        {&a->ln2, LR * BT * C, 0}, {&a->ln2_mean, L * BT, 0}, {&a->ln2_rstd, L * BT, 0},
        {&a->ln2q, LQ * BT * C, 1}, {&a->fch, L * BT * H, 0}, {&a->fchg, LR * BT * H, 0},
        {&a->fchgq, LQ * BT * H, 1}, {&a->qs, qslots == 1 ? nqs : 0, 1},
        {&a->res2, L2 * BT * C, 0},
        {&a->pre, B * pf * C, 0}, {&a->lnf, B * pf * C, 0}, {&a->lnf_mean, B * pf, 0},
        {&a->lnf_rstd, B * pf, 0}, {&a->lnfq, B * pf * C, 1}, {&a->hout, B * pf * K, 0},
        {&a->houtd, B * pf * K, 0}, {&a->logits, B * K, 0},
        {&a->dres, BT * C, 0}, {&a->dC, BT * C, 0}, {&a->dqkv, BT * 3 * C, 0},
        {&a->datt, B * NH * T * T, 0}, {&a->dH, BT * H, 0}, {&a->dH2, BT * H, 0},
        {&a->dpre, B * pf * C, 0}, {&a->dhout, B * pf * K, 0}, {&a->dhoutd, B * pf * K, 0},
        {&a->dtok, B * np * C, 0}, {&a->dcols, B * np * Pd, 0},
    };
    int n = sizeof list / sizeof list[0];
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (quant || !list[i].q) total += (list[i].n + 15) & ~(size_t)15; /* 64-byte aligned */
    a->mem = aligned_alloc(64, total * sizeof(float));
    if (!a->mem) goto oom;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!quant && list[i].q) continue;
        *list[i].p = a->mem + off;
        off += (list[i].n + 15) & ~(size_t)15;
    }
    if (quant && qslots == 1) {
        a->ln1q = a->qkvq = a->attyq = a->ln2q = a->fchgq = a->qs;
        a->attq = a->qs + at3;
    } else {
        a->qs = NULL;
    }
    if (!quant) { /* without hooks the quantized copies are the tensors themselves */
        a->colsq = a->cols; a->ln1q = a->ln1; a->qkvq = a->qkv; a->attq = a->att;
        a->attyq = a->atty; a->ln2q = a->ln2; a->fchgq = a->fchg; a->lnfq = a->lnf;
    }
    m->acts = a;
    m->acts_batch = B;
    m->logits = a->logits;
    return 0;
oom:
    acts_free(a);
    snprintf(err, errlen, "out of memory for the activations of a batch of %d", B);
    return -1;
}

/* Runs the forward hook at point p if hooks are installed (else the copy is an alias). */
static int hook_fwd(vit_model *m, int layer, qpoint p, float *out, const float *in,
                    int64_t rows, int cols, char *err, size_t errlen) {
    if (!m->hooks) return 0;
    if (m->hooks->forward(m->hooks->ctx, layer, p, out, in, rows, cols)) {
        snprintf(err, errlen, "quantizer at point %d of layer %d failed", (int)p, layer);
        return -1;
    }
    return 0;
}

static void hook_bwd(vit_model *m, int layer, qpoint p, float *d, const float *in,
                     int64_t rows, int cols) {
    if (m->hooks) m->hooks->backward(m->hooks->ctx, layer, p, d, d, in, rows, cols);
}

/* Sizes used everywhere below. */
#define DIMS                                                                      \
    const vit_config *c = &m->cfg;                                                \
    int C = c->dim, H = c->mlp_hidden, NH = c->heads, K = c->num_classes;         \
    int T = vit_num_tokens(c), pf = vit_num_prefix(c), np = T - pf;               \
    int Pd = c->in_chans * c->patch * c->patch;                                   \
    size_t BT = (size_t)B * T;                                                    \
    (void)C; (void)H; (void)NH; (void)K; (void)np; (void)Pd; (void)BT; (void)pf

static int embed_forward(vit_model *m, float *x, const float *images, int B, char *err,
                         size_t errlen) {
    DIMS;
    vit_acts *a = m->acts;
    const vit_params *p = &m->params;
    im2col_forward(a->cols, images, B, c->in_chans, c->img_size, c->patch);
    if (hook_fwd(m, -1, QP_PATCH_IN, a->colsq, a->cols, (int64_t)B * np, Pd, err, errlen))
        return -1;
    matmul_forward(a->tok, a->colsq, p->patch_w, p->patch_b, B * np, Pd, C);
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * C;
        for (int i = 0; i < C; i++) xb[i] = p->cls_token[i] + p->pos_embed[i];
        if (c->distilled)
            for (int i = 0; i < C; i++) xb[C + i] = p->dist_token[i] + p->pos_embed[C + i];
        for (int t = 0; t < np; t++) {
            const float *tk = a->tok + ((size_t)b * np + t) * C, *pe = p->pos_embed + (size_t)(pf + t) * C;
            float *o = xb + (size_t)(pf + t) * C;
            for (int i = 0; i < C; i++) o[i] = tk[i] + pe[i];
        }
    }
    return 0;
}

/* Block l's output: its slot of res2 (see vit_acts.slots). */
static float *block_out(const vit_model *m, int l, size_t BT) {
    const vit_acts *a = m->acts;
    return a->res2 + (size_t)(a->slots == m->cfg.depth ? l : l % 2) * BT * m->cfg.dim;
}

/* Block l's activations for a batch of B: its slot of each (see vit_acts.slots), and its slot of
 * the quantized copies (vit_acts.qslots), the one place these offsets are worked out. */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *ln1q, *qkv, *qkvq, *att, *attq, *atty, *attyq, *res1;
    float *ln2, *ln2_mean, *ln2_rstd, *ln2q, *fch, *fchg, *fchgq;
} block_acts;

static block_acts block_slot(const vit_model *m, int l, int B) {
    DIMS;
    const vit_acts *a = m->acts;
    size_t s = a->slots == c->depth ? (size_t)l : 0;
    size_t q = a->qslots == c->depth ? (size_t)l : 0;
    size_t r = a->rslots == c->depth ? (size_t)l : 0;
    size_t nA = (size_t)B * NH * T * T;
    block_acts k = {
        .ln1 = a->ln1 + r * BT * C, .ln1_mean = a->ln1_mean + s * BT,
        .ln1_rstd = a->ln1_rstd + s * BT, .ln1q = a->ln1q + q * BT * C,
        .qkv = a->qkv + s * BT * 3 * C, .qkvq = a->qkvq + q * BT * 3 * C,
        .att = a->att + s * nA, .attq = a->attq + q * nA,
        .atty = a->atty + s * BT * C, .attyq = a->attyq + q * BT * C, .res1 = a->res1 + s * BT * C,
        .ln2 = a->ln2 + r * BT * C, .ln2_mean = a->ln2_mean + s * BT,
        .ln2_rstd = a->ln2_rstd + s * BT, .ln2q = a->ln2q + q * BT * C,
        .fch = a->fch + s * BT * H, .fchg = a->fchg + r * BT * H, .fchgq = a->fchgq + q * BT * H,
    };
    if (!a->quant) { /* the copies are the tensors themselves (see acts_ensure) */
        k.ln1q = k.ln1; k.qkvq = k.qkv; k.attq = k.att; k.attyq = k.atty; k.ln2q = k.ln2;
        k.fchgq = k.fchg;
    }
    return k;
}

/* Block l on x (B, T, C); its output lands in block_out(m, l). */
static int block_forward(vit_model *m, int l, const float *x, int B, char *err, size_t errlen) {
    DIMS;
    vit_acts *a = m->acts;
    const vit_params *p = &m->params;
    block_acts k = block_slot(m, l, B);
    float *ln1 = k.ln1, *ln1q = k.ln1q, *qkv = k.qkv, *qkvq = k.qkvq, *att = k.att;
    float *attq = k.attq, *atty = k.atty, *attyq = k.attyq, *res1 = k.res1, *ln2 = k.ln2;
    float *ln2q = k.ln2q, *fch = k.fch, *fchg = k.fchg, *fchgq = k.fchgq;
    float *res2 = block_out(m, l, BT);

    layernorm_forward(ln1, k.ln1_mean, k.ln1_rstd, x, p->ln1_w + (size_t)l * C,
                      p->ln1_b + (size_t)l * C, (int)BT, C, c->ln_eps);
    if (hook_fwd(m, l, QP_QKV_IN, ln1q, ln1, BT, C, err, errlen)) return -1;
    matmul_forward(qkv, ln1q, p->qkv_w + (size_t)l * 3 * C * C, p->qkv_b + (size_t)l * 3 * C,
                   (int)BT, C, 3 * C);
    if (hook_fwd(m, l, QP_QKV_OUT, qkvq, qkv, BT, 3 * C, err, errlen)) return -1;
    attention_softmax_forward(att, qkvq, B, T, C, NH);
    if (hook_fwd(m, l, QP_ATTN, attq, att, (int64_t)B * NH * T, T, err, errlen)) return -1;
    attention_value_forward(atty, attq, qkvq, B, T, C, NH);
    if (hook_fwd(m, l, QP_PROJ_IN, attyq, atty, BT, C, err, errlen)) return -1;
    matmul_forward(res1, attyq, p->proj_w + (size_t)l * C * C, p->proj_b + (size_t)l * C,
                   (int)BT, C, C);
    axpy(res1, 1.0f, x, BT * C);
    layernorm_forward(ln2, k.ln2_mean, k.ln2_rstd, res1, p->ln2_w + (size_t)l * C,
                      p->ln2_b + (size_t)l * C, (int)BT, C, c->ln_eps);
    if (hook_fwd(m, l, QP_FC1_IN, ln2q, ln2, BT, C, err, errlen)) return -1;
    matmul_forward(fch, ln2q, p->fc1_w + (size_t)l * H * C, p->fc1_b + (size_t)l * H, (int)BT,
                   C, H);
    gelu_forward(fchg, fch, BT * H);
    if (hook_fwd(m, l, QP_FC2_IN, fchgq, fchg, BT, H, err, errlen)) return -1;
    matmul_forward(res2, fchgq, p->fc2_w + (size_t)l * C * H, p->fc2_b + (size_t)l * C, (int)BT,
                   H, C);
    axpy(res2, 1.0f, res1, BT * C);
    if (m->qwt_w && m->qwt_w[l]) {
        /* QwT: out += x W^T + b, the block's linear correction (forward only; dC is free) */
        matmul_forward(a->dC, x, m->qwt_w[l], m->qwt_b[l], (int)BT, C, C);
        axpy(res2, 1.0f, a->dC, BT * C);
    }
    return 0;
}

static int head_forward(vit_model *m, float *logits, const float *x, int B, char *err,
                        size_t errlen) {
    DIMS;
    vit_acts *a = m->acts;
    const vit_params *p = &m->params;
    for (int b = 0; b < B; b++)
        memcpy(a->pre + (size_t)b * pf * C, x + (size_t)b * T * C, sizeof(float) * pf * C);
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->pre, p->norm_w, p->norm_b, B * pf, C,
                      c->ln_eps);
    if (hook_fwd(m, -1, QP_HEAD_IN, a->lnfq, a->lnf, (int64_t)B * pf, C, err, errlen))
        return -1;
    if (!c->distilled) {
        matmul_forward(logits, a->lnfq, p->head_w, p->head_b, B, C, K);
        return 0;
    }
    /* DeiT: the mean of head(class token) and head_dist(distillation token). Both heads see
     * both prefix rows (a waste of 2 B K C flops) so that each is one plain matmul. */
    matmul_forward(a->hout, a->lnfq, p->head_w, p->head_b, B * pf, C, K);
    matmul_forward(a->houtd, a->lnfq, p->headd_w, p->headd_b, B * pf, C, K);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            logits[(size_t)b * K + k] =
                0.5f * (a->hout[(size_t)b * pf * K + k] + a->houtd[((size_t)b * pf + 1) * K + k]);
    return 0;
}

static int forward(vit_model *m, const float *images, int B, int infer, char *err,
                   size_t errlen) {
    if (acts_ensure(m, B, infer, err, errlen)) return -1;
    DIMS;
    vit_acts *a = m->acts;
    a->B = B;
    if (embed_forward(m, a->x0, images, B, err, errlen)) return -1;
    for (int l = 0; l < c->depth; l++)
        if (block_forward(m, l, l ? block_out(m, l - 1, BT) : a->x0, B, err, errlen)) return -1;
    return head_forward(m, a->logits, block_out(m, c->depth - 1, BT), B, err, errlen);
}

int vit_forward(vit_model *m, const float *images, int B, char *err, size_t errlen) {
    return forward(m, images, B, 0, err, errlen);
}

int vit_forward_infer(vit_model *m, const float *images, int B, char *err, size_t errlen) {
    return forward(m, images, B, 1, err, errlen);
}

const float *vit_feature(const vit_model *m, int b) {
    return m->acts->lnf + (size_t)b * vit_num_prefix(&m->cfg) * m->cfg.dim;
}

/* With the quantized copies in their one scratch (vit_acts.qs), recomputes the copy at point
 * p of block l just before the backward reads it, from the quantizer's kept input
 * (hooks->reforward, see model_hooks); kept copies need nothing. */
static int requant(vit_model *m, int l, qpoint p, float *out, const float *in, int64_t rows,
                   int cols, char *err, size_t errlen) {
    const model_hooks *h = m->hooks;
    if (!m->acts->qs) return 0;
    if (h->reforward(h->ctx, l, p, out, in, rows, cols)) {
        snprintf(err, errlen, "quantizer at point %d of layer %d failed", (int)p, l);
        return -1;
    }
    return 0;
}

/* Backward of block l: on entry a->dres is d(block output), on exit d(block input). */
static int block_backward(vit_model *m, int l, const float *x, int B, char *err, size_t errlen) {
    DIMS;
    vit_acts *a = m->acts;
    const vit_params *p = &m->params;
    vit_params *g = &m->grads;
    size_t nA = (size_t)B * NH * T * T;
    block_acts k = block_slot(m, l, B);
    /* the norm and GELU outputs: kept per block, or recomputed now into their one slot (the
     * same code on the same inputs: the same bits), but for the last block, whose values the
     * forward left there (the backward starts with it); the quantized copies likewise, each
     * just before its use (requant) */
    if (a->rslots != c->depth && l != c->depth - 1) {
        layernorm_forward(k.ln1, k.ln1_mean, k.ln1_rstd, x, p->ln1_w + (size_t)l * C,
                          p->ln1_b + (size_t)l * C, (int)BT, C, c->ln_eps);
        layernorm_forward(k.ln2, k.ln2_mean, k.ln2_rstd, k.res1, p->ln2_w + (size_t)l * C,
                          p->ln2_b + (size_t)l * C, (int)BT, C, c->ln_eps);
        gelu_forward(k.fchg, k.fch, BT * H);
    }

    /* res2 = res1 + fc2(gelu(fc1(norm2(res1)))) */
    if (requant(m, l, QP_FC2_IN, k.fchgq, k.fchg, BT, H, err, errlen)) return -1;
    memset(a->dH, 0, sizeof(float) * BT * H);
    matmul_backward(a->dH, g->fc2_w + (size_t)l * C * H, g->fc2_b + (size_t)l * C, a->dres,
                    k.fchgq, p->fc2_w + (size_t)l * C * H, (int)BT, H, C);
    hook_bwd(m, l, QP_FC2_IN, a->dH, k.fchg, BT, H);
    memset(a->dH2, 0, sizeof(float) * BT * H);
    gelu_backward(a->dH2, k.fch, a->dH, BT * H);
    if (requant(m, l, QP_FC1_IN, k.ln2q, k.ln2, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * BT * C);
    matmul_backward(a->dC, g->fc1_w + (size_t)l * H * C, g->fc1_b + (size_t)l * H, a->dH2,
                    k.ln2q, p->fc1_w + (size_t)l * H * C, (int)BT, C, H);
    hook_bwd(m, l, QP_FC1_IN, a->dC, k.ln2, BT, C);
    layernorm_backward(a->dres, g->ln2_w + (size_t)l * C, g->ln2_b + (size_t)l * C, a->dC,
                       k.res1, p->ln2_w + (size_t)l * C, k.ln2_mean,
                       k.ln2_rstd, (int)BT, C);
    /* res1 = x + proj(attention(qkv(norm1(x)))) */
    if (requant(m, l, QP_PROJ_IN, k.attyq, k.atty, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * BT * C);
    matmul_backward(a->dC, g->proj_w + (size_t)l * C * C, g->proj_b + (size_t)l * C, a->dres,
                    k.attyq, p->proj_w + (size_t)l * C * C, (int)BT, C, C);
    hook_bwd(m, l, QP_PROJ_IN, a->dC, k.atty, BT, C);
    if (requant(m, l, QP_QKV_OUT, k.qkvq, k.qkv, BT, 3 * C, err, errlen) ||
        requant(m, l, QP_ATTN, k.attq, k.att, (int64_t)B * NH * T, T, err, errlen))
        return -1;
    memset(a->datt, 0, sizeof(float) * nA);
    memset(a->dqkv, 0, sizeof(float) * BT * 3 * C);
    attention_value_backward(a->datt, a->dqkv, a->dC, k.attq, k.qkvq, B, T, C, NH);
    hook_bwd(m, l, QP_ATTN, a->datt, k.att, (int64_t)B * NH * T, T);
    attention_softmax_backward(a->dqkv, a->datt, k.att, k.qkvq, B, T, C, NH);
    hook_bwd(m, l, QP_QKV_OUT, a->dqkv, k.qkv, BT, 3 * C);
    if (requant(m, l, QP_QKV_IN, k.ln1q, k.ln1, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * BT * C);
    matmul_backward(a->dC, g->qkv_w + (size_t)l * 3 * C * C, g->qkv_b + (size_t)l * 3 * C,
                    a->dqkv, k.ln1q, p->qkv_w + (size_t)l * 3 * C * C, (int)BT, C, 3 * C);
    hook_bwd(m, l, QP_QKV_IN, a->dC, k.ln1, BT, C);
    layernorm_backward(a->dres, g->ln1_w + (size_t)l * C, g->ln1_b + (size_t)l * C, a->dC, x,
                       p->ln1_w + (size_t)l * C, k.ln1_mean, k.ln1_rstd, (int)BT, C);
    return 0;
}

int vit_backward(vit_model *m, const float *dlogits, const float *dfeature, float *dimages,
                 char *err, size_t errlen) {
    if (!m->acts || !m->grad_mem) {
        snprintf(err, errlen, "vit_backward needs a forward pass and gradients first");
        return -1;
    }
    if (m->acts->slots != m->cfg.depth) {
        snprintf(err, errlen, "vit_backward: the last pass was forward-only (vit_forward_infer)");
        return -1;
    }
    if (m->qwt_w) {
        snprintf(err, errlen, "vit_backward: QwT compensation is forward-only");
        return -1;
    }
    vit_acts *a = m->acts;
    int B = a->B;
    DIMS;
    const vit_params *p = &m->params;
    vit_params *g = &m->grads;

    /* head */
    memset(a->dpre, 0, sizeof(float) * B * pf * C);
    if (!c->distilled) {
        matmul_backward(a->dpre, g->head_w, g->head_b, dlogits, a->lnfq, p->head_w, B, C, K);
    } else {
        memset(a->dhout, 0, sizeof(float) * B * pf * K);
        memset(a->dhoutd, 0, sizeof(float) * B * pf * K);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < K; k++) {
                a->dhout[(size_t)b * pf * K + k] = 0.5f * dlogits[(size_t)b * K + k];
                a->dhoutd[((size_t)b * pf + 1) * K + k] = 0.5f * dlogits[(size_t)b * K + k];
            }
        matmul_backward(a->dpre, g->head_w, g->head_b, a->dhout, a->lnfq, p->head_w, B * pf, C, K);
        matmul_backward(a->dpre, g->headd_w, g->headd_b, a->dhoutd, a->lnfq, p->headd_w, B * pf, C,
                        K);
    }
    hook_bwd(m, -1, QP_HEAD_IN, a->dpre, a->lnf, (int64_t)B * pf, C);
    if (dfeature)
        for (int b = 0; b < B; b++)
            axpy(a->dpre + (size_t)b * pf * C, 1.0f, dfeature + (size_t)b * C, C);
    /* final norm on the prefix rows: the patch tokens of the last block get no gradient */
    memset(a->dres, 0, sizeof(float) * BT * C);
    memset(a->dC, 0, sizeof(float) * B * pf * C);
    layernorm_backward(a->dC, g->norm_w, g->norm_b, a->dpre, a->pre, p->norm_w, a->lnf_mean,
                       a->lnf_rstd, B * pf, C);
    for (int b = 0; b < B; b++)
        memcpy(a->dres + (size_t)b * T * C, a->dC + (size_t)b * pf * C, sizeof(float) * pf * C);

    for (int l = c->depth - 1; l >= 0; l--)
        if (block_backward(m, l, l ? a->res2 + (size_t)(l - 1) * BT * C : a->x0, B, err, errlen))
            return -1;

    /* embedding: dres is now d x0 */
    for (int b = 0; b < B; b++) {
        const float *d = a->dres + (size_t)b * T * C;
        axpy(g->cls_token, 1.0f, d, C);
        if (c->distilled) axpy(g->dist_token, 1.0f, d + C, C);
        axpy(g->pos_embed, 1.0f, d, (size_t)T * C);
        memcpy(a->dtok + (size_t)b * np * C, d + (size_t)pf * C, sizeof(float) * np * C);
    }
    if (dimages) memset(a->dcols, 0, sizeof(float) * B * np * Pd);
    matmul_backward(dimages ? a->dcols : NULL, g->patch_w, g->patch_b, a->dtok, a->colsq,
                    p->patch_w, B * np, Pd, C);
    if (dimages) {
        hook_bwd(m, -1, QP_PATCH_IN, a->dcols, a->cols, (int64_t)B * np, Pd);
        im2col_backward(dimages, a->dcols, B, c->in_chans, c->img_size, c->patch);
    }
    return 0;
}

int vit_embed_forward(vit_model *m, float *x, const float *images, int B, char *err, size_t errlen) {
    if (acts_ensure(m, B, 1, err, errlen)) return -1;
    return embed_forward(m, x, images, B, err, errlen);
}

int vit_block_forward(vit_model *m, int l, float *y, const float *x, int B, char *err,
                      size_t errlen) {
    if (acts_ensure(m, B, 1, err, errlen)) return -1;
    if (block_forward(m, l, x, B, err, errlen)) return -1;
    size_t BT = (size_t)B * vit_num_tokens(&m->cfg);
    /* layer l's slot of res2 is laid out for this B, as block_forward wrote it */
    memcpy(y, block_out(m, l, BT), sizeof(float) * BT * m->cfg.dim);
    return 0;
}

int vit_head_forward(vit_model *m, float *logits, const float *x, int B, char *err, size_t errlen) {
    if (acts_ensure(m, B, 1, err, errlen)) return -1;
    return head_forward(m, logits, x, B, err, errlen);
}

double vit_forward_flops(const vit_config *c) {
    double C = c->dim, H = c->mlp_hidden, T = vit_num_tokens(c), np = T - vit_num_prefix(c);
    double Pd = (double)c->in_chans * c->patch * c->patch;
    double block = 2 * T * C * 3 * C + 2 * 2 * T * T * C + 2 * T * C * C + 2 * 2 * T * C * H;
    return 2 * np * Pd * C + c->depth * block + 2 * C * c->num_classes * (c->distilled ? 4 : 1);
}
