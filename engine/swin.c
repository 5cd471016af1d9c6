/*
 * swin.c: the Swin Transformer forward and backward passes on the ops of ops.h and swin_ops.h.
 * See swin.h for the design; the comments here say what each buffer holds and why it is kept.
 *
 * A block runs its norms, MLP and residuals on tokens in raster order and its attention on
 * windows: norm1's output is gathered into windows (the cyclic shift folded into the gather),
 * qkv, the scores, the softmax, att v and proj run window by window (each linear as one GEMM
 * over every window of the batch), and proj's output is scattered back onto the residual.
 */
#include "engine/swin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/swin_ops.h"

/* ---- configuration ---- */

int swin_num_blocks(const swin_config *c) {
    int n = 0;
    for (int s = 0; s < c->stages; s++) n += c->depths[s];
    return n;
}

int swin_block_stage(const swin_config *c, int l) {
    for (int s = 0; s < c->stages; s++) {
        if (l < c->depths[s]) return s;
        l -= c->depths[s];
    }
    return -1;
}

int swin_stage_dim(const swin_config *c, int s) { return c->embed_dim << s; }
int swin_stage_res(const swin_config *c, int s) { return (c->img_size / c->patch) >> s; }

int swin_stage_window(const swin_config *c, int s) {
    int r = swin_stage_res(c, s);
    return r <= c->window ? r : c->window;
}

/* The first block of stage s. */
static int stage_first(const swin_config *c, int s) {
    int n = 0;
    for (int i = 0; i < s; i++) n += c->depths[i];
    return n;
}

int swin_block_shift(const swin_config *c, int l) {
    int s = swin_block_stage(c, l);
    /* timm's _calc_window_shift: no shift where the window covers the map */
    if (swin_stage_res(c, s) <= c->window) return 0;
    return (l - stage_first(c, s)) % 2 ? c->window / 2 : 0;
}

int swin_config_check(const swin_config *c, char *err, size_t errlen) {
    char why[160] = "";
    if (c->img_size <= 0 || c->patch <= 0 || c->img_size % c->patch)
        snprintf(why, sizeof why, "img_size must be a positive multiple of patch");
    else if (c->in_chans <= 0 || c->in_chans > 3)
        snprintf(why, sizeof why, "in_chans must be 1, 2 or 3");
    else if (c->stages < 1 || c->stages > SWIN_MAX_STAGES)
        snprintf(why, sizeof why, "stages must be 1 .. %d", SWIN_MAX_STAGES);
    else if (c->embed_dim <= 0 || c->window <= 0 || c->mlp_ratio <= 0)
        snprintf(why, sizeof why, "embed_dim, window and mlp_ratio must be positive");
    else if (c->num_classes <= 0)
        snprintf(why, sizeof why, "num_classes must be positive");
    else if (!(c->ln_eps > 0))
        snprintf(why, sizeof why, "ln_eps must be positive");
    for (int s = 0; !why[0] && s < c->stages; s++) {
        int r = (c->img_size / c->patch) >> s, w = r <= c->window ? r : c->window;
        if (s > 0 && ((c->img_size / c->patch) >> (s - 1)) % 2)
            snprintf(why, sizeof why, "stage %d's resolution %d is odd before a merge", s - 1,
                     (c->img_size / c->patch) >> (s - 1));
        else if (r <= 0)
            snprintf(why, sizeof why, "stage %d has no tokens", s);
        else if (r % w)
            snprintf(why, sizeof why, "stage %d's resolution %d is not a multiple of its window %d",
                     s, r, w);
        else if (c->depths[s] <= 0 || c->heads[s] <= 0)
            snprintf(why, sizeof why, "stage %d needs a positive depth and heads", s);
        else if ((c->embed_dim << s) % c->heads[s])
            snprintf(why, sizeof why, "stage %d's dim %d is not a multiple of its heads %d", s,
                     c->embed_dim << s, c->heads[s]);
    }
    if (why[0]) {
        snprintf(err, errlen, "bad model config: %s (img_size %d, patch %d, embed_dim %d, "
                 "stages %d, window %d)", why, c->img_size, c->patch, c->embed_dim, c->stages,
                 c->window);
        return -1;
    }
    return 0;
}

/* ---- parameters ---- */

/* What a tensor is, for the initialization. */
enum { T_LINEAR, T_TABLE, T_BIAS, T_NORM_W, T_NORM_B, T_CONV_W, T_CONV_B };

#define MAX_TENSORS (8 + SWIN_MAX_STAGES * 16)
#define NAME_MAX_LEN 64

/* Walks the tensors in storage order: fills info (names written into names, NAME_MAX_LEN bytes
 * each) and kinds when given, points p into mem when given. Returns the tensor count; *total
 * gets the floats. */
static int layout(const swin_config *c, param_info *info, char *names, int *kinds,
                  swin_params *p, float *mem, size_t *total) {
    int n = 0;
    size_t off = 0;
    /* one tensor: pointer slot, name (name_, a printf pattern given the stage; names without a
     * stage end in %.0d, which prints nothing for 0), per-layer depth or 0, kind, shape */
#define T(ptr_, stage_, layers_, kind_, nd_, ...)                                               \
    do {                                                                                        \
        int64_t sh_[4] = {__VA_ARGS__};                                                         \
        size_t numel_ = (layers_) ? (size_t)(layers_) : 1;                                      \
        for (int d_ = 0; d_ < (nd_); d_++) numel_ *= (size_t)sh_[d_];                           \
        if (info) {                                                                             \
            param_info *pi_ = &info[n];                                                         \
            char *nm_ = names + (size_t)n * NAME_MAX_LEN;                                       \
            snprintf(nm_, NAME_MAX_LEN, name_, stage_);                                         \
            pi_->name = nm_;                                                                    \
            pi_->per_layer = (layers_) ? 1 : 0;                                                 \
            pi_->layers = (layers_) ? (layers_) : 1;                                            \
            pi_->ndim = (nd_);                                                                  \
            for (int d_ = 0; d_ < 4; d_++) pi_->shape[d_] = d_ < (nd_) ? sh_[d_] : 0;           \
            pi_->numel = numel_;                                                                \
            pi_->offset = off;                                                                  \
            pi_->decay = (kind_) == T_LINEAR || (kind_) == T_CONV_W;                            \
        }                                                                                       \
        if (kinds) kinds[n] = (kind_);                                                          \
        if (p) (ptr_) = mem + off;                                                              \
        off += numel_;                                                                          \
        n++;                                                                                    \
    } while (0)
    swin_params dummy, *q = p ? p : &dummy;
    const char *name_;
    int64_t C0 = c->embed_dim, P = c->patch, Ci = c->in_chans, K = c->num_classes;
    name_ = "patch_embed.proj.weight%.0d"; T(q->patch_w, 0, 0, T_CONV_W, 4, C0, Ci, P, P);
    name_ = "patch_embed.proj.bias%.0d"; T(q->patch_b, 0, 0, T_CONV_B, 1, C0);
    name_ = "patch_embed.norm.weight%.0d"; T(q->patch_norm_w, 0, 0, T_NORM_W, 1, C0);
    name_ = "patch_embed.norm.bias%.0d"; T(q->patch_norm_b, 0, 0, T_NORM_B, 1, C0);
    if (p) memset(p->stage, 0, sizeof p->stage);
    for (int s = 0; s < c->stages; s++) {
        swin_stage_params *st = &q->stage[s];
        int64_t C = C0 << s, Cp = C / 2, D = c->depths[s], NH = c->heads[s];
        int64_t H = (int64_t)c->mlp_ratio * C, w = swin_stage_window(c, s);
        int64_t nb = (2 * w - 1) * (2 * w - 1);
        if (s > 0) {
            name_ = "layers.%d.downsample.norm.weight";
            T(st->merge_norm_w, s, 0, T_NORM_W, 1, 4 * Cp);
            name_ = "layers.%d.downsample.norm.bias";
            T(st->merge_norm_b, s, 0, T_NORM_B, 1, 4 * Cp);
            name_ = "layers.%d.downsample.reduction.weight";
            T(st->merge_w, s, 0, T_LINEAR, 2, C, 4 * Cp);
        }
        name_ = "layers.%d.blocks.{}.norm1.weight"; T(st->ln1_w, s, D, T_NORM_W, 1, C);
        name_ = "layers.%d.blocks.{}.norm1.bias"; T(st->ln1_b, s, D, T_NORM_B, 1, C);
        name_ = "layers.%d.blocks.{}.attn.relative_position_bias_table";
        T(st->bias_table, s, D, T_TABLE, 2, nb, NH);
        name_ = "layers.%d.blocks.{}.attn.qkv.weight"; T(st->qkv_w, s, D, T_LINEAR, 2, 3 * C, C);
        name_ = "layers.%d.blocks.{}.attn.qkv.bias"; T(st->qkv_b, s, D, T_BIAS, 1, 3 * C);
        name_ = "layers.%d.blocks.{}.attn.proj.weight"; T(st->proj_w, s, D, T_LINEAR, 2, C, C);
        name_ = "layers.%d.blocks.{}.attn.proj.bias"; T(st->proj_b, s, D, T_BIAS, 1, C);
        name_ = "layers.%d.blocks.{}.norm2.weight"; T(st->ln2_w, s, D, T_NORM_W, 1, C);
        name_ = "layers.%d.blocks.{}.norm2.bias"; T(st->ln2_b, s, D, T_NORM_B, 1, C);
        name_ = "layers.%d.blocks.{}.mlp.fc1.weight"; T(st->fc1_w, s, D, T_LINEAR, 2, H, C);
        name_ = "layers.%d.blocks.{}.mlp.fc1.bias"; T(st->fc1_b, s, D, T_BIAS, 1, H);
        name_ = "layers.%d.blocks.{}.mlp.fc2.weight"; T(st->fc2_w, s, D, T_LINEAR, 2, C, H);
        name_ = "layers.%d.blocks.{}.mlp.fc2.bias"; T(st->fc2_b, s, D, T_BIAS, 1, C);
    }
    int64_t CL = C0 << (c->stages - 1);
    name_ = "norm.weight%.0d"; T(q->norm_w, 0, 0, T_NORM_W, 1, CL);
    name_ = "norm.bias%.0d"; T(q->norm_b, 0, 0, T_NORM_B, 1, CL);
    name_ = "head.fc.weight%.0d"; T(q->head_w, 0, 0, T_LINEAR, 2, K, CL);
    name_ = "head.fc.bias%.0d"; T(q->head_b, 0, 0, T_BIAS, 1, K);
#undef T
    *total = off;
    return n;
}

int swin_init(swin_model *m, const swin_config *cfg, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (swin_config_check(cfg, err, errlen)) return -1;
    m->cfg = *cfg;
    size_t total;
    int n = layout(cfg, NULL, NULL, NULL, NULL, NULL, &total);
    /* the names live in the same allocation, after the entries */
    m->info = calloc(1, (size_t)n * (sizeof(param_info) + NAME_MAX_LEN));
    m->param_mem = calloc(total, sizeof(float));
    if (!m->info || !m->param_mem) {
        free(m->info);
        free(m->param_mem);
        memset(m, 0, sizeof *m);
        snprintf(err, errlen, "out of memory for %zu parameters", total);
        return -1;
    }
    m->ninfo = layout(cfg, m->info, (char *)(m->info + n), NULL, &m->params, m->param_mem,
                      &m->num_params);
    return 0;
}

static void acts_free(swin_acts *a);

void swin_free(swin_model *m) {
    free(m->param_mem);
    free(m->grad_mem);
    free(m->info);
    acts_free(m->acts);
    memset(m, 0, sizeof *m);
}

int swin_clone(swin_model *dst, const swin_model *src, char *err, size_t errlen) {
    if (swin_init(dst, &src->cfg, err, errlen)) return -1;
    memcpy(dst->param_mem, src->param_mem, sizeof(float) * src->num_params);
    return 0;
}

int swin_alloc_grads(swin_model *m, char *err, size_t errlen) {
    if (m->grad_mem) return 0;
    m->grad_mem = calloc(m->num_params, sizeof(float));
    if (!m->grad_mem) {
        snprintf(err, errlen, "out of memory for gradients");
        return -1;
    }
    size_t total;
    layout(&m->cfg, NULL, NULL, NULL, &m->grads, m->grad_mem, &total);
    return 0;
}

void swin_zero_grad(swin_model *m) {
    if (m->grad_mem) memset(m->grad_mem, 0, m->num_params * sizeof(float));
}

void swin_init_weights(swin_model *m, uint64_t seed) {
    int kinds[MAX_TENSORS];
    size_t total;
    layout(&m->cfg, NULL, NULL, kinds, NULL, NULL, &total);
    rng_t r;
    rng_seed(&r, seed);
    int fan_in = m->cfg.in_chans * m->cfg.patch * m->cfg.patch;
    float bound = 1.0f / sqrtf((float)fan_in);
    for (int i = 0; i < m->ninfo; i++) {
        float *w = m->param_mem + m->info[i].offset;
        size_t n = m->info[i].numel;
        for (size_t j = 0; j < n; j++) switch (kinds[i]) {
            case T_LINEAR: case T_TABLE: w[j] = rng_trunc_normal(&r, .02f, -2, 2); break;
            case T_NORM_W: w[j] = 1.0f; break;
            /* the patch conv keeps PyTorch's Conv2d default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            case T_CONV_W: case T_CONV_B: w[j] = (2 * rng_uniform(&r) - 1) * bound; break;
            default: w[j] = 0.0f;
            }
    }
}

int swin_param_lookup(const swin_model *m, const char *name, int *layer) {
    for (int i = 0; i < m->ninfo; i++) {
        const param_info *pi = &m->info[i];
        if (!pi->per_layer) {
            if (!strcmp(name, pi->name)) { *layer = -1; return i; }
            continue;
        }
        /* "layers.S.blocks.{}.rest": the prefix, a decimal index in range, then the rest */
        const char *brace = strstr(pi->name, "{}");
        size_t pre = (size_t)(brace - pi->name);
        if (strncmp(name, pi->name, pre)) continue;
        const char *s = name + pre;
        if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) continue;
        long l = 0;
        while (*s >= '0' && *s <= '9' && l < 100000) l = l * 10 + (*s++ - '0');
        if (l >= pi->layers || strcmp(s, brace + 2)) continue;
        *layer = (int)l;
        return i;
    }
    return -1;
}

/* ---- activations ---- */

/* One block's activations (see swin_acts.infer and .qslots for which are its own). Tokens are
 * raster (B, T, C) or windowed (B * nW, N, C); BT = B * T rows either way. */
typedef struct {
    float *ln1_mean, *ln1_rstd; /* (BT) norm1's statistics, raster order */
    float *ln1;                 /* (BT, C) norm1's output, windowed: qkv's input */
    float *qkv;                 /* (BT, 3C) windowed */
    float *att;                 /* (B * nW, NH, N, N) softmax output */
    float *atty;                /* (BT, C) att v, windowed: proj's input */
    float *res1;                /* (BT, C) raster, x + attention branch */
    float *ln2_mean, *ln2_rstd; /* (BT) */
    float *ln2;                 /* (BT, C) */
    float *fch, *fchg;          /* (BT, H) fc1 output, GELU output */
    /* the quantized copies of ln1, qkv, att, atty, ln2, fchg (aliases without hooks) */
    float *ln1q, *qkvq, *attq, *attyq, *ln2q, *fchgq;
    float *out;                 /* (BT, C) raster, the block's output */
} block_acts;
#define BLOCK_MAIN 12
#define BLOCK_Q 6
_Static_assert(sizeof(block_acts) == (BLOCK_MAIN + BLOCK_Q + 1) * sizeof(float *),
               "block_acts is its pointers, main tensors then quantized copies then out");
/* the main tensor each quantized copy copies */
static const int q_of[BLOCK_Q] = {2, 3, 4, 5, 9, 11};
/* 1 for the main tensors the backward can recompute (swin_set_recompute): ln1, ln2, fchg */
static int recomputable(int f) { return f == 2 || f == 9 || f == 11; }

/* Sizes of block_acts' main tensors for stage s. */
static void block_sizes(const swin_config *c, int s, int B, size_t sz[BLOCK_MAIN]) {
    size_t C = swin_stage_dim(c, s), R = swin_stage_res(c, s), w = swin_stage_window(c, s);
    size_t BT = (size_t)B * R * R, H = (size_t)c->mlp_ratio * C, NH = c->heads[s], N = w * w;
    size_t t[BLOCK_MAIN] = {BT, BT, BT * C, BT * 3 * C, BT * NH * N, BT * C, BT * C, BT, BT,
                            BT * C, BT * H, BT * H};
    memcpy(sz, t, sizeof t);
}

typedef struct {
    float *cat;             /* (B * T, 4Cp) the gathered 2x2 neighbourhoods (T of this stage) */
    float *ln, *mean, *rstd, *lnq; /* (B * T, 4Cp), (B * T) x2, (B * T, 4Cp) norm and its copy */
    float *out;             /* (B * T, C) the stage's input */
} merge_acts;

struct swin_acts {
    int B, quant;
    int infer;           /* 0: every block has buffers of its own, for a forward the backward
                            can follow; 1: laid out for forward-only passes, where every block
                            uses one slot sized for the largest stage and block outputs
                            alternate between two, so that a block's input survives its own
                            forward for the residual and QwT */
    int qslots;          /* slots of quantized copies: L, or 1 when the backward recomputes
                            them (hooks->reforward) or for a forward-only pass; the one slot is
                            a single scratch (qs) that each copy takes in turn, the moment the
                            last one is dead (vit.c's vit_acts.qslots) */
    int rslots;          /* slots of ln1, ln2 and fchg: L, or 1 when the backward recomputes
                            them (swin_model.recompute) or for a forward-only pass */
    float *mem;
    float *qs;           /* the quantized copies' one slot (qslots 1), else NULL */
    int *relidx[SWIN_MAX_STAGES]; /* (N, N) relative position index of stage s's window */
    float *mask[SWIN_MAX_STAGES]; /* (nW, N, N) shift mask, stages that shift; else NULL */
    /* embedding */
    float *cols, *colsq;  /* (B * T0, Pd) im2col'ed image and its quantized copy */
    float *tok;           /* (B * T0, C0) the patch conv's output, patch_embed.norm's input */
    float *pe_mean, *pe_rstd; /* (B * T0) */
    float *x0;            /* (B * T0, C0) stage 0's input */
    merge_acts merge[SWIN_MAX_STAGES]; /* s >= 1 */
    block_acts *blk;      /* L entries */
    /* head */
    float *lnf, *lnf_mean, *lnf_rstd; /* (B * TL, CL), (B * TL) x2: the final norm */
    float *pool, *poolq;  /* (B, CL) mean of the final norm (the feature), its quantized copy */
    float *logits;        /* (B, K) */
    /* scratch, sized for the largest stage, reused block after block */
    float *xs;            /* (B T C) raster: norm1's output before the gather; its gradient */
    float *pw;            /* (B T C) windowed: proj's output; its gradient */
    float *rpb, *drpb;    /* (NH, N, N) the gathered relative position bias; its gradient */
    float *dres;          /* (B T C) gradient of the residual stream */
    float *dC, *dC2;      /* (B T C) */
    float *dqkv;          /* (B T 3C) */
    float *datt;          /* (B nW NH N N) */
    float *dH, *dH2;      /* (B T H) */
    float *dpool;         /* (B, CL) */
    float *dcols;         /* (B * T0, Pd) */
};

static void acts_free(swin_acts *a) {
    if (!a) return;
    free(a->mem);
    free(a->blk);
    free(a->relidx[0]);
    free(a);
}

/* Hands out 64-byte aligned pieces of one allocation; a first pass with base NULL counts. */
typedef struct { float *base; size_t off; } arena;
static float *take(arena *A, size_t n) {
    float *p = A->base ? A->base + A->off : NULL;
    A->off += (n + 15) & ~(size_t)15;
    return p;
}

static int qslots_for(const swin_model *m, const model_hooks *hooks, int infer) {
    return infer || (hooks && hooks->reforward) ? 1 : swin_num_blocks(&m->cfg);
}

static int rslots_for(const swin_model *m, int infer) {
    return infer || m->recompute ? 1 : swin_num_blocks(&m->cfg);
}

/* 1 if a's training layout is not the one m now asks for. */
static int acts_stale(const swin_model *m, const swin_acts *a) {
    return a->quant != (m->hooks != NULL) ||
           (!a->infer &&
            (a->qslots != qslots_for(m, m->hooks, 0) || a->rslots != rslots_for(m, 0)));
}

/* Points every buffer of a into A (see arena). */
static void acts_layout(swin_acts *a, const swin_config *c, int B, arena *A) {
    int L = swin_num_blocks(c), S = c->stages, quant = a->quant;
    size_t T0 = (size_t)swin_stage_res(c, 0) * swin_stage_res(c, 0), C0 = c->embed_dim;
    size_t Pd = (size_t)c->in_chans * c->patch * c->patch, K = c->num_classes;
    size_t TL = (size_t)swin_stage_res(c, S - 1) * swin_stage_res(c, S - 1);
    size_t CL = swin_stage_dim(c, S - 1);
    size_t mx[BLOCK_MAIN] = {0}, sz[BLOCK_MAIN], bigN = 0;
    for (int s = 0; s < S; s++) {
        block_sizes(c, s, B, sz);
        for (int f = 0; f < BLOCK_MAIN; f++) mx[f] = sz[f] > mx[f] ? sz[f] : mx[f];
        size_t w = swin_stage_window(c, s), NNH = w * w * w * w * c->heads[s];
        bigN = NNH > bigN ? NNH : bigN;
    }
    size_t bigBTC = mx[2], bigBTH = mx[10];
    for (int s = 0; s < S; s++) {
        a->mask[s] = NULL;
        int R = swin_stage_res(c, s), w = swin_stage_window(c, s);
        if (R > c->window && c->depths[s] > 1)
            a->mask[s] = take(A, (size_t)(R / w) * (R / w) * w * w * w * w);
    }
    a->cols = take(A, B * T0 * Pd);
    a->colsq = quant ? take(A, B * T0 * Pd) : a->cols;
    a->tok = take(A, B * T0 * C0);
    a->pe_mean = take(A, B * T0);
    a->pe_rstd = take(A, B * T0);
    a->x0 = take(A, B * T0 * C0);
    for (int s = 1; s < S; s++) {
        merge_acts *g = &a->merge[s];
        size_t T = (size_t)swin_stage_res(c, s) * swin_stage_res(c, s);
        size_t C4 = 2 * (size_t)swin_stage_dim(c, s), C = swin_stage_dim(c, s);
        g->cat = take(A, B * T * C4);
        g->ln = take(A, B * T * C4);
        g->mean = take(A, B * T);
        g->rstd = take(A, B * T);
        g->lnq = quant ? take(A, B * T * C4) : g->ln;
        g->out = take(A, B * T * C);
    }
    /* blocks: their own slots, or one shared slot of the largest sizes */
    float *shared[BLOCK_MAIN + BLOCK_Q], *outs[2];
    if (a->infer) {
        for (int f = 0; f < BLOCK_MAIN; f++) shared[f] = take(A, mx[f]);
        outs[0] = take(A, bigBTC);
        outs[1] = take(A, bigBTC);
    } else if (a->rslots == 1) {
        for (int f = 0; f < BLOCK_MAIN; f++)
            if (recomputable(f)) shared[f] = take(A, mx[f]);
    }
    a->qs = NULL;
    if (quant && a->qslots == 1) {
        /* ln1q, qkvq, attyq, ln2q, fchgq at the start, attq beside qkvq (see qslots) */
        size_t at3 = (mx[3] + 15) & ~(size_t)15;
        a->qs = take(A, at3 + mx[4] > mx[10] ? at3 + mx[4] : mx[10]);
        for (int f = 0; f < BLOCK_Q; f++)
            shared[BLOCK_MAIN + f] = A->base ? a->qs + (q_of[f] == 4 ? at3 : 0) : NULL;
    }
    for (int l = 0; l < L; l++) {
        float **k = (float **)&a->blk[l]; /* its fields, in order */
        block_sizes(c, swin_block_stage(c, l), B, sz);
        for (int f = 0; f < BLOCK_MAIN; f++)
            k[f] = a->infer || (a->rslots == 1 && recomputable(f)) ? shared[f] : take(A, sz[f]);
        for (int f = 0; f < BLOCK_Q; f++)
            k[BLOCK_MAIN + f] = !quant ? k[q_of[f]]
                                : a->qslots == 1 ? shared[BLOCK_MAIN + f] : take(A, sz[q_of[f]]);
        k[BLOCK_MAIN + BLOCK_Q] = a->infer ? outs[l % 2] : take(A, sz[2]);
    }
    a->lnf = take(A, B * TL * CL);
    a->lnf_mean = take(A, B * TL);
    a->lnf_rstd = take(A, B * TL);
    a->pool = take(A, B * CL);
    a->poolq = quant ? take(A, B * CL) : a->pool;
    a->logits = take(A, B * K);
    a->xs = take(A, bigBTC);
    a->pw = take(A, bigBTC);
    a->rpb = take(A, bigN);
    a->drpb = take(A, bigN);
    a->dres = take(A, bigBTC);
    a->dC = take(A, bigBTC);
    a->dC2 = take(A, bigBTC);
    a->dqkv = take(A, mx[3]);
    a->datt = take(A, mx[4]);
    a->dH = take(A, bigBTH);
    a->dH2 = take(A, bigBTH);
    a->dpool = take(A, B * CL);
    a->dcols = take(A, B * T0 * Pd);
}

/* (Re)allocates activations for B images, for a pass the backward can follow (infer = 0) or a
 * forward-only one (infer = 1: one block's worth); keeps them if big enough and of the right
 * kind (a training allocation serves a forward-only pass too). */
static int acts_ensure(swin_model *m, int B, int infer, char *err, size_t errlen) {
    const swin_config *c = &m->cfg;
    int L = swin_num_blocks(c), quant = m->hooks != NULL;
    if (m->acts && m->acts_batch >= B && m->acts->quant == quant &&
        (infer || (!m->acts->infer && !acts_stale(m, m->acts))))
        return 0;
    acts_free(m->acts);
    m->acts = NULL;
    m->acts_batch = 0;
    m->logits = NULL;
    swin_acts *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->B = B;
    a->quant = quant;
    a->infer = infer;
    a->qslots = qslots_for(m, m->hooks, infer);
    a->rslots = rslots_for(m, infer);
    a->blk = calloc((size_t)L, sizeof *a->blk);
    size_t nidx = 0;
    for (int s = 0; s < c->stages; s++) {
        size_t w = swin_stage_window(c, s);
        nidx += w * w * w * w;
    }
    a->relidx[0] = malloc(sizeof(int) * nidx);
    if (!a->blk || !a->relidx[0]) goto oom;
    arena A = {0};
    acts_layout(a, c, B, &A);
    A.base = aligned_alloc(64, A.off * sizeof(float));
    if (!A.base) goto oom;
    a->mem = A.base;
    A.off = 0;
    acts_layout(a, c, B, &A);
    /* what depends on the config only: the relative position indices and shift masks */
    int *idx = a->relidx[0];
    for (int s = 0; s < c->stages; s++) {
        int R = swin_stage_res(c, s), w = swin_stage_window(c, s);
        a->relidx[s] = idx;
        swin_relpos_index(idx, w);
        idx += (size_t)w * w * w * w;
        if (a->mask[s]) swin_shift_mask(a->mask[s], R, w, c->window / 2);
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

void swin_set_hooks(swin_model *m, const model_hooks *hooks) {
    m->hooks = hooks;
    /* activations of another kind (plain or quantized; copies kept or recomputed) go */
    if (m->acts && acts_stale(m, m->acts)) swin_release_acts(m);
}

void swin_set_recompute(swin_model *m, int on) {
    m->recompute = on != 0;
    if (m->acts && acts_stale(m, m->acts)) swin_release_acts(m);
}

void swin_release_acts(swin_model *m) {
    acts_free(m->acts);
    m->acts = NULL;
    m->acts_batch = 0;
    m->logits = NULL;
}

/* ---- forward ---- */

/* Runs the forward hook at point p if hooks are installed (else the copy is an alias). */
static int hook_fwd(swin_model *m, int layer, qpoint p, float *out, const float *in,
                    int64_t rows, int cols, char *err, size_t errlen) {
    if (!m->hooks) return 0;
    if (m->hooks->forward(m->hooks->ctx, layer, p, out, in, rows, cols)) {
        snprintf(err, errlen, "quantizer at point %d of layer %d failed", (int)p, layer);
        return -1;
    }
    return 0;
}

static void hook_bwd(swin_model *m, int layer, qpoint p, float *d, const float *in,
                     int64_t rows, int cols) {
    if (m->hooks) m->hooks->backward(m->hooks->ctx, layer, p, d, d, in, rows, cols);
}

/* Block l's shapes for a batch of B. */
typedef struct {
    int s, C, H, NH, R, w, N, nW, Bw, shift;
    size_t BT;
} bdims;

static bdims block_dims(const swin_config *c, int l, int B) {
    bdims d;
    d.s = swin_block_stage(c, l);
    d.C = swin_stage_dim(c, d.s);
    d.H = c->mlp_ratio * d.C;
    d.NH = c->heads[d.s];
    d.R = swin_stage_res(c, d.s);
    d.w = swin_stage_window(c, d.s);
    d.N = d.w * d.w;
    d.nW = (d.R / d.w) * (d.R / d.w);
    d.Bw = B * d.nW;
    d.shift = swin_block_shift(c, l);
    d.BT = (size_t)B * d.R * d.R;
    return d;
}

/* Block l's parameters (or gradients) inside its stage's stacks. */
typedef struct {
    float *ln1_w, *ln1_b, *table, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b;
    float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} block_params;

static block_params block_params_of(const swin_config *c, const swin_params *p, int l) {
    int s = swin_block_stage(c, l);
    size_t j = (size_t)(l - stage_first(c, s)), C = swin_stage_dim(c, s);
    size_t H = (size_t)c->mlp_ratio * C, w = swin_stage_window(c, s);
    size_t nb = (2 * w - 1) * (2 * w - 1) * c->heads[s];
    const swin_stage_params *st = &p->stage[s];
    return (block_params){
        .ln1_w = st->ln1_w + j * C, .ln1_b = st->ln1_b + j * C, .table = st->bias_table + j * nb,
        .qkv_w = st->qkv_w + j * 3 * C * C, .qkv_b = st->qkv_b + j * 3 * C,
        .proj_w = st->proj_w + j * C * C, .proj_b = st->proj_b + j * C,
        .ln2_w = st->ln2_w + j * C, .ln2_b = st->ln2_b + j * C,
        .fc1_w = st->fc1_w + j * H * C, .fc1_b = st->fc1_b + j * H,
        .fc2_w = st->fc2_w + j * C * H, .fc2_b = st->fc2_b + j * C,
    };
}

static int embed_forward(swin_model *m, float *x, const float *images, int B, char *err,
                         size_t errlen) {
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    const swin_params *p = &m->params;
    int T0 = swin_stage_res(c, 0) * swin_stage_res(c, 0), C0 = c->embed_dim;
    int Pd = c->in_chans * c->patch * c->patch;
    im2col_forward(a->cols, images, B, c->in_chans, c->img_size, c->patch);
    if (hook_fwd(m, -1, QP_PATCH_IN, a->colsq, a->cols, (int64_t)B * T0, Pd, err, errlen))
        return -1;
    matmul_forward(a->tok, a->colsq, p->patch_w, p->patch_b, B * T0, Pd, C0);
    layernorm_forward(x, a->pe_mean, a->pe_rstd, a->tok, p->patch_norm_w, p->patch_norm_b,
                      B * T0, C0, c->ln_eps);
    return 0;
}

/* Stage s's PatchMerging of x (the previous stage's tokens) into a->merge[s].out. */
static int merge_forward(swin_model *m, int s, const float *x, int B, char *err, size_t errlen) {
    const swin_config *c = &m->cfg;
    merge_acts *g = &m->acts->merge[s];
    const swin_stage_params *st = &m->params.stage[s];
    int Rp = swin_stage_res(c, s - 1), Cp = swin_stage_dim(c, s - 1), C = swin_stage_dim(c, s);
    int BT = B * swin_stage_res(c, s) * swin_stage_res(c, s);
    swin_merge_gather_forward(g->cat, x, B, Rp, Cp);
    layernorm_forward(g->ln, g->mean, g->rstd, g->cat, st->merge_norm_w, st->merge_norm_b, BT,
                      4 * Cp, c->ln_eps);
    if (hook_fwd(m, s, QP_MERGE_IN, g->lnq, g->ln, BT, 4 * Cp, err, errlen)) return -1;
    matmul_forward(g->out, g->lnq, st->merge_w, NULL, BT, 4 * Cp, C);
    return 0;
}

/* Block l on x (B, T, C) raster; its output lands in a->blk[l].out. */
static int block_forward(swin_model *m, int l, const float *x, int B, char *err, size_t errlen) {
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    bdims d = block_dims(c, l, B);
    block_params p = block_params_of(c, &m->params, l);
    block_acts *k = &a->blk[l];
    int C = d.C, H = d.H, BT = (int)d.BT;

    /* attention on windows of norm1(x), shifted */
    layernorm_forward(a->xs, k->ln1_mean, k->ln1_rstd, x, p.ln1_w, p.ln1_b, BT, C, c->ln_eps);
    swin_window_partition_forward(k->ln1, a->xs, B, d.R, C, d.w, d.shift);
    if (hook_fwd(m, l, QP_QKV_IN, k->ln1q, k->ln1, BT, C, err, errlen)) return -1;
    matmul_forward(k->qkv, k->ln1q, p.qkv_w, p.qkv_b, BT, C, 3 * C);
    if (hook_fwd(m, l, QP_QKV_OUT, k->qkvq, k->qkv, BT, 3 * C, err, errlen)) return -1;
    swin_relpos_bias_forward(a->rpb, p.table, a->relidx[d.s], d.N, d.NH);
    swin_attention_softmax_forward(k->att, k->qkvq, a->rpb, d.shift ? a->mask[d.s] : NULL, d.Bw,
                                   d.nW, d.N, C, d.NH);
    if (hook_fwd(m, l, QP_ATTN, k->attq, k->att, (int64_t)d.Bw * d.NH * d.N, d.N, err, errlen))
        return -1;
    attention_value_forward(k->atty, k->attq, k->qkvq, d.Bw, d.N, C, d.NH);
    if (hook_fwd(m, l, QP_PROJ_IN, k->attyq, k->atty, BT, C, err, errlen)) return -1;
    matmul_forward(a->pw, k->attyq, p.proj_w, p.proj_b, BT, C, C);
    /* res1 = x + the windows put back and shifted back */
    memcpy(k->res1, x, sizeof(float) * d.BT * C);
    swin_window_partition_backward(k->res1, a->pw, B, d.R, C, d.w, d.shift);

    /* MLP */
    layernorm_forward(k->ln2, k->ln2_mean, k->ln2_rstd, k->res1, p.ln2_w, p.ln2_b, BT, C,
                      c->ln_eps);
    if (hook_fwd(m, l, QP_FC1_IN, k->ln2q, k->ln2, BT, C, err, errlen)) return -1;
    matmul_forward(k->fch, k->ln2q, p.fc1_w, p.fc1_b, BT, C, H);
    gelu_forward(k->fchg, k->fch, d.BT * H);
    if (hook_fwd(m, l, QP_FC2_IN, k->fchgq, k->fchg, BT, H, err, errlen)) return -1;
    matmul_forward(k->out, k->fchgq, p.fc2_w, p.fc2_b, BT, H, C);
    axpy(k->out, 1.0f, k->res1, d.BT * C);
    if (m->qwt_w && m->qwt_w[l]) {
        /* QwT: out += x W^T + b, the block's linear correction (forward only; dC is free) */
        matmul_forward(a->dC, x, m->qwt_w[l], m->qwt_b[l], BT, C, C);
        axpy(k->out, 1.0f, a->dC, d.BT * C);
    }
    return 0;
}

static int head_forward(swin_model *m, float *logits, const float *x, int B, char *err,
                        size_t errlen) {
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    const swin_params *p = &m->params;
    int S = c->stages, T = swin_stage_res(c, S - 1) * swin_stage_res(c, S - 1);
    int C = swin_stage_dim(c, S - 1);
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, x, p->norm_w, p->norm_b, B * T, C,
                      c->ln_eps);
    swin_mean_pool_forward(a->pool, a->lnf, B, T, C);
    if (hook_fwd(m, -1, QP_HEAD_IN, a->poolq, a->pool, B, C, err, errlen)) return -1;
    matmul_forward(logits, a->poolq, p->head_w, p->head_b, B, C, c->num_classes);
    return 0;
}

static int forward(swin_model *m, const float *images, int B, int infer, char *err,
                   size_t errlen) {
    if (acts_ensure(m, B, infer, err, errlen)) return -1;
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    a->B = B;
    if (embed_forward(m, a->x0, images, B, err, errlen)) return -1;
    const float *x = a->x0;
    for (int s = 0, l = 0; s < c->stages; s++) {
        if (s > 0) {
            if (merge_forward(m, s, x, B, err, errlen)) return -1;
            x = a->merge[s].out;
        }
        for (int j = 0; j < c->depths[s]; j++, l++) {
            if (block_forward(m, l, x, B, err, errlen)) return -1;
            x = a->blk[l].out;
        }
    }
    return head_forward(m, a->logits, x, B, err, errlen);
}

int swin_forward(swin_model *m, const float *images, int B, char *err, size_t errlen) {
    return forward(m, images, B, 0, err, errlen);
}

int swin_forward_infer(swin_model *m, const float *images, int B, char *err, size_t errlen) {
    return forward(m, images, B, 1, err, errlen);
}

const float *swin_feature(const swin_model *m, int b) {
    return m->acts->pool + (size_t)b * swin_stage_dim(&m->cfg, m->cfg.stages - 1);
}

/* ---- backward ---- */

/* With the quantized copies in their one scratch (swin_acts.qs), recomputes the copy at point
 * p of block l just before the backward reads it (vit.c's requant). */
static int requant(swin_model *m, int l, qpoint p, float *out, const float *in, int64_t rows,
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
static int block_backward(swin_model *m, int l, const float *x, int B, char *err, size_t errlen) {
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    bdims d = block_dims(c, l, B);
    block_params p = block_params_of(c, &m->params, l), g = block_params_of(c, &m->grads, l);
    const block_acts *k = &a->blk[l];
    int C = d.C, H = d.H, BT = (int)d.BT, L = swin_num_blocks(c);
    /* the norm and GELU outputs: kept per block, or recomputed now into their one slot (the
     * same code on the same inputs: the same bits), but for the last block, whose values the
     * forward left there (the backward starts with it); the quantized copies likewise, each
     * just before its use (requant) */
    if (a->rslots != L && l != L - 1) {
        layernorm_forward(a->xs, k->ln1_mean, k->ln1_rstd, x, p.ln1_w, p.ln1_b, BT, C, c->ln_eps);
        swin_window_partition_forward(k->ln1, a->xs, B, d.R, C, d.w, d.shift);
        layernorm_forward(k->ln2, k->ln2_mean, k->ln2_rstd, k->res1, p.ln2_w, p.ln2_b, BT, C,
                          c->ln_eps);
        gelu_forward(k->fchg, k->fch, d.BT * H);
    }

    /* out = res1 + fc2(gelu(fc1(norm2(res1)))) */
    if (requant(m, l, QP_FC2_IN, k->fchgq, k->fchg, BT, H, err, errlen)) return -1;
    memset(a->dH, 0, sizeof(float) * d.BT * H);
    matmul_backward(a->dH, g.fc2_w, g.fc2_b, a->dres, k->fchgq, p.fc2_w, BT, H, C);
    hook_bwd(m, l, QP_FC2_IN, a->dH, k->fchg, BT, H);
    memset(a->dH2, 0, sizeof(float) * d.BT * H);
    gelu_backward(a->dH2, k->fch, a->dH, d.BT * H);
    if (requant(m, l, QP_FC1_IN, k->ln2q, k->ln2, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * d.BT * C);
    matmul_backward(a->dC, g.fc1_w, g.fc1_b, a->dH2, k->ln2q, p.fc1_w, BT, C, H);
    hook_bwd(m, l, QP_FC1_IN, a->dC, k->ln2, BT, C);
    layernorm_backward(a->dres, g.ln2_w, g.ln2_b, a->dC, k->res1, p.ln2_w, k->ln2_mean,
                       k->ln2_rstd, BT, C);

    /* res1 = x + unshift(reverse(proj(attention(qkv(partition(shift(norm1(x)))))))) */
    swin_window_partition_forward(a->pw, a->dres, B, d.R, C, d.w, d.shift);
    if (requant(m, l, QP_PROJ_IN, k->attyq, k->atty, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * d.BT * C);
    matmul_backward(a->dC, g.proj_w, g.proj_b, a->pw, k->attyq, p.proj_w, BT, C, C);
    hook_bwd(m, l, QP_PROJ_IN, a->dC, k->atty, BT, C);
    size_t nA = d.BT * d.NH * d.N;
    if (requant(m, l, QP_QKV_OUT, k->qkvq, k->qkv, BT, 3 * C, err, errlen) ||
        requant(m, l, QP_ATTN, k->attq, k->att, (int64_t)d.Bw * d.NH * d.N, d.N, err, errlen))
        return -1;
    memset(a->datt, 0, sizeof(float) * nA);
    memset(a->dqkv, 0, sizeof(float) * d.BT * 3 * C);
    attention_value_backward(a->datt, a->dqkv, a->dC, k->attq, k->qkvq, d.Bw, d.N, C, d.NH);
    hook_bwd(m, l, QP_ATTN, a->datt, k->att, (int64_t)d.Bw * d.NH * d.N, d.N);
    attention_softmax_backward(a->dqkv, a->datt, k->att, k->qkvq, d.Bw, d.N, C, d.NH);
    /* datt now holds d scores, which is also d(bias + mask) of every window */
    memset(a->drpb, 0, sizeof(float) * d.NH * d.N * d.N);
    swin_attention_bias_backward(a->drpb, a->datt, d.Bw, d.N, d.NH);
    swin_relpos_bias_backward(g.table, a->drpb, a->relidx[d.s], d.N, d.NH);
    hook_bwd(m, l, QP_QKV_OUT, a->dqkv, k->qkv, BT, 3 * C);
    if (requant(m, l, QP_QKV_IN, k->ln1q, k->ln1, BT, C, err, errlen)) return -1;
    memset(a->dC, 0, sizeof(float) * d.BT * C);
    matmul_backward(a->dC, g.qkv_w, g.qkv_b, a->dqkv, k->ln1q, p.qkv_w, BT, C, 3 * C);
    hook_bwd(m, l, QP_QKV_IN, a->dC, k->ln1, BT, C);
    memset(a->xs, 0, sizeof(float) * d.BT * C);
    swin_window_partition_backward(a->xs, a->dC, B, d.R, C, d.w, d.shift);
    layernorm_backward(a->dres, g.ln1_w, g.ln1_b, a->xs, x, p.ln1_w, k->ln1_mean, k->ln1_rstd,
                       BT, C);
    return 0;
}

/* Backward of stage s's merge: on entry a->dres is d(merge output), on exit d(its input), the
 * previous stage's tokens (the gather and the norm need only what the merge kept). */
static void merge_backward(swin_model *m, int s, int B) {
    const swin_config *c = &m->cfg;
    swin_acts *a = m->acts;
    merge_acts *k = &a->merge[s];
    const swin_stage_params *st = &m->params.stage[s];
    swin_stage_params *gt = &m->grads.stage[s];
    int Rp = swin_stage_res(c, s - 1), Cp = swin_stage_dim(c, s - 1), C = swin_stage_dim(c, s);
    int BT = B * swin_stage_res(c, s) * swin_stage_res(c, s);
    size_t n4 = (size_t)BT * 4 * Cp;
    memset(a->dC, 0, sizeof(float) * n4);
    matmul_backward(a->dC, gt->merge_w, NULL, a->dres, k->lnq, st->merge_w, BT, 4 * Cp, C);
    hook_bwd(m, s, QP_MERGE_IN, a->dC, k->ln, BT, 4 * Cp);
    memset(a->dC2, 0, sizeof(float) * n4);
    layernorm_backward(a->dC2, gt->merge_norm_w, gt->merge_norm_b, a->dC, k->cat, st->merge_norm_w,
                       k->mean, k->rstd, BT, 4 * Cp);
    memset(a->dres, 0, sizeof(float) * n4); /* B Rp^2 Cp = B T 4Cp */
    swin_merge_gather_backward(a->dres, a->dC2, B, Rp, Cp);
}

int swin_backward(swin_model *m, const float *dlogits, const float *dfeature, float *dimages,
                  char *err, size_t errlen) {
    const swin_config *c = &m->cfg;
    int L = swin_num_blocks(c), S = c->stages;
    if (!m->acts || !m->grad_mem) {
        snprintf(err, errlen, "swin_backward needs a forward pass and gradients first");
        return -1;
    }
    if (m->acts->infer) {
        snprintf(err, errlen, "swin_backward: the last pass was forward-only (swin_forward_infer)");
        return -1;
    }
    if (m->qwt_w) {
        snprintf(err, errlen, "swin_backward: QwT compensation is forward-only");
        return -1;
    }
    swin_acts *a = m->acts;
    int B = a->B, K = c->num_classes;
    const swin_params *p = &m->params;
    swin_params *g = &m->grads;

    /* head: logits = head(hook(mean(norm(x)))) */
    int TL = swin_stage_res(c, S - 1) * swin_stage_res(c, S - 1), CL = swin_stage_dim(c, S - 1);
    memset(a->dpool, 0, sizeof(float) * B * CL);
    matmul_backward(a->dpool, g->head_w, g->head_b, dlogits, a->poolq, p->head_w, B, CL, K);
    hook_bwd(m, -1, QP_HEAD_IN, a->dpool, a->pool, B, CL);
    if (dfeature) axpy(a->dpool, 1.0f, dfeature, (size_t)B * CL);
    memset(a->dC, 0, sizeof(float) * B * TL * CL);
    swin_mean_pool_backward(a->dC, a->dpool, B, TL, CL);
    memset(a->dres, 0, sizeof(float) * B * TL * CL);
    layernorm_backward(a->dres, g->norm_w, g->norm_b, a->dC, a->blk[L - 1].out, p->norm_w,
                       a->lnf_mean, a->lnf_rstd, B * TL, CL);

    for (int s = S - 1; s >= 0; s--) {
        int first = stage_first(c, s);
        for (int l = first + c->depths[s] - 1; l >= first; l--) {
            const float *x = l > first ? a->blk[l - 1].out : s ? a->merge[s].out : a->x0;
            if (block_backward(m, l, x, B, err, errlen)) return -1;
        }
        if (s > 0) merge_backward(m, s, B);
    }

    /* embedding: dres is now d x0 */
    int T0 = swin_stage_res(c, 0) * swin_stage_res(c, 0), C0 = c->embed_dim;
    int Pd = c->in_chans * c->patch * c->patch;
    memset(a->dC, 0, sizeof(float) * B * T0 * C0);
    layernorm_backward(a->dC, g->patch_norm_w, g->patch_norm_b, a->dres, a->tok, p->patch_norm_w,
                       a->pe_mean, a->pe_rstd, B * T0, C0);
    if (dimages) memset(a->dcols, 0, sizeof(float) * B * T0 * Pd);
    matmul_backward(dimages ? a->dcols : NULL, g->patch_w, g->patch_b, a->dC, a->colsq,
                    p->patch_w, B * T0, Pd, C0);
    if (dimages) {
        hook_bwd(m, -1, QP_PATCH_IN, a->dcols, a->cols, (int64_t)B * T0, Pd);
        im2col_backward(dimages, a->dcols, B, c->in_chans, c->img_size, c->patch);
    }
    return 0;
}

/* ---- block-level access ---- */

int swin_embed_forward(swin_model *m, float *x, const float *images, int B, char *err,
                       size_t errlen) {
    if (acts_ensure(m, B, 1, err, errlen)) return -1;
    return embed_forward(m, x, images, B, err, errlen);
}

int swin_merge_forward(swin_model *m, int s, float *y, const float *x, int B, char *err,
                       size_t errlen) {
    if (s < 1 || s >= m->cfg.stages) {
        snprintf(err, errlen, "swin_merge_forward: no merge at stage %d", s);
        return -1;
    }
    if (acts_ensure(m, B, 1, err, errlen) || merge_forward(m, s, x, B, err, errlen)) return -1;
    size_t n = (size_t)B * swin_stage_res(&m->cfg, s) * swin_stage_res(&m->cfg, s) *
               swin_stage_dim(&m->cfg, s);
    memcpy(y, m->acts->merge[s].out, sizeof(float) * n);
    return 0;
}

int swin_block_forward(swin_model *m, int l, float *y, const float *x, int B, char *err,
                       size_t errlen) {
    if (l < 0 || l >= swin_num_blocks(&m->cfg)) {
        snprintf(err, errlen, "swin_block_forward: no block %d", l);
        return -1;
    }
    if (acts_ensure(m, B, 1, err, errlen) || block_forward(m, l, x, B, err, errlen)) return -1;
    bdims d = block_dims(&m->cfg, l, B);
    memcpy(y, m->acts->blk[l].out, sizeof(float) * d.BT * d.C);
    return 0;
}

int swin_head_forward(swin_model *m, float *logits, const float *x, int B, char *err,
                      size_t errlen) {
    if (acts_ensure(m, B, 1, err, errlen)) return -1;
    return head_forward(m, logits, x, B, err, errlen);
}

double swin_forward_flops(const swin_config *c) {
    double T0 = (double)swin_stage_res(c, 0) * swin_stage_res(c, 0);
    double f = 2 * T0 * c->in_chans * c->patch * c->patch * c->embed_dim;
    for (int s = 0; s < c->stages; s++) {
        double R = swin_stage_res(c, s), T = R * R, C = swin_stage_dim(c, s);
        double H = (double)c->mlp_ratio * C, w = swin_stage_window(c, s), N = w * w;
        if (s > 0) f += 2 * T * (2 * C) * C; /* the merge's reduction, 4Cp = 2C inputs */
        /* qkv, q k^T and att v over windows of N tokens, proj, fc1, fc2 */
        f += c->depths[s] *
             (2 * T * C * 3 * C + 2 * 2 * T * N * C + 2 * T * C * C + 2 * 2 * T * C * H);
    }
    return f + 2.0 * swin_stage_dim(c, c->stages - 1) * c->num_classes;
}
