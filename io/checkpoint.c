/*
 * checkpoint.c: name maps between the engine's timm layout and the HuggingFace and torchvision
 * conventions, config inference from shapes, and loading and saving. See checkpoint.h.
 */
#include "io/checkpoint.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/swin_names.h"

const char *ckpt_convention_name(ckpt_convention c) {
    return c == CKPT_HF ? "huggingface" : c == CKPT_TORCHVISION ? "torchvision"
         : c == CKPT_TIMM_LEGACY ? "timm < 0.9" : "timm";
}

/* Source name patterns per engine tensor, in param_info order; "{}" is the block index and,
 * for HuggingFace's split attention, "{qkv}" stands for query, key and value, concatenated
 * along the first axis (they are the thirds of timm's qkv). NULL: the convention has no such
 * tensor (a model that needs it cannot come from that convention). */
static const char *const hf_names[VIT_NUM_PARAM_TENSORS] = {
    "vit.embeddings.patch_embeddings.projection.weight",
    "vit.embeddings.patch_embeddings.projection.bias",
    "vit.embeddings.cls_token",
    NULL,
    "vit.embeddings.position_embeddings",
    "vit.encoder.layer.{}.layernorm_before.weight",
    "vit.encoder.layer.{}.layernorm_before.bias",
    "vit.encoder.layer.{}.attention.attention.{qkv}.weight",
    "vit.encoder.layer.{}.attention.attention.{qkv}.bias",
    "vit.encoder.layer.{}.attention.output.dense.weight",
    "vit.encoder.layer.{}.attention.output.dense.bias",
    "vit.encoder.layer.{}.layernorm_after.weight",
    "vit.encoder.layer.{}.layernorm_after.bias",
    "vit.encoder.layer.{}.intermediate.dense.weight",
    "vit.encoder.layer.{}.intermediate.dense.bias",
    "vit.encoder.layer.{}.output.dense.weight",
    "vit.encoder.layer.{}.output.dense.bias",
    "vit.layernorm.weight",
    "vit.layernorm.bias",
    "classifier.weight",
    "classifier.bias",
    NULL,
    NULL,
};

static const char *const tv_names[VIT_NUM_PARAM_TENSORS] = {
    "conv_proj.weight",
    "conv_proj.bias",
    "class_token",
    NULL,
    "encoder.pos_embedding",
    "encoder.layers.encoder_layer_{}.ln_1.weight",
    "encoder.layers.encoder_layer_{}.ln_1.bias",
    "encoder.layers.encoder_layer_{}.self_attention.in_proj_weight",
    "encoder.layers.encoder_layer_{}.self_attention.in_proj_bias",
    "encoder.layers.encoder_layer_{}.self_attention.out_proj.weight",
    "encoder.layers.encoder_layer_{}.self_attention.out_proj.bias",
    "encoder.layers.encoder_layer_{}.ln_2.weight",
    "encoder.layers.encoder_layer_{}.ln_2.bias",
    "encoder.layers.encoder_layer_{}.mlp.0.weight",
    "encoder.layers.encoder_layer_{}.mlp.0.bias",
    "encoder.layers.encoder_layer_{}.mlp.3.weight",
    "encoder.layers.encoder_layer_{}.mlp.3.bias",
    "encoder.ln.weight",
    "encoder.ln.bias",
    "heads.head.weight",
    "heads.head.bias",
    NULL,
    NULL,
};

/* Older torchvision releases named the MLP's linears linear_1 and linear_2. */
static const char *tv_alias(const char *name, char *buf, size_t n) {
    const char *p;
    if ((p = strstr(name, ".mlp.0.")) || (p = strstr(name, ".mlp.3."))) {
        snprintf(buf, n, "%.*s.mlp.linear_%c.%s", (int)(p - name), name, p[5] == '0' ? '1' : '2',
                 p + 7);
        return buf;
    }
    return NULL;
}

static void expand(char *out, size_t n, const char *pattern, int layer, const char *qkv) {
    char tmp[256];
    const char *b = strstr(pattern, "{}");
    if (b) snprintf(tmp, sizeof tmp, "%.*s%d%s", (int)(b - pattern), pattern, layer, b + 2);
    else snprintf(tmp, sizeof tmp, "%s", pattern);
    const char *q = strstr(tmp, "{qkv}");
    if (q) snprintf(out, n, "%.*s%s%s", (int)(q - tmp), tmp, qkv, q + 5);
    else snprintf(out, n, "%s", tmp);
}

static const char *src_pattern(ckpt_convention c, int i) {
    if (c == CKPT_HF) return hf_names[i];
    if (c == CKPT_TORCHVISION) return tv_names[i];
    return NULL; /* timm: the engine's own name */
}

static const st_tensor *find_tensor(const st_file *f, ckpt_convention c, const char *name) {
    const st_tensor *t = st_find(f, name);
    char alt[256];
    if (!t && c == CKPT_TORCHVISION && tv_alias(name, alt, sizeof alt)) t = st_find(f, alt);
    return t;
}

/* The source name of engine tensor i at layer l (part: 0..2 for HF's q, k, v). */
static void source_name(char *out, size_t n, const vit_model *m, ckpt_convention c, int i, int l,
                        int part) {
    static const char *const qkv[3] = {"query", "key", "value"};
    const char *pat = src_pattern(c, i);
    expand(out, n, pat ? pat : m->info[i].name, l, qkv[part]);
}

static int count_blocks(const st_file *f, const char *prefix) {
    int depth = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < f->ntensors; i++) {
        const char *s = f->tensors[i].name;
        if (strncmp(s, prefix, pl) || s[pl] < '0' || s[pl] > '9') continue;
        int l = atoi(s + pl);
        if (l >= 0 && l < 10000 && l + 1 > depth) depth = l + 1;
    }
    return depth;
}

/* Reads a metadata value that is a JSON array of numbers or "a,b,c" into v (up to 3). */
static int meta_floats(const st_file *f, const char *key, float *v, int n) {
    const char *s = st_meta(f, key);
    if (!s) return 0;
    int k = 0;
    const char *p = s;
    while (*p && k < n) {
        while (*p == '[' || *p == ' ' || *p == ',') p++;
        char *end;
        double x = strtod(p, &end);
        if (end == p) break;
        v[k++] = (float)x;
        p = end;
    }
    for (int i = k; i > 0 && i < n; i++) v[i] = v[k - 1];
    return k > 0;
}

static int meta_int(const st_file *f, const char *key, int *out) {
    const char *s = st_meta(f, key);
    if (!s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0 || v > 1 << 20) return 0;
    *out = (int)v;
    return 1;
}

/* "not a ViT checkpoint ...": what a timm ViT would need and is not in f, and what f has
 * instead. */
static void say_not_a_vit(const st_file *f, char *err, size_t errlen) {
    static const char *const want[] = {"patch_embed.proj.weight", "patch_embed.proj.bias",
                                       "cls_token", "pos_embed", "blocks.0.norm1.weight",
                                       "blocks.0.attn.qkv.weight", "norm.weight", "head.weight"};
    st_say_not(f, "not a ViT checkpoint in timm, HuggingFace or torchvision naming", want,
               (int)(sizeof want / sizeof want[0]), err, errlen);
}

/* The naming convention of f, told by the name of its patch embedding. */
static int detect_convention(const st_file *f, ckpt_convention *c, char *err, size_t errlen) {
    if (st_find(f, "patch_embed.proj.weight")) *c = CKPT_TIMM;
    else if (st_find(f, hf_names[0])) *c = CKPT_HF;
    else if (st_find(f, tv_names[0])) *c = CKPT_TORCHVISION;
    else {
        /* Matches nothing: say what a timm ViT would need and what is there instead. */
        say_not_a_vit(f, err, errlen);
        return -1;
    }
    return 0;
}

/* The geometry from the shapes of the patch embedding, the positions, the first MLP and the
 * head, and the depth from the highest block index, all under convention c's names. */
static int config_from_shapes(const st_file *f, ckpt_convention c, vit_config *cfg, char *err,
                              size_t errlen) {
    const char *pname = c == CKPT_TIMM ? "patch_embed.proj.weight" : src_pattern(c, 0);
    const char *posn = c == CKPT_TIMM ? "pos_embed" : src_pattern(c, 4);
    const char *fc1n = c == CKPT_TIMM ? "blocks.0.mlp.fc1.weight"
                     : c == CKPT_HF   ? "vit.encoder.layer.0.intermediate.dense.weight"
                                      : "encoder.layers.encoder_layer_0.mlp.0.weight";
    const char *headn = c == CKPT_TIMM ? "head.weight" : src_pattern(c, 19);
    const char *blockp = c == CKPT_TIMM ? "blocks." : c == CKPT_HF ? "vit.encoder.layer."
                                                                   : "encoder.layers.encoder_layer_";
    const st_tensor *pw = st_find(f, pname), *pos = st_find(f, posn);
    const st_tensor *fc1 = find_tensor(f, c, fc1n), *head = st_find(f, headn);
    const char *what = !pos ? posn : !fc1 ? fc1n : !head ? headn : NULL;
    if (what) {
        snprintf(err, errlen, "%s checkpoint without '%s'", ckpt_convention_name(c), what);
        return -1;
    }
    if (pw->ndim != 4 || pw->shape[2] != pw->shape[3] || pos->ndim != 3 || pos->shape[0] != 1 ||
        fc1->ndim != 2 || head->ndim != 2) {
        snprintf(err, errlen, "%s checkpoint: unexpected ranks of %s, %s, %s or %s",
                 ckpt_convention_name(c), pname, posn, fc1n, headn);
        return -1;
    }
    cfg->dim = (int)pw->shape[0];
    cfg->in_chans = (int)pw->shape[1];
    cfg->patch = (int)pw->shape[2];
    cfg->distilled = c == CKPT_TIMM && st_find(f, "dist_token") != NULL;
    int np = (int)pos->shape[1] - vit_num_prefix(cfg);
    int grid = (int)lround(sqrt(np > 0 ? np : 0));
    if (np <= 0 || grid * grid != np) {
        snprintf(err, errlen, "%s: %lld positions do not make a square grid of patches plus %d "
                 "prefix token(s)", posn, (long long)pos->shape[1], vit_num_prefix(cfg));
        return -1;
    }
    cfg->img_size = grid * cfg->patch;
    cfg->depth = count_blocks(f, blockp);
    cfg->mlp_hidden = (int)fc1->shape[0];
    cfg->num_classes = (int)head->shape[0];
    return 0;
}

/* What the shapes do not tell (layer norm epsilon, heads, input normalization): the file's
 * metadata first, then the hints, then the convention's or ImageNet's defaults. */
static void config_from_meta(const st_file *f, const ckpt_hints *hints, ckpt_convention c,
                             vit_config *cfg) {
    cfg->ln_eps = c == CKPT_HF ? 1e-12f : 1e-6f;
    const char *eps = st_meta(f, "ln_eps");
    if (eps && atof(eps) > 0) cfg->ln_eps = (float)atof(eps);
    if (!meta_int(f, "num_heads", &cfg->heads)) {
        if (hints && hints->num_heads > 0) cfg->heads = hints->num_heads;
        else cfg->heads = cfg->dim >= 64 ? cfg->dim / 64 : 1;
    }
    static const float inet_mean[3] = {0.485f, 0.456f, 0.406f}, inet_std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(cfg->mean, inet_mean, sizeof inet_mean);
    memcpy(cfg->std, inet_std, sizeof inet_std);
    if (hints && hints->have_norm) {
        memcpy(cfg->mean, hints->mean, sizeof cfg->mean);
        memcpy(cfg->std, hints->std, sizeof cfg->std);
    }
    meta_floats(f, "mean", cfg->mean, 3);
    meta_floats(f, "std", cfg->std, 3);
}

/* ckpt_infer for the ViT family. */
static int vit_infer(const st_file *f, const ckpt_hints *hints, vit_config *cfg,
                     ckpt_convention *conv, char *err, size_t errlen) {
    ckpt_convention c;
    if (detect_convention(f, &c, err, errlen) || config_from_shapes(f, c, cfg, err, errlen))
        return -1;
    if (hints && hints->img_size > 0 && hints->img_size != cfg->img_size) {
        snprintf(err, errlen, "the checkpoint's position embedding is for %d px images, not the "
                 "%d px asked for (img_size)", cfg->img_size, hints->img_size);
        return -1;
    }
    config_from_meta(f, hints, c, cfg);
    *conv = c;
    return vit_config_check(cfg, err, errlen);
}

/* A Swin file, by the names only one family has: HuggingFace's swin.* or timm's stages
 * (layers.N); anything else is treated as a ViT (whose loader lists what it lacks). */
static int looks_swin(const st_file *f) {
    for (int i = 0; i < f->ntensors; i++) {
        const char *n = f->tensors[i].name;
        if (!strncmp(n, "swin.", 5) || (!strncmp(n, "layers.", 7) && n[7] >= '0' && n[7] <= '9'))
            return 1;
    }
    return 0;
}

/* ckpt_infer for the Swin family: naming and geometry from names and shapes (swin_names), the
 * image size from the metadata or the hints, the rest as for a ViT. */
static int swin_infer(const st_file *f, const ckpt_hints *hints, swin_config *cfg,
                      ckpt_convention *conv, char *err, size_t errlen) {
    int img = 0;
    if (!meta_int(f, "img_size", &img) && hints && hints->img_size > 0) img = hints->img_size;
    if (img <= 0) {
        snprintf(err, errlen, "a Swin checkpoint that does not say its image size: give it "
                 "(--img-size, or img_size when uploading)");
        return -1;
    }
    swin_naming n;
    if (swin_names_infer(f, img, cfg, &n, err, errlen)) return -1;
    cfg->img_size = img;
    const char *eps = st_meta(f, "ln_eps");
    if (eps && atof(eps) > 0) cfg->ln_eps = (float)atof(eps);
    if (hints && hints->have_norm) {
        memcpy(cfg->mean, hints->mean, sizeof cfg->mean);
        memcpy(cfg->std, hints->std, sizeof cfg->std);
    }
    meta_floats(f, "mean", cfg->mean, 3);
    meta_floats(f, "std", cfg->std, 3);
    *conv = n == SWIN_NAMING_HF ? CKPT_HF : n == SWIN_NAMING_TIMM_OLD ? CKPT_TIMM_LEGACY : CKPT_TIMM;
    return swin_config_check(cfg, err, errlen);
}

int ckpt_infer(const st_file *f, const ckpt_hints *hints, model_config *cfg,
               ckpt_convention *conv, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    ckpt_convention c;
    cfg->arch = looks_swin(f) ? MODEL_SWIN : MODEL_VIT;
    if (cfg->arch == MODEL_SWIN ? swin_infer(f, hints, &cfg->swin, &c, err, errlen)
                                : vit_infer(f, hints, &cfg->vit, &c, err, errlen))
        return -1;
    if (conv) *conv = c;
    return 0;
}

static int shape_is(const st_tensor *t, const param_info *pi, int rows_div) {
    if (t->ndim != pi->ndim) return 0;
    for (int d = 0; d < pi->ndim; d++)
        if (t->shape[d] != (d == 0 ? pi->shape[0] / rows_div : pi->shape[d])) return 0;
    return 1;
}

static void shape_str(char *out, size_t n, const int64_t *s, int nd) {
    size_t len = 0;
    out[0] = 0;
    for (int d = 0; d < nd && len + 2 < n; d++) {
        snprintf(out + len, n - len, "%s%lld", d ? ", " : "[", (long long)s[d]);
        len = strlen(out);
    }
    snprintf(out + len, n - len, nd ? "]" : "[]");
}

/* The source names not found, for the message: the first 64 kept, all counted. */
typedef struct {
    const char **names;   /* (64) into buf */
    char (*buf)[256];     /* (64) */
    int n;
} missing_names;

static void note_missing(missing_names *ms, const char *name) {
    if (ms->n < 64) {
        snprintf(ms->buf[ms->n], 256, "%s", name);
        ms->names[ms->n] = ms->buf[ms->n];
    }
    ms->n++;
}

/* "tensor 'name' has shape [...], the model needs [...]": t against engine tensor pi, whose
 * first axis is split in parts. */
static void say_wrong_shape(char *err, size_t errlen, const char *name, const st_tensor *t,
                            const param_info *pi, int parts) {
    char got[96], want[96];
    int64_t ws[4];
    memcpy(ws, pi->shape, sizeof ws);
    ws[0] /= parts;
    shape_str(got, sizeof got, t->shape, t->ndim);
    shape_str(want, sizeof want, ws, pi->ndim);
    snprintf(err, errlen, "tensor '%s' has shape %s, the model needs %s", name, got, want);
}

/* Engine tensor i of m from f in convention c: for each layer (and each of HuggingFace's q, k
 * and v) the source tensor by its mapped name, marked used, its shape checked and, unless the
 * hints only check, its values copied into place. Names not found go to ms. */
static int load_param(vit_model *m, const st_file *f, ckpt_convention c, int i,
                      const ckpt_hints *hints, char *used, missing_names *ms, char *err,
                      size_t errlen) {
    const param_info *pi = &m->info[i];
    int layers = pi->layers;
    size_t per = pi->numel / layers;
    int parts = (c == CKPT_HF && strstr(hf_names[i], "{qkv}")) ? 3 : 1;
    for (int l = 0; l < layers; l++)
        for (int part = 0; part < parts; part++) {
            char name[256];
            source_name(name, sizeof name, m, c, i, l, part);
            const st_tensor *t = find_tensor(f, c, name);
            if (!t) {
                note_missing(ms, name);
                continue;
            }
            used[t - f->tensors] = 1;
            if (!shape_is(t, pi, parts)) {
                say_wrong_shape(err, errlen, name, t, pi, parts);
                return -1;
            }
            if (!(hints && hints->check_only))
                st_to_f32(t, m->param_mem + pi->offset + l * per + part * (per / parts));
        }
    return 0;
}

/* A tensor of f that no engine tensor took is an error, unless the hints allow extras. */
static int check_unused(const st_file *f, const char *used, const ckpt_hints *hints,
                        ckpt_convention c, char *err, size_t errlen) {
    int nun = 0;
    const char *un[64];
    for (int i = 0; i < f->ntensors; i++)
        if (!used[i] && nun < 64) un[nun++] = f->tensors[i].name;
    if (nun && !(hints && hints->allow_extra)) {
        snprintf(err, errlen, "%s checkpoint has tensors this ViT does not use: ",
                 ckpt_convention_name(c));
        st_list_names(err, errlen, un, nun);
        return -1;
    }
    return 0;
}

/* ckpt_load_file for the ViT family: every engine tensor from f in convention c. */
static int vit_load(vit_model *m, const st_file *f, ckpt_convention c, const ckpt_hints *hints,
                    char *err, size_t errlen) {
    char *used = calloc(f->ntensors ? f->ntensors : 1, 1);
    missing_names ms = {.names = malloc(sizeof(char *) * 64), .buf = malloc(64 * 256)};
    int rc = -1;
    if (!used || !ms.names || !ms.buf) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < VIT_NUM_PARAM_TENSORS; i++) {
        const param_info *pi = &m->info[i];
        if (pi->numel == 0) continue;
        if (c != CKPT_TIMM && !src_pattern(c, i)) {
            snprintf(err, errlen, "%s checkpoints have no %s", ckpt_convention_name(c), pi->name);
            goto out;
        }
        if (load_param(m, f, c, i, hints, used, &ms, err, errlen)) goto out;
    }
    if (ms.n) {
        snprintf(err, errlen, "%s checkpoint is missing %d tensor(s): ", ckpt_convention_name(c),
                 ms.n);
        st_list_names(err, errlen, ms.names, ms.n < 64 ? ms.n : 64);
        goto out;
    }
    if (check_unused(f, used, hints, c, err, errlen)) goto out;
    rc = 0;
out:
    free(used);
    free(ms.names);
    free(ms.buf);
    return rc;
}

/* ckpt_load_file for the Swin family: every tensor of f mapped to its timm >= 0.9 name
 * (HuggingFace's query, key and value to their thirds of qkv), shape-checked and copied; the
 * recomputed buffers skipped; every parameter filled exactly once. */
static int swin_load(swin_model *m, const st_file *f, ckpt_convention c, const ckpt_hints *hints,
                     char *err, size_t errlen) {
    swin_naming n = c == CKPT_HF ? SWIN_NAMING_HF : c == CKPT_TIMM_LEGACY ? SWIN_NAMING_TIMM_OLD
                                                                          : SWIN_NAMING_TIMM;
    /* one count per (tensor, layer, part): 3 parts for HuggingFace's q, k, v of qkv */
    size_t slots = 0;
    for (int i = 0; i < m->ninfo; i++) slots += (size_t)m->info[i].layers * 3;
    unsigned char *filled = calloc(slots ? slots : 1, 1);
    const char *un[64];
    int nun = 0, rc = -1;
    if (!filled) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int t = 0; t < f->ntensors; t++) {
        const st_tensor *st = &f->tensors[t];
        char name[160];
        int part = 0, layer = 0;
        swin_name_kind k = swin_names_map(n, st->name, name, sizeof name, &part);
        if (k == SWIN_NAME_BUFFER) continue;
        int i = k == SWIN_NAME_UNKNOWN ? -1 : swin_param_lookup(m, name, &layer);
        if (i < 0) {
            if (nun < 64) un[nun++] = st->name;
            continue;
        }
        const param_info *pi = &m->info[i];
        int parts = k == SWIN_NAME_PART ? 3 : 1;
        if (k != SWIN_NAME_PART) part = 0;
        if (layer < 0) layer = 0;
        if (!shape_is(st, pi, parts)) {
            say_wrong_shape(err, errlen, st->name, st, pi, parts);
            goto out;
        }
        size_t slot = 0;
        for (int j = 0; j < i; j++) slot += (size_t)m->info[j].layers * 3;
        slot += (size_t)layer * 3 + part;
        if (filled[slot]++) {
            snprintf(err, errlen, "%s checkpoint has '%s' twice (as %s)", ckpt_convention_name(c),
                     name, st->name);
            goto out;
        }
        size_t per = pi->numel / pi->layers;
        if (!(hints && hints->check_only))
            st_to_f32(st, m->param_mem + pi->offset + layer * per + part * (per / parts));
    }
    for (int i = 0, slot = 0; i < m->ninfo; i++) {
        /* HuggingFace stores qkv as three tensors: each must be there */
        int need = n == SWIN_NAMING_HF && strstr(m->info[i].name, "attn.qkv.") ? 3 : 1;
        for (int l = 0; l < m->info[i].layers; l++, slot += 3)
            for (int p = 0; p < need; p++)
                if (!filled[slot + p]) {
                    char want[160], src[160];
                    ckpt_param_name(want, sizeof want, &m->info[i], l);
                    if (swin_names_source(n, want, p, src, sizeof src))
                        snprintf(src, sizeof src, "%s", want);
                    snprintf(err, errlen, "%s checkpoint is missing '%s'",
                             ckpt_convention_name(c), src);
                    goto out;
                }
    }
    if (nun && !(hints && hints->allow_extra)) {
        snprintf(err, errlen, "%s checkpoint has tensors this Swin does not use: ",
                 ckpt_convention_name(c));
        st_list_names(err, errlen, un, nun);
        goto out;
    }
    rc = 0;
out:
    free(filled);
    return rc;
}

int ckpt_load_file(model *m, const st_file *f, const ckpt_hints *hints, ckpt_convention *conv,
                   char *err, size_t errlen) {
    model_config cfg;
    ckpt_convention c;
    memset(m, 0, sizeof *m);
    if (ckpt_infer(f, hints, &cfg, &c, err, errlen) || model_init(m, &cfg, err, errlen))
        return -1;
    if (m->arch == MODEL_SWIN ? swin_load(&m->swin, f, c, hints, err, errlen)
                              : vit_load(&m->vit, f, c, hints, err, errlen)) {
        model_free(m);
        return -1;
    }
    if (conv) *conv = c;
    return 0;
}

int ckpt_load(model *m, const char *path, const ckpt_hints *hints, ckpt_convention *conv,
              char *err, size_t errlen) {
    st_file f;
    memset(m, 0, sizeof *m);
    if (st_open(&f, path, err, errlen)) return -1;
    int rc = ckpt_load_file(m, &f, hints, conv, err, errlen);
    if (rc) {
        /* name the file: the message alone may not say which of several inputs failed */
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
    st_close(&f);
    return rc;
}

/* ckpt_add_config for the ViT family. */
static int vit_add_config(st_writer *w, const vit_config *c, char *err, size_t errlen) {
    char buf[128];
#define META(k, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), st_writer_meta(w, k, buf))
    if (META("format", "pt") || META("gplq_model", "vit-1") ||
        META("img_size", "%d", c->img_size) || META("patch_size", "%d", c->patch) ||
        META("in_chans", "%d", c->in_chans) || META("embed_dim", "%d", c->dim) ||
        META("depth", "%d", c->depth) || META("num_heads", "%d", c->heads) ||
        META("mlp_hidden", "%d", c->mlp_hidden) || META("num_classes", "%d", c->num_classes) ||
        META("distilled", "%d", c->distilled) || META("ln_eps", "%g", c->ln_eps) ||
        META("mean", "[%.9g, %.9g, %.9g]", c->mean[0], c->mean[1], c->mean[2]) ||
        META("std", "[%.9g, %.9g, %.9g]", c->std[0], c->std[1], c->std[2])) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
#undef META
    return 0;
}

/* ckpt_config_from_meta for the ViT family. */
static int vit_config_from_meta(const st_file *f, vit_config *c, char *err, size_t errlen) {
    const char *keys[] = {"img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                          "mlp_hidden", "num_classes", "distilled"};
    int *dst[] = {&c->img_size, &c->patch, &c->in_chans, &c->dim, &c->depth, &c->heads,
                  &c->mlp_hidden, &c->num_classes, &c->distilled};
    for (int i = 0; i < 9; i++) {
        const char *v = st_meta(f, keys[i]);
        if (!v) {
            snprintf(err, errlen, "metadata has no %s", keys[i]);
            return -1;
        }
        *dst[i] = atoi(v);
    }
    c->ln_eps = st_meta(f, "ln_eps") ? (float)atof(st_meta(f, "ln_eps")) : 1e-6f;
    const char *ms = st_meta(f, "mean"), *ss = st_meta(f, "std");
    if (!ms || !ss || sscanf(ms, "[%f, %f, %f]", &c->mean[0], &c->mean[1], &c->mean[2]) != 3 ||
        sscanf(ss, "[%f, %f, %f]", &c->std[0], &c->std[1], &c->std[2]) != 3) {
        snprintf(err, errlen, "metadata mean/std missing or unreadable");
        return -1;
    }
    return 0;
}

/* "2,6" into v (up to max); returns how many, 0 if malformed. */
static int parse_int_list(const char *s, int *v, int max) {
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x <= 0 || x > 1 << 16) return 0;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return s && *s ? 0 : n;
}

/* ckpt_config_from_meta for the Swin family. */
static int swin_config_from_meta(const st_file *f, swin_config *c, char *err, size_t errlen) {
    const char *keys[] = {"img_size", "patch_size", "in_chans", "embed_dim", "window_size",
                          "mlp_ratio", "num_classes", "depths", "num_heads"};
    int *dst[] = {&c->img_size, &c->patch, &c->in_chans, &c->embed_dim, &c->window,
                  &c->mlp_ratio, &c->num_classes};
    for (int i = 0; i < 9; i++)
        if (!st_meta(f, keys[i])) {
            snprintf(err, errlen, "metadata has no %s", keys[i]);
            return -1;
        }
    for (int i = 0; i < 7; i++) *dst[i] = atoi(st_meta(f, keys[i]));
    c->stages = parse_int_list(st_meta(f, "depths"), c->depths, SWIN_MAX_STAGES);
    if (!c->stages ||
        parse_int_list(st_meta(f, "num_heads"), c->heads, SWIN_MAX_STAGES) != c->stages) {
        snprintf(err, errlen, "metadata depths '%s' and num_heads '%s' are not lists of the same "
                 "length (at most %d stages)", st_meta(f, "depths"), st_meta(f, "num_heads"),
                 SWIN_MAX_STAGES);
        return -1;
    }
    c->ln_eps = st_meta(f, "ln_eps") ? (float)atof(st_meta(f, "ln_eps")) : 1e-5f;
    const char *ms = st_meta(f, "mean"), *ss = st_meta(f, "std");
    if (!ms || !ss || sscanf(ms, "[%f, %f, %f]", &c->mean[0], &c->mean[1], &c->mean[2]) != 3 ||
        sscanf(ss, "[%f, %f, %f]", &c->std[0], &c->std[1], &c->std[2]) != 3) {
        snprintf(err, errlen, "metadata mean/std missing or unreadable");
        return -1;
    }
    return swin_config_check(c, err, errlen);
}

int ckpt_config_from_meta(const st_file *f, model_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    const char *fam = st_meta(f, "gplq_model");
    if (fam && !strncmp(fam, "swin-", 5)) {
        c->arch = MODEL_SWIN;
        return swin_config_from_meta(f, &c->swin, err, errlen);
    }
    c->arch = MODEL_VIT;
    return vit_config_from_meta(f, &c->vit, err, errlen);
}

/* A float as the shortest decimal that reads back to it: 1e-06, not 9.9999999747524271e-07. */
static json_t *json_float(float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", x);
    for (int prec = 6; prec < 9; prec++) {
        char b[32];
        snprintf(b, sizeof b, "%.*g", prec, x);
        if (strtof(b, NULL) == x) {
            memcpy(buf, b, sizeof b);
            break;
        }
    }
    return json_real(strtod(buf, NULL));
}

/* "2,6" from depths or heads, n of them. */
static void int_list(char *out, size_t n, const int *v, int count) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < count && len + 1 < n; i++) {
        snprintf(out + len, n - len, "%s%d", i ? "," : "", v[i]);
        len = strlen(out);
    }
}

/* ckpt_add_config for the Swin family. */
static int swin_add_config(st_writer *w, const swin_config *c, char *err, size_t errlen) {
    char buf[128], depths[64], heads[64];
    int_list(depths, sizeof depths, c->depths, c->stages);
    int_list(heads, sizeof heads, c->heads, c->stages);
#define META(k, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), st_writer_meta(w, k, buf))
    if (META("format", "pt") || META("gplq_model", "swin-1") ||
        META("img_size", "%d", c->img_size) || META("patch_size", "%d", c->patch) ||
        META("in_chans", "%d", c->in_chans) || META("embed_dim", "%d", c->embed_dim) ||
        META("depths", "%s", depths) || META("num_heads", "%s", heads) ||
        META("window_size", "%d", c->window) || META("mlp_ratio", "%d", c->mlp_ratio) ||
        META("num_classes", "%d", c->num_classes) || META("ln_eps", "%g", c->ln_eps) ||
        META("mean", "[%.9g, %.9g, %.9g]", c->mean[0], c->mean[1], c->mean[2]) ||
        META("std", "[%.9g, %.9g, %.9g]", c->std[0], c->std[1], c->std[2])) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
#undef META
    return 0;
}

int ckpt_add_config(st_writer *w, const model_config *c, char *err, size_t errlen) {
    return c->arch == MODEL_SWIN ? swin_add_config(w, &c->swin, err, errlen)
                                 : vit_add_config(w, &c->vit, err, errlen);
}

/* ckpt_config_json for the ViT family. */
static json_t *vit_config_json(const vit_config *c) {
    int ch = c->in_chans;
    json_t *mean = json_array(), *std = json_array();
    for (int i = 0; i < ch; i++) {
        json_array_append_new(mean, json_float(c->mean[i]));
        json_array_append_new(std, json_float(c->std[i]));
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:o, s:o, s:o}",
                     "arch", model_arch_name(MODEL_VIT), "img_size", c->img_size, "patch_size", c->patch, "in_chans", c->in_chans,
                     "embed_dim", c->dim, "depth", c->depth, "num_heads", c->heads,
                     "mlp_hidden", c->mlp_hidden, "num_classes", c->num_classes,
                     "distilled", c->distilled, "ln_eps", json_float(c->ln_eps), "mean", mean,
                     "std", std);
}

/* ckpt_config_json for the Swin family. */
static json_t *swin_config_json(const swin_config *c) {
    json_t *mean = json_array(), *std = json_array(), *depths = json_array(), *heads = json_array();
    for (int i = 0; i < c->in_chans; i++) {
        json_array_append_new(mean, json_float(c->mean[i]));
        json_array_append_new(std, json_float(c->std[i]));
    }
    for (int s = 0; s < c->stages; s++) {
        json_array_append_new(depths, json_integer(c->depths[s]));
        json_array_append_new(heads, json_integer(c->heads[s]));
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:o, s:o, s:i, s:i, s:i, s:o, s:o, s:o}",
                     "arch", model_arch_name(MODEL_SWIN), "img_size", c->img_size,
                     "patch_size", c->patch, "in_chans", c->in_chans, "embed_dim", c->embed_dim,
                     "depths", depths, "num_heads", heads, "window_size", c->window,
                     "mlp_ratio", c->mlp_ratio, "num_classes", c->num_classes,
                     "ln_eps", json_float(c->ln_eps), "mean", mean, "std", std);
}

json_t *ckpt_config_json(const model_config *c) {
    return c->arch == MODEL_SWIN ? swin_config_json(&c->swin) : vit_config_json(&c->vit);
}

void ckpt_param_name(char *out, size_t n, const param_info *pi, int layer) {
    expand(out, n, pi->name, layer, "");
}

int ckpt_add_model(st_writer *w, const model *m, char *err, size_t errlen) {
    model_config c = model_get_config(m);
    if (ckpt_add_config(w, &c, err, errlen)) return -1;
    int ninfo;
    const param_info *info = model_param_info(m, &ninfo);
    const float *params = model_params(m);
    for (int i = 0; i < ninfo; i++) {
        const param_info *pi = &info[i];
        if (pi->numel == 0) continue;
        int layers = pi->layers;
        size_t per = pi->numel / layers;
        for (int l = 0; l < layers; l++) {
            char name[256];
            expand(name, sizeof name, pi->name, l, "");
            if (st_writer_add(w, name, ST_F32, pi->ndim, pi->shape, params + pi->offset + l * per,
                              err, errlen))
                return -1;
        }
    }
    return 0;
}

int ckpt_save(const model *m, const char *path, const char *const *keys,
              const char *const *vals, int nextra, char *err, size_t errlen) {
    st_writer *w = st_writer_new();
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = ckpt_add_model(w, m, err, errlen);
    for (int i = 0; i < nextra && !rc; i++) rc = st_writer_meta(w, keys[i], vals[i]);
    if (!rc) rc = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    return rc;
}
