/*
 * test_swin_names.c: the Swin name maps and config inference (io/swin_names.h) on the three
 * files tests/ref/gen_swin_ref.py wrote with the same weights (timm >= 0.9, timm < 0.9 and
 * HuggingFace names): every name maps, onto exactly the reference's parameters and values,
 * the buffers are recognized, the three configs come out equal to the one PyTorch used; and
 * files that are broken in the ways real ones are get a message that says what is wrong.
 */
#include <stdint.h>
#include <stdlib.h>

#include "io/safetensors.h"
#include "io/swin_names.h"
#include "tests/test.h"

#define FIX GPLQ_SRC_DIR "/tests/fixtures/"

static int open_fix(st_file *f, const char *name) {
    char err[512];
    if (st_open(f, name, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return -1;
    }
    return 0;
}

TEST(names_map_in_all_three_namings) {
    static const struct {
        swin_naming n;
        const char *name, *timm;
        swin_name_kind kind;
        int part;
    } cases[] = {
        {SWIN_NAMING_TIMM, "patch_embed.proj.weight", "patch_embed.proj.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM, "layers.2.downsample.reduction.weight", "layers.2.downsample.reduction.weight",
         SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM, "layers.0.downsample.norm.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.3.blocks.17.mlp.fc2.bias", "layers.3.blocks.17.mlp.fc2.bias",
         SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks.1.attn_mask", "", SWIN_NAME_BUFFER, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks.0.attn.relative_position_index", "", SWIN_NAME_BUFFER, -1},
        {SWIN_NAMING_TIMM, "head.fc.bias", "head.fc.bias", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM, "head.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM_OLD, "layers.0.downsample.norm.weight", "layers.1.downsample.norm.weight",
         SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM_OLD, "layers.2.downsample.reduction.weight",
         "layers.3.downsample.reduction.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM_OLD, "head.weight", "head.fc.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_TIMM_OLD, "head.fc.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM_OLD, "layers.1.blocks.3.attn_mask", "", SWIN_NAME_BUFFER, -1},
        {SWIN_NAMING_HF, "swin.embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias",
         SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.embeddings.norm.weight", "patch_embed.norm.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.1.blocks.4.attention.self.key.weight",
         "layers.1.blocks.4.attn.qkv.weight", SWIN_NAME_PART, 1},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.blocks.0.attention.self.value.bias",
         "layers.0.blocks.0.attn.qkv.bias", SWIN_NAME_PART, 2},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.blocks.0.attention.self.query.weight",
         "layers.0.blocks.0.attn.qkv.weight", SWIN_NAME_PART, 0},
        {SWIN_NAMING_HF, "swin.encoder.layers.2.blocks.0.attention.self.relative_position_bias_table",
         "layers.2.blocks.0.attn.relative_position_bias_table", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.2.blocks.0.attention.self.relative_position_index", "",
         SWIN_NAME_BUFFER, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.blocks.1.attention.output.dense.weight",
         "layers.0.blocks.1.attn.proj.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.1.blocks.0.intermediate.dense.bias",
         "layers.1.blocks.0.mlp.fc1.bias", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.1.blocks.0.output.dense.weight",
         "layers.1.blocks.0.mlp.fc2.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.1.blocks.0.layernorm_after.bias",
         "layers.1.blocks.0.norm2.bias", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.downsample.reduction.weight",
         "layers.1.downsample.reduction.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.layernorm.bias", "norm.bias", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "classifier.weight", "head.fc.weight", SWIN_NAME_PARAM, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.blocks.1.attn_mask", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_HF, "swin.pooler.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_HF, "swin.encoder.layers.0.blocks.0.attention.self.qkv.weight", "",
         SWIN_NAME_UNKNOWN, -1},
        /* numbers as written only: no leading zeros, signs, spaces or huge values */
        {SWIN_NAMING_TIMM, "layers.01.blocks.0.norm1.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.-1.blocks.0.norm1.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks.1000.norm1.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks..norm1.weight", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks.0.norm1.weight.", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "layers.0.blocks.0.norm1.weigh", "", SWIN_NAME_UNKNOWN, -1},
        {SWIN_NAMING_TIMM, "", "", SWIN_NAME_UNKNOWN, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128] = "junk";
        int part = -1;
        swin_name_kind k = swin_names_map(cases[i].n, cases[i].name, out, sizeof out, &part);
        CHECK_MSG(k == cases[i].kind && !strcmp(out, cases[i].timm) &&
                      (k != SWIN_NAME_PART || part == cases[i].part),
                  "%s '%s': kind %d '%s' part %d, expected %d '%s' part %d",
                  swin_naming_name(cases[i].n), cases[i].name, k, out, part, cases[i].kind,
                  cases[i].timm, cases[i].part);
        /* and back */
        if (k == SWIN_NAME_PARAM || k == SWIN_NAME_PART) {
            char back[128];
            CHECK(swin_names_source(cases[i].n, out, part, back, sizeof back) == 0 &&
                  !strcmp(back, cases[i].name));
        }
    }
    char small[8];
    CHECK(swin_names_map(SWIN_NAMING_HF, "swin.layernorm.bias", small, sizeof small, NULL) ==
          SWIN_NAME_UNKNOWN && small[0] == 0);
    char out[128];
    CHECK(swin_names_source(SWIN_NAMING_HF, "layers.0.blocks.1.attn_mask", 0, out, sizeof out) == -1);
    CHECK(swin_names_source(SWIN_NAMING_TIMM, "layers.0.downsample.norm.bias", 0, out, sizeof out) == -1);
    CHECK(swin_names_source(SWIN_NAMING_TIMM_OLD, "layers.1.downsample.norm.bias", 0, out, sizeof out) == 0 &&
          !strcmp(out, "layers.0.downsample.norm.bias"));
}

/* Reads tensor t's floats (rows [r0, r0 + nrows) of its first axis) into a new buffer. */
static float *rows_f32(const st_tensor *t, int64_t r0, int64_t nrows) {
    float *all = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    st_to_f32(t, all);
    int64_t per = t->ndim ? t->numel / t->shape[0] : 1;
    int64_t n = nrows * per;
    float *out = malloc(sizeof(float) * (n > 0 ? n : 1));
    memcpy(out, all + r0 * per, sizeof(float) * nrows * per);
    free(all);
    return out;
}

/* Every tensor of the file in naming n maps, and onto the reference's parameters with their
 * values (each exactly once, q/k/v once per third); returns the number of buffers. */
static int check_maps_onto_ref(const st_file *ref, const char *path, swin_naming n) {
    st_file f;
    if (open_fix(&f, path)) return -1;
    swin_naming got;
    char err[1024];
    CHECK_MSG(swin_names_detect(&f, &got, err, sizeof err) == 0 && got == n, "%s: %s", path, err);
    int nparams_ref = 0, *hits = calloc(ref->ntensors, sizeof(int)), buffers = 0;
    for (int i = 0; i < ref->ntensors; i++)
        if (swin_names_map(SWIN_NAMING_TIMM, ref->tensors[i].name, err, sizeof err, NULL) ==
            SWIN_NAME_PARAM)
            nparams_ref++;
    for (int i = 0; i < f.ntensors; i++) {
        const st_tensor *t = &f.tensors[i];
        char tn[128];
        int part = -1;
        swin_name_kind k = swin_names_map(n, t->name, tn, sizeof tn, &part);
        CHECK_MSG(k != SWIN_NAME_UNKNOWN, "%s: '%s' does not map", path, t->name);
        if (k == SWIN_NAME_BUFFER) {
            buffers++;
            continue;
        }
        if (k == SWIN_NAME_UNKNOWN) continue;
        const st_tensor *r = st_find(ref, tn);
        CHECK_MSG(r != NULL, "%s: '%s' maps to '%s', which the reference does not have", path,
                  t->name, tn);
        if (!r) continue;
        hits[r - ref->tensors] |= k == SWIN_NAME_PART ? 1 << part : 7;
        int64_t rows = k == SWIN_NAME_PART ? r->shape[0] / 3 : r->shape[0];
        CHECK_MSG(t->numel * (k == SWIN_NAME_PART ? 3 : 1) == r->numel && t->shape[0] == rows,
                  "%s: '%s' has the wrong size for '%s'", path, t->name, tn);
        if (t->numel * (k == SWIN_NAME_PART ? 3 : 1) != r->numel) continue;
        float *a = rows_f32(t, 0, t->shape[0]);
        float *b = rows_f32(r, k == SWIN_NAME_PART ? part * rows : 0, rows);
        CHECK_MSG(memcmp(a, b, sizeof(float) * t->numel) == 0, "%s: '%s' is not the values of '%s'",
                  path, t->name, tn);
        free(a);
        free(b);
    }
    int covered = 0;
    for (int i = 0; i < ref->ntensors; i++)
        if (hits[i]) {
            CHECK_MSG(hits[i] == 7, "%s: '%s' only partly covered", path, ref->tensors[i].name);
            covered++;
        }
    CHECK_MSG(covered == nparams_ref, "%s: %d of %d parameters covered", path, covered, nparams_ref);
    free(hits);
    st_close(&f);
    return buffers;
}

TEST(three_fixture_namings_map_onto_the_same_weights) {
    st_file ref;
    if (open_fix(&ref, FIX "swin_tiny_ref.safetensors")) return;
    /* the reference itself: parameters map to themselves, the rest (input, act.*, grad.*) is
     * not a Swin tensor */
    swin_naming n;
    char err[1024];
    CHECK(swin_names_detect(&ref, &n, err, sizeof err) == 0 && n == SWIN_NAMING_TIMM);
    int params = 0;
    for (int i = 0; i < ref.ntensors; i++) {
        char tn[128];
        const char *name = ref.tensors[i].name;
        swin_name_kind k = swin_names_map(SWIN_NAMING_TIMM, name, tn, sizeof tn, NULL);
        int is_data = !strncmp(name, "act.", 4) || !strncmp(name, "grad.", 5) ||
                      !strcmp(name, "input") || !strcmp(name, "labels") || !strcmp(name, "feature") ||
                      !strcmp(name, "logits") || !strcmp(name, "loss") || !strcmp(name, "dinput");
        CHECK_MSG(is_data ? k == SWIN_NAME_UNKNOWN : (k == SWIN_NAME_PARAM && !strcmp(tn, name)),
                  "'%s' maps to kind %d '%s'", name, k, tn);
        params += k == SWIN_NAME_PARAM;
    }
    CHECK_MSG(params == 63, "%d parameters in the tiny reference", params);
    /* timm < 0.9: relative_position_index in 4 blocks, attn_mask in the one shifted block */
    CHECK_MSG(check_maps_onto_ref(&ref, FIX "swin_tiny_timm_old.safetensors", SWIN_NAMING_TIMM_OLD) == 5,
              "timm < 0.9 buffers");
    /* HuggingFace: relative_position_index in 4 blocks */
    CHECK_MSG(check_maps_onto_ref(&ref, FIX "swin_tiny_hf.safetensors", SWIN_NAMING_HF) == 4,
              "HuggingFace buffers");
    st_close(&ref);
}

static int meta_list(const st_file *f, const char *key, int *v, int n) {
    const char *s = st_meta(f, key);
    int k = 0;
    while (s && *s && k < n) {
        char *end;
        v[k++] = (int)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    return k;
}

/* The config inferred from path equals the one the reference file's metadata records. */
static void check_infer(const char *path, const st_file *meta, int img, swin_naming want_n) {
    st_file f;
    if (open_fix(&f, path)) return;
    swin_config c;
    swin_naming n;
    char err[1024];
    int rc = swin_names_infer(&f, img, &c, &n, err, sizeof err);
    CHECK_MSG(rc == 0, "%s: %s", path, err);
    if (rc) {
        st_close(&f);
        return;
    }
    int depths[8], heads[8];
    int ns = meta_list(meta, "depths", depths, 8);
    CHECK(meta_list(meta, "num_heads", heads, 8) == ns);
    CHECK(n == want_n);
    CHECK(c.img_size == img);
    CHECK(c.patch == atoi(st_meta(meta, "patch_size")));
    CHECK(c.in_chans == atoi(st_meta(meta, "in_chans")));
    CHECK(c.embed_dim == atoi(st_meta(meta, "embed_dim")));
    CHECK(c.stages == ns);
    for (int s = 0; s < ns && s < SWIN_MAX_STAGES; s++)
        CHECK_MSG(c.depths[s] == depths[s] && c.heads[s] == heads[s], "%s: stage %d: depth %d "
                  "heads %d", path, s, c.depths[s], c.heads[s]);
    for (int s = ns; s < SWIN_MAX_STAGES; s++) CHECK(c.depths[s] == 0 && c.heads[s] == 0);
    CHECK(c.window == atoi(st_meta(meta, "window_size")));
    CHECK(c.mlp_ratio == atoi(st_meta(meta, "mlp_ratio")));
    CHECK(c.num_classes == atoi(st_meta(meta, "num_classes")));
    CHECK(fabsf(c.ln_eps - (float)atof(st_meta(meta, "ln_eps"))) < 1e-12f);
    st_close(&f);
}

TEST(configs_inferred_equal_the_reference_ones) {
    st_file ref, demo;
    if (open_fix(&ref, FIX "swin_tiny_ref.safetensors")) return;
    int img = atoi(st_meta(&ref, "img_size"));
    check_infer(FIX "swin_tiny_ref.safetensors", &ref, img, SWIN_NAMING_TIMM);
    check_infer(FIX "swin_tiny_timm_old.safetensors", &ref, img, SWIN_NAMING_TIMM_OLD);
    check_infer(FIX "swin_tiny_hf.safetensors", &ref, img, SWIN_NAMING_HF);
    check_infer(FIX "swin_tiny_hf.safetensors", &ref, 0, SWIN_NAMING_HF); /* size unknown */
    /* any image size whose stages keep the window gives the same config */
    check_infer(FIX "swin_tiny_ref.safetensors", &ref, 2 * img, SWIN_NAMING_TIMM);
    st_close(&ref);
    if (open_fix(&demo, FIX "swin_demo_ref.safetensors")) return;
    check_infer(FIX "swin_demo_ref.safetensors", &demo, atoi(st_meta(&demo, "img_size")),
                SWIN_NAMING_TIMM);
    st_close(&demo);
}

/* ---------------------------------------------------------------------------------------- */
/* broken files: the tiny fixture's parameters (in naming n) rewritten */

typedef struct {
    const char *drop;          /* a tensor left out, or NULL */
    const char *rename_from, *rename_to;
    const char *add;           /* a tensor added (or replacing drop), or NULL */
    int add_ndim;
    int64_t add_shape[4];
} edit;

static float zeros[1 << 16];

/* Writes the Swin tensors of fixture src, edited, to a new temporary file and opens it. */
static int edited(st_file *out, const char *src, const edit *e, char *path, size_t pathlen) {
    char err[1024];
    st_file f;
    if (open_fix(&f, src)) return -1;
    snprintf(path, pathlen, "/tmp/gplq_test_swin_names_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        st_close(&f);
        return -1;
    }
    close(fd);
    st_writer *w = st_writer_new();
    for (int i = 0; i < f.ntensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (!strncmp(t->name, "grad.", 5) || !strncmp(t->name, "act.", 4) ||
            strchr(t->name, '.') == NULL)
            continue; /* the reference's data, not the model */
        if (e->drop && !strcmp(t->name, e->drop)) continue;
        const char *name = e->rename_from && !strcmp(t->name, e->rename_from) ? e->rename_to
                                                                               : t->name;
        CHECK(st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data, err, sizeof err) == 0);
    }
    if (e->add)
        CHECK(st_writer_add(w, e->add, ST_F32, e->add_ndim, e->add_shape, zeros, err, sizeof err) == 0);
    int rc = st_writer_save(w, path, err, sizeof err);
    st_writer_free(w);
    st_close(&f);
    if (rc || st_open(out, path, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        unlink(path);
        return -1;
    }
    return 0;
}

/* infer on the edited fixture fails with a message containing each of want[] */
static void expect_error(const char *src, const edit *e, int img, const char *const *want, int nwant) {
    st_file f;
    char path[64], err[2048];
    if (edited(&f, src, e, path, sizeof path)) return;
    swin_config c;
    int rc = swin_names_infer(&f, img, &c, NULL, err, sizeof err);
    CHECK_MSG(rc == -1, "%s edited: inferred a config", src);
    for (int i = 0; rc && i < nwant; i++)
        CHECK_MSG(strstr(err, want[i]) != NULL, "message lacks '%s': %s", want[i], err);
    st_close(&f);
    unlink(path);
}

#define WANT(...) (const char *const[]){__VA_ARGS__}, (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *))

TEST(unedited_copy_still_infers) {
    /* the rewriting itself breaks nothing: the control for the cases below */
    st_file f;
    char path[64], err[1024];
    edit none = {0};
    if (edited(&f, FIX "swin_tiny_ref.safetensors", &none, path, sizeof path)) return;
    swin_config c;
    CHECK_MSG(swin_names_infer(&f, 16, &c, NULL, err, sizeof err) == 0, "%s", err);
    st_close(&f);
    unlink(path);
}

TEST(not_a_swin_says_what_is_missing_and_what_is_there) {
    char path[] = "/tmp/gplq_test_swin_names_XXXXXX", err[1024];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    st_writer *w = st_writer_new();
    int64_t shape[1] = {4};
    CHECK(st_writer_add(w, "encoder.weight", ST_F32, 1, shape, zeros, err, sizeof err) == 0);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    st_file f;
    swin_naming n;
    CHECK(st_open(&f, path, err, sizeof err) == 0);
    CHECK(swin_names_detect(&f, &n, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "not a Swin checkpoint") && strstr(err, "missing: patch_embed.proj.weight") &&
              strstr(err, "unexpected: encoder.weight"), "message: %s", err);
    st_close(&f);
    unlink(path);

    /* a ViT is not a Swin, and the message says what it looks like */
    CHECK(st_open(&f, FIX "vit_tiny_ref.safetensors", err, sizeof err) == 0);
    swin_config c;
    CHECK(swin_names_infer(&f, 8, &c, &n, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "not a Swin checkpoint") && strstr(err, "looks like a ViT"), "message: %s", err);
    st_close(&f);
    CHECK(st_open(&f, FIX "vit_tiny_hf.safetensors", err, sizeof err) == 0);
    CHECK(swin_names_detect(&f, &n, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "looks like a ViT"), "message: %s", err);
    st_close(&f);
}

TEST(broken_swin_files_get_clear_messages) {
    const char *timm = FIX "swin_tiny_ref.safetensors", *old = FIX "swin_tiny_timm_old.safetensors",
               *hf = FIX "swin_tiny_hf.safetensors";
    /* a timm >= 0.9 file with a timm < 0.9 head */
    expect_error(timm, &(edit){.rename_from = "head.fc.weight", .rename_to = "head.weight"}, 16,
                 WANT("mixes timm >= 0.9 names (head.fc.bias) and timm < 0.9 names (head.weight)"));
    /* a timm < 0.9 file with a merge where timm >= 0.9 puts it */
    expect_error(old, &(edit){.add = "layers.1.downsample.norm.bias", .add_ndim = 1, .add_shape = {128}},
                 16, WANT("mixes", "layers.1.downsample.norm.bias", "head.weight"));
    /* one tensor missing, named as the file names it */
    expect_error(timm, &(edit){.drop = "layers.1.blocks.0.norm2.bias"}, 16,
                 WANT("timm checkpoint is missing 1 tensor(s): layers.1.blocks.0.norm2.bias"));
    expect_error(hf, &(edit){.drop = "swin.encoder.layers.0.blocks.1.attention.self.key.weight"}, 16,
                 WANT("huggingface checkpoint is missing 1 tensor(s): "
                      "swin.encoder.layers.0.blocks.1.attention.self.key.weight"));
    expect_error(old, &(edit){.drop = "layers.0.downsample.reduction.weight"}, 16,
                 WANT("timm < 0.9 checkpoint is missing 1 tensor(s): layers.0.downsample.reduction.weight"));
    expect_error(timm, &(edit){.drop = "head.fc.weight"}, 16,
                 WANT("timm checkpoint without 'head.fc.weight'"));
    /* a whole block missing in the middle of a stage */
    expect_error(timm, &(edit){.rename_from = "layers.1.blocks.1.norm1.weight",
                               .rename_to = "layers.1.blocks.2.norm1.weight"}, 16,
                 WANT("is missing", "layers.1.blocks.1.norm1.weight", "layers.1.blocks.2.attn.qkv.weight"));
    /* one shape inconsistent with the others */
    expect_error(timm, &(edit){.drop = "layers.1.blocks.1.mlp.fc1.weight", .add = "layers.1.blocks.1.mlp.fc1.weight",
                               .add_ndim = 2, .add_shape = {96, 32}}, 16,
                 WANT("tensor 'layers.1.blocks.1.mlp.fc1.weight' has shape [96, 32], the model needs "
                      "[128, 32]", "embed_dim 16, depths 2,2, heads 2,4, window 4, mlp_ratio 4"));
    expect_error(hf, &(edit){.drop = "swin.encoder.layers.0.downsample.reduction.weight",
                             .add = "swin.encoder.layers.0.downsample.reduction.weight", .add_ndim = 2,
                             .add_shape = {32, 32}}, 16,
                 WANT("'swin.encoder.layers.0.downsample.reduction.weight' has shape [32, 32], the "
                      "model needs [32, 64]"));
    expect_error(hf, &(edit){.drop = "swin.encoder.layers.1.blocks.1.attention.self.value.bias",
                             .add = "swin.encoder.layers.1.blocks.1.attention.self.value.bias",
                             .add_ndim = 1, .add_shape = {96}}, 16,
                 WANT("has shape [96], the model needs [32]"));
    /* bias tables: not a window's, heads not dividing the dim, a different window in a stage */
    expect_error(timm, &(edit){.drop = "layers.0.blocks.0.attn.relative_position_bias_table",
                               .add = "layers.0.blocks.0.attn.relative_position_bias_table",
                               .add_ndim = 2, .add_shape = {50, 2}}, 16,
                 WANT("has shape [50, 2]: a bias table has (2w-1)^2 rows"));
    expect_error(timm, &(edit){.drop = "layers.0.blocks.0.attn.relative_position_bias_table",
                               .add = "layers.0.blocks.0.attn.relative_position_bias_table",
                               .add_ndim = 2, .add_shape = {49, 3}}, 16,
                 WANT("a divisor of the stage's dim 16"));
    expect_error(timm, &(edit){.drop = "layers.0.blocks.1.attn.relative_position_bias_table",
                               .add = "layers.0.blocks.1.attn.relative_position_bias_table",
                               .add_ndim = 2, .add_shape = {25, 2}}, 16,
                 WANT("'layers.0.blocks.1.attn.relative_position_bias_table' has shape [25, 2], the "
                      "model needs [49, 2]"));
    expect_error(timm, &(edit){.drop = "layers.1.blocks.0.attn.relative_position_bias_table",
                               .add = "layers.1.blocks.0.attn.relative_position_bias_table",
                               .add_ndim = 2, .add_shape = {81, 4}}, 0,
                 WANT("bias table of a 5x5 window, larger than stage 0's 4x4"));
    /* the image size the caller gives must fit the tables: at 8 px stage 1 is 2x2 */
    expect_error(timm, &(edit){0}, 8,
                 WANT("'layers.1.blocks.0.attn.relative_position_bias_table' is the bias table of a "
                      "4x4 window, but stage 1 of a Swin with window 4 has 2x2 windows at image size 8"));
    expect_error(hf, &(edit){0}, 15, WANT("image size 15 is not a multiple of the patch size 2"));
    expect_error(timm, &(edit){0}, 2, WANT("leave stage 1 no tokens"));
    /* stages with a gap, variants the engine does not compute */
    expect_error(timm, &(edit){.rename_from = "layers.1.blocks.0.norm1.weight",
                               .rename_to = "layers.3.blocks.0.norm1.weight"}, 16,
                 WANT("blocks in stage 3 but none in stage 2"));
    expect_error(timm, &(edit){.add = "layers.0.blocks.0.attn.logit_scale", .add_ndim = 3,
                               .add_shape = {2, 1, 1}}, 16, WANT("Swin V2"));
    expect_error(old, &(edit){.add = "absolute_pos_embed", .add_ndim = 3, .add_shape = {1, 64, 16}},
                 16, WANT("absolute position embeddings"));
    expect_error(timm, &(edit){.rename_from = "layers.1.blocks.0.norm1.weight",
                               .rename_to = "layers.4.blocks.0.norm1.weight"}, 16,
                 WANT("more than 4 stages"));
}

TEST_MAIN()
