/*
 * test_onnx.c: the ONNX writer (onnx/graph.c) and the ViT and Swin builders (onnx/vit.c,
 * onnx/swin.c), read back with protobuf-c: FP16 rounding (util/half.c) against a slow reference, ONNX's INT4 packing, the model's IR
 * version, opsets, metadata and symbolic batch, and saving whole or not at all. That ONNX
 * Runtime computes what gplq computes is tests/integration/test_onnx.py's part.
 */
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>

#include "engine/model.h"
#include "engine/swin_ops_ref.h"
#include "io/checkpoint.h"
#include "onnx/export.h"
#include "onnx/graph.h"
#include "onnx/onnx.pb-c.h"
#include "onnx/swin.h"
#include "onnx/vit.h"
#include "util/half.h"

/* The nearest half to f by search over the ordered finite halves, ties to the even code. */
static uint16_t f16_ref(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (isnan(f)) return 0x7e00;
    if (a >= 65520.0) return sign | 0x7c00; /* past the midpoint of 65504 and 65536 */
    int lo = 0, hi = 0x7bff; /* largest h with value(h) <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (half_to_float((uint16_t)mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0x7bff) return sign | 0x7bff;
    double d0 = a - half_to_float((uint16_t)lo), d1 = half_to_float((uint16_t)(lo + 1)) - a;
    int h = d0 < d1 ? lo : d1 < d0 ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return sign | (uint16_t)h;
}

TEST(f16_every_half_round_trips) {
    int bad = 0;
    for (int h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        bad += half_from_float(half_to_float((uint16_t)h)) != h;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
}

TEST(f16_rounds_to_nearest_even_like_the_reference) {
    /* every midpoint between neighbouring halves (the ties), a value just either side of it, and
     * pseudo-random floats over the whole range, subnormals included */
    int bad = 0, n = 0;
    for (int h = 0; h < 0x7bff; h++) {
        float a = half_to_float((uint16_t)h), b = half_to_float((uint16_t)(h + 1));
        float mid = (float)(((double)a + b) / 2);
        float vs[3] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (int i = 0; i < 3; i++, n++) {
            bad += half_from_float(vs[i]) != f16_ref(vs[i]);
            bad += half_from_float(-vs[i]) != f16_ref(-vs[i]);
        }
    }
    uint32_t s = 12345;
    for (int i = 0; i < 200000; i++, n++) {
        s = s * 1664525u + 1013904223u;
        uint32_t bits = (s & 0x807fffff) | ((100 + (s >> 8) % 50) << 23); /* 2^-27 .. 2^22 */
        float f;
        memcpy(&f, &bits, 4);
        bad += half_from_float(f) != f16_ref(f);
    }
    CHECK_MSG(bad == 0, "%d of %d values round differently from the reference", bad, n);
    CHECK(half_from_float(65519.0f) == 0x7bff);
    CHECK(half_from_float(65520.0f) == 0x7c00);
    CHECK(half_from_float(-INFINITY) == 0xfc00);
    CHECK((half_from_float(NAN) & 0x7c00) == 0x7c00 && (half_from_float(NAN) & 0x3ff));
}

TEST(int4_packing_is_onnx_s) {
    int8_t codes[5] = {-8, 7, -1, 0, 3};
    uint8_t p[3];
    onnx_pack_int4(p, codes, 5);
    CHECK(p[0] == 0x78); /* -8 = 0x8 low, 7 high */
    CHECK(p[1] == 0x0f); /* -1 = 0xf low, 0 high */
    CHECK(p[2] == 0x03); /* odd count: high nibble 0 */
}

static Onnx__ModelProto *load_model(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n);
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    Onnx__ModelProto *m = got == (size_t)n ? onnx__model_proto__unpack(NULL, n, buf) : NULL;
    free(buf);
    return m;
}

TEST(graph_saves_ir10_opset21_int4_and_metadata) {
    onnx_graph *g = onnx_graph_new("t");
    int64_t d4[1] = {3}, dx[2] = {-1, 3};
    int8_t codes[3] = {1, -2, 7};
    uint8_t packed[2];
    onnx_pack_int4(packed, codes, 3);
    onnx_init_raw(g, "w", ONNX_INT4, 1, d4, packed, 2);
    onnx_init_scalar_f32(g, "s", 0, 0.5f);
    onnx_graph_input(g, "x", 2, dx, "batch");
    onnx_graph_output(g, "y", 2, dx, "batch");
    const char *in[2] = {"w", "s"}, *wd = "wd";
    int nd = onnx_node(g, "DequantizeLinear", NULL, 2, in, 1, &wd);
    onnx_attr_int(g, nd, "axis", 0);
    onnx_op2(g, "Mul", "y", "x", "wd");
    char path[] = "/tmp/gplq-test-onnx-XXXXXX", err[256], file[300];
    CHECK(mkdtemp(path) != NULL);
    snprintf(file, sizeof file, "%s/m.onnx", path);
    const char *k[1] = {"mean"}, *v[1] = {"[0.5]"};
    CHECK_MSG(onnx_graph_save(g, file, "test", k, v, 1, err, sizeof err) == 0, "%s", err);
    Onnx__ModelProto *m = load_model(file);
    CHECK(m != NULL);
    if (m) {
        CHECK(m->ir_version == 10 && m->n_opset_import == 1 && m->opset_import[0]->version == 21);
        CHECK(m->n_metadata_props == 1 && !strcmp(m->metadata_props[0]->value, "[0.5]"));
        Onnx__GraphProto *gp = m->graph;
        CHECK(gp->n_node == 2 && !strcmp(gp->node[0]->op_type, "DequantizeLinear"));
        CHECK(gp->node[0]->n_attribute == 1 && gp->node[0]->attribute[0]->i == 0);
        CHECK(gp->n_initializer == 2 && gp->initializer[0]->data_type == 22);
        CHECK(gp->initializer[0]->raw_data.len == 2 && gp->initializer[0]->raw_data.data[0] == 0xe1);
        CHECK(gp->initializer[1]->n_dims == 0); /* a scalar */
        Onnx__TypeProto__Tensor *tt = gp->input[0]->type->tensor_type;
        CHECK(tt->shape->n_dim == 2 && !strcmp(tt->shape->dim[0]->dim_param, "batch") &&
              tt->shape->dim[1]->dim_value == 3);
        onnx__model_proto__free_unpacked(m, NULL);
    }
    /* a failed save leaves nothing: not the file, not its temporary */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/no-such-dir/m.onnx", path);
    CHECK(onnx_graph_save(g, bad, "test", NULL, NULL, 0, err, sizeof err) == -1 &&
          strstr(err, "no-such-dir"));
    onnx_graph_free(g);
    remove(file);
    rmdir(path);
}

TEST(graph_errors_are_sticky_and_reported) {
    onnx_graph *g = onnx_graph_new("t");
    char err[256];
    /* no input or output declared */
    CHECK(onnx_graph_save(g, "/tmp/never-written.onnx", "t", NULL, NULL, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "no input") != NULL);
    struct stat st;
    CHECK(stat("/tmp/never-written.onnx", &st) != 0);
    CHECK(onnx_node(g, "Relu", NULL, 0, NULL, 0, NULL) == -1); /* after the error: a no-op */
    onnx_graph_free(g);
}

TEST(vit_fp32_graph_has_the_model_s_shape) {
    model mw;
    vit_model *vm = &mw.vit; /* the loader gives a model; this graph is the ViT's */
    char err[512];
    ckpt_hints h = {.allow_extra = 1};
    CHECK_MSG(ckpt_load(&mw, GPLQ_SRC_DIR "/tests/fixtures/vit_tiny_ref.safetensors", &h, NULL, err,
                        sizeof err) == 0, "%s", err);
    onnx_graph *g = onnx_graph_new("vit");
    CHECK_MSG(onnx_vit_build(g, vm, NULL, NULL, ONNX_KIND_FP32, NULL, err, sizeof err) == 0, "%s", err);
    char path[] = "/tmp/gplq-test-onnx-XXXXXX", file[300];
    CHECK(mkdtemp(path) != NULL);
    snprintf(file, sizeof file, "%s/v.onnx", path);
    CHECK_MSG(onnx_graph_save(g, file, "t", NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    Onnx__ModelProto *mp = load_model(file);
    CHECK(mp != NULL);
    if (mp) {
        Onnx__GraphProto *gp = mp->graph;
        int ln = 0, mm = 0, q = 0;
        for (size_t i = 0; i < gp->n_node; i++) {
            ln += !strcmp(gp->node[i]->op_type, "LayerNormalization");
            mm += !strcmp(gp->node[i]->op_type, "MatMul");
            q += !strcmp(gp->node[i]->op_type, "QuantizeLinear");
        }
        int L = vm->cfg.depth;
        CHECK(ln == 2 * L + 1 + vm->cfg.distilled);
        CHECK(mm == 6 * L + 1 + vm->cfg.distilled); /* qkv, 2 attention, proj, fc1, fc2; heads */
        CHECK(q == 0);
        CHECK(!strcmp(gp->input[0]->name, "pixel_values") && !strcmp(gp->output[0]->name, "logits"));
        Onnx__TensorShapeProto *s = gp->input[0]->type->tensor_type->shape;
        CHECK(s->n_dim == 4 && s->dim[0]->value_case ==
                                   ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
              s->dim[1]->dim_value == vm->cfg.in_chans && s->dim[3]->dim_value == vm->cfg.img_size);
        onnx__model_proto__free_unpacked(mp, NULL);
    }
    /* a quantized kind without quantizers is refused */
    onnx_graph *g2 = onnx_graph_new("vit");
    CHECK(onnx_vit_build(g2, vm, NULL, NULL, ONNX_KIND_QDQ, NULL, err, sizeof err) == -1);
    onnx_graph_free(g2);
    onnx_graph_free(g);
    model_free(&mw);
    remove(file);
    rmdir(path);
}

/* The initializer named name in gp, or NULL. */
static Onnx__TensorProto *find_init(Onnx__GraphProto *gp, const char *name) {
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (!strcmp(gp->initializer[i]->name, name)) return gp->initializer[i];
    return NULL;
}

/* 1 if every node input is the graph's input, an initializer or an earlier node's output, and
 * no name is defined twice: what ONNX Runtime needs to load the graph as meant. */
static int graph_is_closed(Onnx__GraphProto *gp, char *why, size_t n) {
    size_t cap = 1 + gp->n_initializer, nd = 0;
    for (size_t i = 0; i < gp->n_node; i++) cap += gp->node[i]->n_output;
    const char **def = malloc(sizeof *def * cap);
    def[nd++] = gp->input[0]->name;
    for (size_t i = 0; i < gp->n_initializer; i++) def[nd++] = gp->initializer[i]->name;
    int ok = 1;
    for (size_t i = 0; ok && i < gp->n_node; i++) {
        Onnx__NodeProto *no = gp->node[i];
        for (size_t k = 0; ok && k < no->n_input; k++) {
            size_t j = 0;
            while (j < nd && strcmp(def[j], no->input[k])) j++;
            if (j == nd && no->input[k][0]) {
                snprintf(why, n, "%s's input '%s' is not defined before it", no->op_type,
                         no->input[k]);
                ok = 0;
            }
        }
        for (size_t k = 0; k < no->n_output; k++) def[nd++] = no->output[k];
    }
    for (size_t i = 0; ok && i < nd; i++)
        for (size_t j = i + 1; ok && j < nd; j++)
            if (!strcmp(def[i], def[j])) {
                snprintf(why, n, "'%s' is defined twice", def[i]);
                ok = 0;
            }
    free(def);
    return ok;
}

static int count_op(Onnx__GraphProto *gp, const char *op) {
    int n = 0;
    for (size_t i = 0; i < gp->n_node; i++) n += !strcmp(gp->node[i]->op_type, op);
    return n;
}

TEST(swin_fp32_graph_has_the_model_s_shape) {
    /* three stages: 16x16 tokens in windows of 4 (blocks 1 and 3 shifted), then 4x4 where the
     * window covers the map (no partition, no shift) */
    model_config cfg = {.arch = MODEL_SWIN,
                        .swin = {.img_size = 32, .patch = 2, .in_chans = 1, .embed_dim = 8,
                                 .stages = 3, .depths = {2, 2, 2}, .heads = {1, 2, 4},
                                 .window = 4, .mlp_ratio = 2, .num_classes = 10, .ln_eps = 1e-5f,
                                 .mean = {0.286f}, .std = {0.353f}}};
    model mw;
    char err[512], why[256] = "";
    CHECK_MSG(model_init(&mw, &cfg, err, sizeof err) == 0, "%s", err);
    model_init_weights(&mw, 1);
    const swin_model *sm = &mw.swin;
    onnx_graph *g = onnx_graph_new("swin");
    CHECK_MSG(onnx_swin_build(g, sm, NULL, NULL, ONNX_KIND_FP32, NULL, err, sizeof err) == 0, "%s",
              err);
    char path[] = "/tmp/gplq-test-onnx-XXXXXX", file[300];
    CHECK(mkdtemp(path) != NULL);
    snprintf(file, sizeof file, "%s/s.onnx", path);
    CHECK_MSG(onnx_graph_save(g, file, "t", NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    Onnx__ModelProto *mp = load_model(file);
    CHECK(mp != NULL);
    if (mp) {
        Onnx__GraphProto *gp = mp->graph;
        int L = 6;
        CHECK_MSG(graph_is_closed(gp, why, sizeof why), "%s", why);
        /* patch norm, 2 per block, 2 merges, the final norm */
        CHECK(count_op(gp, "LayerNormalization") == 1 + 2 * L + 2 + 1);
        /* qkv, q k^T, att v, proj, fc1, fc2 per block; 2 reductions; the head */
        CHECK(count_op(gp, "MatMul") == 6 * L + 2 + 1);
        CHECK(count_op(gp, "Gather") == 2 * 4); /* partition and reverse, stages 0 and 1 */
        CHECK(count_op(gp, "Softmax") == L && count_op(gp, "Gelu") == L);
        CHECK(count_op(gp, "ReduceMean") == 1 && count_op(gp, "QuantizeLinear") == 0);
        CHECK(count_op(gp, "Conv") == 1);
        /* the partition of a shifted block is timm's roll + window_partition (the reference),
         * and the reverse index undoes it */
        Onnx__TensorProto *pi = find_init(gp, "b1.partition.index");
        Onnx__TensorProto *ri = find_init(gp, "b1.reverse.index");
        CHECK(pi && ri && pi->n_dims == 1 && pi->dims[0] == 256 && pi->raw_data.len == 256 * 8);
        if (pi && ri && pi->raw_data.len == 256 * 8 && ri->raw_data.len == 256 * 8) {
            float num[256], ref[256];
            for (int t = 0; t < 256; t++) num[t] = (float)t;
            swin_window_partition_forward_ref(ref, num, 1, 16, 1, 4, 2);
            int64_t p[256], r[256];
            memcpy(p, pi->raw_data.data, sizeof p);
            memcpy(r, ri->raw_data.data, sizeof r);
            int bad = 0;
            for (int i = 0; i < 256; i++) bad += p[i] != (int64_t)ref[i] || r[p[i] & 255] != i;
            CHECK_MSG(bad == 0, "%d partition entries differ from the reference", bad);
        }
        /* no partition where the window covers the map */
        CHECK(find_init(gp, "b4.partition.index") == NULL);
        /* masks on the shifted blocks only, (nW, 1, N, N) */
        Onnx__TensorProto *m1 = find_init(gp, "b1.attn.shift_mask");
        Onnx__TensorProto *m3 = find_init(gp, "b3.attn.shift_mask");
        CHECK(m1 && m1->n_dims == 4 && m1->dims[0] == 16 && m1->dims[1] == 1 && m1->dims[2] == 16);
        CHECK(m3 && m3->n_dims == 4 && m3->dims[0] == 4 && m3->dims[3] == 16);
        CHECK(!find_init(gp, "b0.attn.shift_mask") && !find_init(gp, "b5.attn.shift_mask"));
        /* the relative position bias of block 0: the reference's gather of its table */
        Onnx__TensorProto *bi = find_init(gp, "b0.attn.relpos_bias");
        CHECK(bi && bi->n_dims == 3 && bi->dims[0] == 1 && bi->dims[1] == 16 &&
              bi->raw_data.len == 256 * 4);
        if (bi && bi->raw_data.len == 256 * 4) {
            int idx[256];
            float want[256], got[256];
            swin_relpos_index_ref(idx, 4);
            swin_relpos_bias_forward_ref(want, sm->params.stage[0].bias_table, idx, 16, 1);
            memcpy(got, bi->raw_data.data, sizeof got);
            CHECK(memcmp(want, got, sizeof got) == 0);
        }
        /* the merge reduction: (4Cp, C), no bias */
        Onnx__TensorProto *mr = find_init(gp, "layers.1.downsample.reduction.weight");
        CHECK(mr && mr->n_dims == 2 && mr->dims[0] == 32 && mr->dims[1] == 16);
        CHECK(!find_init(gp, "layers.1.downsample.reduction.bias"));
        Onnx__TensorShapeProto *s = gp->output[0]->type->tensor_type->shape;
        CHECK(!strcmp(gp->output[0]->name, "logits") && s->n_dim == 2 &&
              s->dim[1]->dim_value == 10);
        onnx__model_proto__free_unpacked(mp, NULL);
    }
    onnx_graph *g2 = onnx_graph_new("swin");
    CHECK(onnx_swin_build(g2, sm, NULL, NULL, ONNX_KIND_W4, NULL, err, sizeof err) == -1);
    onnx_graph_free(g2);
    onnx_graph_free(g);
    model_free(&mw);
    remove(file);
    rmdir(path);
}

TEST_MAIN()
