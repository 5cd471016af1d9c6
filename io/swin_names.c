/*
 * swin_names.c: name maps between timm >= 0.9, timm < 0.9 and HuggingFace Swin checkpoints,
 * detection of the naming and config inference from shapes. See swin_names.h.
 *
 * One table holds every tensor a Swin file may have, one row per tensor with its pattern in
 * each naming; the patterns' placeholders are {s} (the stage, as timm >= 0.9 numbers it), {p}
 * (the stage before it: the merge that starts stage s sits at the end of stage s-1 in the two
 * other namings), {b} (the block within its stage) and {qkv} (HuggingFace's query, key and
 * value, the thirds of timm's qkv). Mapping a name is matching it against the naming's
 * patterns; the inverse expands the patterns.
 */
#include "io/swin_names.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INDEX 999 /* block and stage numbers above this are not a model's */

const char *swin_naming_name(swin_naming n) {
    return n == SWIN_NAMING_HF ? "huggingface" : n == SWIN_NAMING_TIMM_OLD ? "timm < 0.9" : "timm";
}

/* Where a tensor lives: once per model, once per stage s >= 1 (the merge), once per block. */
typedef enum { AT_MODEL, AT_MERGE, AT_BLOCK } where;

/* The shape of a tensor in terms of the config (C: the stage's dim, Cp: the previous stage's,
 * R: the stage's bias table rows, NH its heads, r: mlp_ratio, K: classes, Cl: the last dim). */
typedef enum {
    SH_NONE,      /* buffers: not checked */
    SH_PATCH_W,   /* (C0, in_chans, P, P) */
    SH_C0,        /* (C0) */
    SH_4CP,       /* (4Cp) */
    SH_MERGE_W,   /* (C, 4Cp) */
    SH_C,         /* (C) */
    SH_TABLE,     /* (R, NH) */
    SH_QKV_W,     /* (3C, C) */
    SH_QKV_B,     /* (3C) */
    SH_CC,        /* (C, C) */
    SH_FC1_W,     /* (rC, C) */
    SH_FC1_B,     /* (rC) */
    SH_FC2_W,     /* (C, rC) */
    SH_CL,        /* (Cl) */
    SH_HEAD_W,    /* (K, Cl) */
    SH_HEAD_B,    /* (K) */
} shape_id;

typedef struct {
    const char *name[3]; /* patterns, by swin_naming; NULL: the naming has no such tensor */
    swin_name_kind kind; /* PARAM or BUFFER (PART comes from {qkv}) */
    where at;
    shape_id shape;
} entry;

#define TB "layers.{s}.blocks.{b}."
#define HB "swin.encoder.layers.{s}.blocks.{b}."
#define BLOCK(t, h, sh) {{TB t, TB t, HB h}, SWIN_NAME_PARAM, AT_BLOCK, sh}
#define MERGE(t, sh)                                                                          \
    {{"layers.{s}.downsample." t, "layers.{p}.downsample." t,                                 \
      "swin.encoder.layers.{p}.downsample." t}, SWIN_NAME_PARAM, AT_MERGE, sh}

/* In timm >= 0.9's state_dict order (the engine's storage order). */
static const entry entries[] = {
    {{"patch_embed.proj.weight", "patch_embed.proj.weight",
      "swin.embeddings.patch_embeddings.projection.weight"}, SWIN_NAME_PARAM, AT_MODEL, SH_PATCH_W},
    {{"patch_embed.proj.bias", "patch_embed.proj.bias",
      "swin.embeddings.patch_embeddings.projection.bias"}, SWIN_NAME_PARAM, AT_MODEL, SH_C0},
    {{"patch_embed.norm.weight", "patch_embed.norm.weight", "swin.embeddings.norm.weight"},
     SWIN_NAME_PARAM, AT_MODEL, SH_C0},
    {{"patch_embed.norm.bias", "patch_embed.norm.bias", "swin.embeddings.norm.bias"},
     SWIN_NAME_PARAM, AT_MODEL, SH_C0},
    MERGE("norm.weight", SH_4CP),
    MERGE("norm.bias", SH_4CP),
    MERGE("reduction.weight", SH_MERGE_W),
    BLOCK("norm1.weight", "layernorm_before.weight", SH_C),
    BLOCK("norm1.bias", "layernorm_before.bias", SH_C),
    BLOCK("attn.relative_position_bias_table", "attention.self.relative_position_bias_table",
          SH_TABLE),
    BLOCK("attn.qkv.weight", "attention.self.{qkv}.weight", SH_QKV_W),
    BLOCK("attn.qkv.bias", "attention.self.{qkv}.bias", SH_QKV_B),
    BLOCK("attn.proj.weight", "attention.output.dense.weight", SH_CC),
    BLOCK("attn.proj.bias", "attention.output.dense.bias", SH_C),
    BLOCK("norm2.weight", "layernorm_after.weight", SH_C),
    BLOCK("norm2.bias", "layernorm_after.bias", SH_C),
    BLOCK("mlp.fc1.weight", "intermediate.dense.weight", SH_FC1_W),
    BLOCK("mlp.fc1.bias", "intermediate.dense.bias", SH_FC1_B),
    BLOCK("mlp.fc2.weight", "output.dense.weight", SH_FC2_W),
    BLOCK("mlp.fc2.bias", "output.dense.bias", SH_C),
    {{"norm.weight", "norm.weight", "swin.layernorm.weight"}, SWIN_NAME_PARAM, AT_MODEL, SH_CL},
    {{"norm.bias", "norm.bias", "swin.layernorm.bias"}, SWIN_NAME_PARAM, AT_MODEL, SH_CL},
    {{"head.fc.weight", "head.weight", "classifier.weight"}, SWIN_NAME_PARAM, AT_MODEL, SH_HEAD_W},
    {{"head.fc.bias", "head.bias", "classifier.bias"}, SWIN_NAME_PARAM, AT_MODEL, SH_HEAD_B},
    /* buffers: timm < 0.9 and 0.9.0 saved both, HuggingFace saves the index */
    {{TB "attn.relative_position_index", TB "attn.relative_position_index",
      HB "attention.self.relative_position_index"}, SWIN_NAME_BUFFER, AT_BLOCK, SH_NONE},
    {{TB "attn_mask", TB "attn_mask", NULL}, SWIN_NAME_BUFFER, AT_BLOCK, SH_NONE},
};
#define NENTRIES ((int)(sizeof entries / sizeof entries[0]))
#define E_PATCH_W 0 /* the row of patch_embed.proj.weight */

static const char *const qkv_words[3] = {"query", "key", "value"};

/* A block or stage number as written: digits, no sign, no leading zero, at most MAX_INDEX. */
static const char *parse_index(const char *s, int *v) {
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return NULL;
    int x = 0;
    while (*s >= '0' && *s <= '9') {
        x = x * 10 + (*s++ - '0');
        if (x > MAX_INDEX) return NULL;
    }
    *v = x;
    return s;
}

/* Matches name against pattern; fills the stage (timm >= 0.9 numbering), block and part. */
static int match(const char *pat, const char *name, int *s, int *b, int *part) {
    *s = *b = *part = -1;
    while (*pat) {
        if (*pat != '{') {
            if (*pat++ != *name++) return 0;
            continue;
        }
        if (!strncmp(pat, "{qkv}", 5)) {
            int k = 0;
            while (k < 3 && strncmp(name, qkv_words[k], strlen(qkv_words[k]))) k++;
            if (k == 3) return 0;
            name += strlen(qkv_words[k]);
            *part = k;
            pat += 5;
            continue;
        }
        int v;
        if (!(name = parse_index(name, &v))) return 0;
        if (pat[1] == 's') *s = v;
        else if (pat[1] == 'p') *s = v + 1;
        else *b = v;
        pat += 3;
    }
    return *name == 0;
}

/* pattern with the placeholders filled in; 0, or -1 if out is too small */
static int expand(char *out, size_t n, const char *pat, int s, int b, int part) {
    size_t len = 0;
    out[0] = 0;
    while (*pat) {
        char tmp[16];
        const char *piece = tmp;
        if (!strncmp(pat, "{qkv}", 5)) {
            piece = qkv_words[part >= 0 && part < 3 ? part : 0];
            pat += 5;
        } else if (*pat == '{') {
            snprintf(tmp, sizeof tmp, "%d", pat[1] == 's' ? s : pat[1] == 'p' ? s - 1 : b);
            pat += 3;
        } else {
            tmp[0] = *pat++;
            tmp[1] = 0;
        }
        size_t pl = strlen(piece);
        if (len + pl + 1 > n) return -1;
        memcpy(out + len, piece, pl + 1);
        len += pl;
    }
    return 0;
}

/* The entry that name matches in naming nm, with its stage, block and part; -1 if none. */
static int lookup(swin_naming nm, const char *name, int *s, int *b, int *part) {
    for (int i = 0; i < NENTRIES; i++) {
        const char *pat = entries[i].name[nm];
        if (!pat || !match(pat, name, s, b, part)) continue;
        /* timm >= 0.9 has no merge before stage 0: layers.0.downsample is timm < 0.9's */
        if (entries[i].at == AT_MERGE && *s < 1) continue;
        return i;
    }
    return -1;
}

swin_name_kind swin_names_map(swin_naming n, const char *name, char *out, size_t outlen,
                              int *part) {
    int s, b, p;
    if (outlen) out[0] = 0;
    int i = lookup(n, name, &s, &b, &p);
    if (i < 0) return SWIN_NAME_UNKNOWN;
    if (entries[i].kind == SWIN_NAME_BUFFER) return SWIN_NAME_BUFFER;
    if (expand(out, outlen, entries[i].name[SWIN_NAMING_TIMM], s, b, -1)) {
        if (outlen) out[0] = 0;
        return SWIN_NAME_UNKNOWN;
    }
    if (part) *part = p;
    return p >= 0 ? SWIN_NAME_PART : SWIN_NAME_PARAM;
}

int swin_names_source(swin_naming n, const char *timm_name, int part, char *out, size_t outlen) {
    int s, b, p;
    int i = lookup(SWIN_NAMING_TIMM, timm_name, &s, &b, &p);
    if (i < 0 || entries[i].kind != SWIN_NAME_PARAM || !entries[i].name[n]) return -1;
    return expand(out, outlen, entries[i].name[n], s, b, part);
}

/* ---------------------------------------------------------------------------------------- */
/* detection */

static int has_prefix(const st_file *f, const char *prefix) {
    size_t pl = strlen(prefix);
    for (int i = 0; i < f->ntensors; i++)
        if (!strncmp(f->tensors[i].name, prefix, pl)) return 1;
    return 0;
}

/* The number of stages: the highest layers.{s}.blocks index of naming nm, plus 1. */
static int count_stages(const st_file *f, swin_naming nm) {
    int n = 0;
    for (int i = 0; i < f->ntensors; i++) {
        int s, b, p, e = lookup(nm, f->tensors[i].name, &s, &b, &p);
        if (e >= 0 && entries[e].at == AT_BLOCK && s + 1 > n) n = s + 1;
    }
    return n;
}

/* The name of a tensor of f under layers.{stage}.downsample., or NULL. */
static const char *merge_at(const st_file *f, int stage) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "layers.%d.downsample.", stage);
    size_t pl = strlen(prefix);
    for (int i = 0; i < f->ntensors; i++)
        if (!strncmp(f->tensors[i].name, prefix, pl)) return f->tensors[i].name;
    return NULL;
}

/* "not a Swin checkpoint ...": what a timm Swin would need and is not in f, and what f has
 * instead (checkpoint.c's say_not_a_vit, for Swin). */
static void say_not_a_swin(const st_file *f, char *err, size_t errlen) {
    static const char *const want[] = {"patch_embed.proj.weight", "patch_embed.norm.weight",
                                       "layers.0.blocks.0.attn.relative_position_bias_table",
                                       "layers.0.blocks.0.attn.qkv.weight", "norm.weight",
                                       "head.fc.weight"};
    const char *vit = st_find(f, "cls_token") || st_find(f, "vit.embeddings.cls_token") ||
                      st_find(f, "class_token") ? " (this looks like a ViT: it has a class token)"
                                                : "";
    char what[160];
    snprintf(what, sizeof what, "not a Swin checkpoint in timm, timm < 0.9 or HuggingFace naming%s",
             vit);
    st_say_not(f, what, want, (int)(sizeof want / sizeof want[0]), err, errlen);
}

int swin_names_detect(const st_file *f, swin_naming *n, char *err, size_t errlen) {
    if (st_find(f, entries[E_PATCH_W].name[SWIN_NAMING_HF]) && has_prefix(f, "swin.encoder.layers.")) {
        *n = SWIN_NAMING_HF;
        return 0;
    }
    if (!st_find(f, "patch_embed.proj.weight") || !has_prefix(f, "layers.")) {
        say_not_a_swin(f, err, errlen);
        return -1;
    }
    /* Both timm namings number blocks the same way; merges and the head tell them apart. */
    int stages = count_stages(f, SWIN_NAMING_TIMM);
    const char *new_ev = st_find(f, "head.fc.weight") ? "head.fc.weight"
                       : st_find(f, "head.fc.bias")   ? "head.fc.bias"
                       : stages >= 2                  ? merge_at(f, stages - 1) : NULL;
    const char *old_ev = st_find(f, "head.weight") ? "head.weight"
                       : st_find(f, "head.bias")   ? "head.bias" : merge_at(f, 0);
    if (new_ev && old_ev) {
        snprintf(err, errlen, "a Swin checkpoint that mixes timm >= 0.9 names (%s) and timm < 0.9 "
                 "names (%s)", new_ev, old_ev);
        return -1;
    }
    *n = old_ev ? SWIN_NAMING_TIMM_OLD : SWIN_NAMING_TIMM;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* config inference */

static void shape_str(char *out, size_t n, const int64_t *s, int nd) {
    size_t len = 0;
    out[0] = 0;
    for (int d = 0; d < nd && len + 2 < n; d++) {
        snprintf(out + len, n - len, "%s%lld", d ? ", " : "[", (long long)s[d]);
        len = strlen(out);
    }
    snprintf(out + len, n - len, nd ? "]" : "[]");
}

/* The tensor of f for timm name tn (its part, for HuggingFace's q/k/v) in naming nm, and its
 * source name in src. */
static const st_tensor *find_src(const st_file *f, swin_naming nm, const char *tn, int part,
                                 char *src, size_t srclen) {
    if (swin_names_source(nm, tn, part, src, srclen)) {
        snprintf(src, srclen, "%s", tn);
        return NULL;
    }
    return st_find(f, src);
}

/* The window w whose bias table has rows = (2w-1)^2 rows, or 0. */
static int table_window(int64_t rows) {
    for (int64_t w = 1; (2 * w - 1) * (2 * w - 1) <= rows; w++)
        if ((2 * w - 1) * (2 * w - 1) == rows) return (int)w;
    return 0;
}

/* The expected shape of entry e at stage s, into shape; returns its rank (0: not checked). */
static int expected_shape(const swin_config *c, const int64_t *table_rows, shape_id id, int s,
                          int64_t *shape) {
    int64_t C = (int64_t)c->embed_dim << (s < 0 ? 0 : s), Cp = C / 2;
    int64_t Cl = (int64_t)c->embed_dim << (c->stages - 1), r = c->mlp_ratio;
    switch (id) {
    case SH_NONE: return 0;
    case SH_PATCH_W:
        shape[0] = c->embed_dim, shape[1] = c->in_chans, shape[2] = shape[3] = c->patch;
        return 4;
    case SH_C0: shape[0] = c->embed_dim; return 1;
    case SH_4CP: shape[0] = 4 * Cp; return 1;
    case SH_MERGE_W: shape[0] = C, shape[1] = 4 * Cp; return 2;
    case SH_C: shape[0] = C; return 1;
    case SH_TABLE: shape[0] = table_rows[s], shape[1] = c->heads[s]; return 2;
    case SH_QKV_W: shape[0] = 3 * C, shape[1] = C; return 2;
    case SH_QKV_B: shape[0] = 3 * C; return 1;
    case SH_CC: shape[0] = C, shape[1] = C; return 2;
    case SH_FC1_W: shape[0] = r * C, shape[1] = C; return 2;
    case SH_FC1_B: shape[0] = r * C; return 1;
    case SH_FC2_W: shape[0] = C, shape[1] = r * C; return 2;
    case SH_CL: shape[0] = Cl; return 1;
    case SH_HEAD_W: shape[0] = c->num_classes, shape[1] = Cl; return 2;
    case SH_HEAD_B: shape[0] = c->num_classes; return 1;
    }
    return 0;
}

/* "embed_dim 16, depths 2,2, heads 2,4, window 4, mlp_ratio 4, 5 classes": what the other
 * tensors said, for a message about the one that disagrees. */
static void config_str(char *out, size_t n, const swin_config *c) {
    char d[64] = "", h[64] = "";
    for (int s = 0; s < c->stages; s++) {
        snprintf(d + strlen(d), sizeof d - strlen(d), "%s%d", s ? "," : "", c->depths[s]);
        snprintf(h + strlen(h), sizeof h - strlen(h), "%s%d", s ? "," : "", c->heads[s]);
    }
    snprintf(out, n, "embed_dim %d, depths %s, heads %s, window %d, mlp_ratio %d, %d classes",
             c->embed_dim, d, h, c->window, c->mlp_ratio, c->num_classes);
}

/* Every parameter of c in f with its shape: the first wrong shape is the error; the missing
 * ones are listed. */
static int check_all(const st_file *f, swin_naming nm, const swin_config *c,
                     const int64_t *table_rows, char *err, size_t errlen) {
    char (*missing)[128] = malloc(64 * sizeof *missing);
    const char *mnames[64];
    int nmissing = 0;
    if (!missing) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int e = 0; e < NENTRIES; e++) {
        if (entries[e].kind != SWIN_NAME_PARAM) continue;
        int s0 = entries[e].at == AT_MERGE ? 1 : 0, s1 = entries[e].at == AT_MODEL ? 1 : c->stages;
        int parts = nm == SWIN_NAMING_HF && strstr(entries[e].name[nm], "{qkv}") ? 3 : 1;
        for (int s = s0; s < s1; s++)
            for (int b = 0; b < (entries[e].at == AT_BLOCK ? c->depths[s] : 1); b++)
                for (int part = 0; part < parts; part++) {
                    char tn[128], src[128];
                    expand(tn, sizeof tn, entries[e].name[SWIN_NAMING_TIMM], s, b, -1);
                    const st_tensor *t = find_src(f, nm, tn, part, src, sizeof src);
                    if (!t) {
                        if (nmissing < 64) {
                            snprintf(missing[nmissing], 128, "%s", src);
                            mnames[nmissing] = missing[nmissing];
                        }
                        nmissing++;
                        continue;
                    }
                    int64_t want[4] = {0};
                    int nd = expected_shape(c, table_rows, entries[e].shape,
                                            entries[e].at == AT_MODEL ? -1 : s, want);
                    want[0] /= parts;
                    int ok = t->ndim == nd;
                    for (int d = 0; ok && d < nd; d++) ok = t->shape[d] == want[d];
                    if (!ok) {
                        char got[96], need[96], cs[256];
                        shape_str(got, sizeof got, t->shape, t->ndim);
                        shape_str(need, sizeof need, want, nd);
                        config_str(cs, sizeof cs, c);
                        snprintf(err, errlen, "tensor '%s' has shape %s, the model needs %s (a "
                                 "Swin with %s, as the other tensors say)", src, got, need, cs);
                        free(missing);
                        return -1;
                    }
                }
    }
    if (nmissing) {
        snprintf(err, errlen, "%s checkpoint is missing %d tensor(s): ", swin_naming_name(nm),
                 nmissing);
        st_list_names(err, errlen, mnames, nmissing < 64 ? nmissing : 64);
    }
    free(missing);
    return nmissing ? -1 : 0;
}

/* Tensors of models this engine does not compute, refused by name rather than by a later,
 * vaguer shape or missing-tensor error. */
static int refuse_variants(const st_file *f, char *err, size_t errlen) {
    for (int i = 0; i < f->ntensors; i++) {
        const char *s = f->tensors[i].name;
        if (strstr(s, "logit_scale") || strstr(s, "cpb_mlp")) {
            snprintf(err, errlen, "'%s': a Swin V2 checkpoint; only Swin V1 (timm's "
                     "SwinTransformer) is supported", s);
            return -1;
        }
        if (!strcmp(s, "absolute_pos_embed") || !strcmp(s, "swin.embeddings.position_embeddings")) {
            snprintf(err, errlen, "'%s': absolute position embeddings (ape / "
                     "use_absolute_embeddings) are not supported", s);
            return -1;
        }
    }
    return 0;
}

/* The key tensor timm name tn (part 0) of f, or an error naming it in the file's naming. */
static const st_tensor *need(const st_file *f, swin_naming nm, const char *tn, int ndim,
                             char *err, size_t errlen) {
    char src[128];
    const st_tensor *t = find_src(f, nm, tn, 0, src, sizeof src);
    if (!t) {
        snprintf(err, errlen, "%s checkpoint without '%s'", swin_naming_name(nm), src);
        return NULL;
    }
    if (t->ndim != ndim) {
        char got[96];
        shape_str(got, sizeof got, t->shape, t->ndim);
        snprintf(err, errlen, "tensor '%s' has shape %s, a Swin's has %d dimensions", src, got,
                 ndim);
        return NULL;
    }
    return t;
}

int swin_names_infer(const st_file *f, int img_size, swin_config *cfg, swin_naming *n,
                     char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    swin_naming nm;
    if (swin_names_detect(f, &nm, err, errlen) || refuse_variants(f, err, errlen)) return -1;

    /* stages and depths from the block indices */
    int depths[SWIN_MAX_STAGES + 1] = {0}, stages = 0;
    for (int i = 0; i < f->ntensors; i++) {
        int s, b, p, e = lookup(nm, f->tensors[i].name, &s, &b, &p);
        if (e < 0 || entries[e].at != AT_BLOCK) continue;
        if (s >= SWIN_MAX_STAGES) {
            snprintf(err, errlen, "'%s': a Swin with more than %d stages", f->tensors[i].name,
                     SWIN_MAX_STAGES);
            return -1;
        }
        if (s + 1 > stages) stages = s + 1;
        if (b + 1 > depths[s]) depths[s] = b + 1;
    }
    for (int s = 0; s < stages; s++)
        if (!depths[s]) {
            snprintf(err, errlen, "%s checkpoint has blocks in stage %d but none in stage %d",
                     swin_naming_name(nm), stages - 1, s);
            return -1;
        }
    if (!stages) {
        snprintf(err, errlen, "%s checkpoint without blocks (layers.0.blocks.0.*)",
                 swin_naming_name(nm));
        return -1;
    }

    const st_tensor *pw = need(f, nm, "patch_embed.proj.weight", 4, err, errlen);
    const st_tensor *fc1 = pw ? need(f, nm, "layers.0.blocks.0.mlp.fc1.weight", 2, err, errlen) : NULL;
    const st_tensor *head = fc1 ? need(f, nm, "head.fc.weight", 2, err, errlen) : NULL;
    if (!head) return -1;
    if (pw->shape[2] != pw->shape[3]) {
        snprintf(err, errlen, "the patch embedding's kernel is %lld x %lld: only square patches "
                 "are supported", (long long)pw->shape[2], (long long)pw->shape[3]);
        return -1;
    }
    if (pw->shape[0] < 1 || pw->shape[0] > (1 << 20) || pw->shape[1] < 1 || pw->shape[1] > 3 ||
        pw->shape[2] < 1 || pw->shape[2] > 1024) {
        char got[96];
        shape_str(got, sizeof got, pw->shape, pw->ndim);
        snprintf(err, errlen, "the patch embedding has shape %s: (embed_dim, in_chans 1..3, "
                 "patch, patch) expected", got);
        return -1;
    }
    cfg->embed_dim = (int)pw->shape[0];
    cfg->in_chans = (int)pw->shape[1];
    cfg->patch = (int)pw->shape[2];
    cfg->stages = stages;
    memcpy(cfg->depths, depths, sizeof cfg->depths);
    if (fc1->shape[0] % cfg->embed_dim || fc1->shape[0] < cfg->embed_dim ||
        fc1->shape[0] / cfg->embed_dim > 64) {
        snprintf(err, errlen, "the first MLP has %lld outputs, not a whole multiple of "
                 "embed_dim %d", (long long)fc1->shape[0], cfg->embed_dim);
        return -1;
    }
    cfg->mlp_ratio = (int)(fc1->shape[0] / cfg->embed_dim);
    if (head->shape[0] < 1 || head->shape[0] > (1 << 24)) {
        snprintf(err, errlen, "the head has %lld classes", (long long)head->shape[0]);
        return -1;
    }
    cfg->num_classes = (int)head->shape[0];
    cfg->img_size = img_size > 0 ? img_size : 0;
    cfg->ln_eps = 1e-5f;
    static const float inet_mean[3] = {0.485f, 0.456f, 0.406f};
    static const float inet_std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(cfg->mean, inet_mean, sizeof inet_mean);
    memcpy(cfg->std, inet_std, sizeof inet_std);

    /* heads and the window from the bias tables of each stage's first block */
    int64_t table_rows[SWIN_MAX_STAGES];
    if (img_size > 0 && img_size % cfg->patch) {
        snprintf(err, errlen, "image size %d is not a multiple of the patch size %d", img_size,
                 cfg->patch);
        return -1;
    }
    if (img_size > 0 && (img_size / cfg->patch >> (stages - 1)) < 1) {
        snprintf(err, errlen, "%d stages at image size %d and patch %d leave stage %d no tokens",
                 stages, img_size, cfg->patch, stages - 1);
        return -1;
    }
    for (int s = 0; s < stages; s++) {
        char tn[128];
        snprintf(tn, sizeof tn, "layers.%d.blocks.0.attn.relative_position_bias_table", s);
        const st_tensor *t = need(f, nm, tn, 2, err, errlen);
        if (!t) return -1;
        char src[128];
        swin_names_source(nm, tn, 0, src, sizeof src);
        int w = table_window(t->shape[0]);
        int64_t C = (int64_t)cfg->embed_dim << s;
        if (!w || t->shape[1] < 1 || C % t->shape[1]) {
            char got[96];
            shape_str(got, sizeof got, t->shape, t->ndim);
            snprintf(err, errlen, "tensor '%s' has shape %s: a bias table has (2w-1)^2 rows for "
                     "a window w and one column per head, a divisor of the stage's dim %lld",
                     src, got, (long long)C);
            return -1;
        }
        cfg->heads[s] = (int)t->shape[1];
        if (s == 0) cfg->window = w;
        int want = w;
        if (img_size > 0) {
            int res = img_size / cfg->patch >> s;
            want = cfg->window < res ? cfg->window : res;
        } else if (w > cfg->window) {
            want = cfg->window;
        }
        if (w != want && img_size > 0) {
            snprintf(err, errlen, "tensor '%s' is the bias table of a %dx%d window, but stage %d "
                     "of a Swin with window %d has %dx%d windows at image size %d", src, w, w, s,
                     cfg->window, want, want, img_size);
            return -1;
        }
        if (w != want) {
            snprintf(err, errlen, "tensor '%s' is the bias table of a %dx%d window, larger than "
                     "stage 0's %dx%d", src, w, w, cfg->window, cfg->window);
            return -1;
        }
        table_rows[s] = t->shape[0];
    }
    if (check_all(f, nm, cfg, table_rows, err, errlen)) return -1;
    if (n) *n = nm;
    return 0;
}
