/*
 * graph.c: see graph.h. Nodes and initializers are protobuf-c messages built as they are added;
 * every string lives in the graph's arena, so a node's input lists only point at names.
 */
#include "onnx/graph.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/onnx.pb-c.h"
#include "util/fs.h"
#include "util/half.h"

typedef struct {
    const char *name, *sym;
    int ndim;
    int64_t dims[ONNX_MAX_DIMS];
} io_desc;

struct onnx_graph {
    char *name;
    char **strs; /* arena: every string the messages point at */
    size_t nstrs, capstrs;
    Onnx__NodeProto **nodes;
    size_t nnodes, capnodes;
    Onnx__TensorProto **inits;
    size_t ninits, capinits;
    io_desc in, out;
    int uses_ms; /* a node in com.microsoft */
    char err[256];
};

static void fail(onnx_graph *g, const char *what) {
    if (!g->err[0]) snprintf(g->err, sizeof g->err, "onnx: %s", what);
}

/* Grows *arr (elements of size sz) to hold one more; 0 or -1 (recorded in g). */
static int grow(onnx_graph *g, void **arr, size_t *cap, size_t n, size_t sz) {
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * sz);
    if (!p) {
        fail(g, "out of memory");
        return -1;
    }
    *arr = p;
    *cap = nc;
    return 0;
}

/* s copied into the arena; "" after an error. */
static char *keep(onnx_graph *g, const char *s) {
    if (g->err[0]) return "";
    char *c = strdup(s);
    if (!c || grow(g, (void **)&g->strs, &g->capstrs, g->nstrs, sizeof *g->strs)) {
        free(c);
        fail(g, "out of memory");
        return "";
    }
    g->strs[g->nstrs++] = c;
    return c;
}

onnx_graph *onnx_graph_new(const char *name) {
    onnx_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->name = keep(g, name);
    if (g->err[0]) {
        onnx_graph_free(g);
        return NULL;
    }
    return g;
}

static void free_node(Onnx__NodeProto *n) {
    if (!n) return;
    free(n->input);
    free(n->output);
    for (size_t i = 0; i < n->n_attribute; i++) {
        free(n->attribute[i]->ints);
        free(n->attribute[i]);
    }
    free(n->attribute);
    free(n);
}

void onnx_graph_free(onnx_graph *g) {
    if (!g) return;
    for (size_t i = 0; i < g->nnodes; i++) free_node(g->nodes[i]);
    free(g->nodes);
    for (size_t i = 0; i < g->ninits; i++) {
        free(g->inits[i]->dims);
        free(g->inits[i]->raw_data.data);
        free(g->inits[i]);
    }
    free(g->inits);
    for (size_t i = 0; i < g->nstrs; i++) free(g->strs[i]);
    free(g->strs);
    free(g);
}

const char *onnx_graph_error(const onnx_graph *g) { return g->err[0] ? g->err : NULL; }

const char *onnx_name(onnx_graph *g, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof buf) {
        fail(g, "tensor name too long");
        return "";
    }
    return keep(g, buf);
}

static void set_io(onnx_graph *g, io_desc *d, const char *name, int ndim, const int64_t *dims,
                   const char *sym) {
    if (ndim < 0 || ndim > ONNX_MAX_DIMS) {
        fail(g, "bad rank of the graph's input or output");
        return;
    }
    d->name = keep(g, name);
    d->sym = keep(g, sym ? sym : "");
    d->ndim = ndim;
    memcpy(d->dims, dims, sizeof(int64_t) * ndim);
}

void onnx_graph_input(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const char *sym) {
    set_io(g, &g->in, name, ndim, dims, sym);
}

void onnx_graph_output(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const char *sym) {
    set_io(g, &g->out, name, ndim, dims, sym);
}

/* ---- initializers ---- */

static size_t numel(int ndim, const int64_t *dims) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    return n;
}

/* Takes ownership of raw (malloc'ed, nbytes) in every case. */
static void add_init(onnx_graph *g, const char *name, onnx_dtype t, int ndim, const int64_t *dims,
                     void *raw, size_t nbytes) {
    Onnx__TensorProto *tp = NULL;
    int64_t *d = NULL;
    if (g->err[0] || !raw) goto fail;
    if (ndim < 0 || ndim > ONNX_MAX_DIMS) {
        fail(g, "bad initializer rank");
        goto fail;
    }
    tp = malloc(sizeof *tp);
    d = malloc(sizeof(int64_t) * (ndim ? ndim : 1));
    if (!tp || !d || grow(g, (void **)&g->inits, &g->capinits, g->ninits, sizeof *g->inits))
        goto fail;
    onnx__tensor_proto__init(tp);
    memcpy(d, dims, sizeof(int64_t) * ndim);
    tp->n_dims = ndim;
    tp->dims = d;
    tp->has_data_type = 1;
    tp->data_type = t;
    tp->name = keep(g, name);
    tp->has_raw_data = 1;
    tp->raw_data.len = nbytes;
    tp->raw_data.data = raw;
    g->inits[g->ninits++] = tp;
    return;
fail:
    fail(g, "out of memory");
    free(tp);
    free(d);
    free(raw);
}

static void *dup_bytes(const void *p, size_t n) {
    void *c = malloc(n ? n : 1);
    if (c && n) memcpy(c, p, n);
    return c;
}

/* The raw data is little-endian, as onnx.proto requires; so is every host gplq builds on. */
void onnx_init_f32(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const float *data) {
    size_t n = numel(ndim, dims) * sizeof(float);
    add_init(g, name, ONNX_FLOAT, ndim, dims, dup_bytes(data, n), n);
}

void onnx_init_f16(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const float *data) {
    size_t n = numel(ndim, dims);
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; h && i < n; i++) h[i] = half_from_float(data[i]);
    add_init(g, name, ONNX_FLOAT16, ndim, dims, h, n * sizeof(uint16_t));
}

void onnx_init_i64(onnx_graph *g, const char *name, int ndim, const int64_t *dims, const int64_t *data) {
    size_t n = numel(ndim, dims) * sizeof(int64_t);
    add_init(g, name, ONNX_INT64, ndim, dims, dup_bytes(data, n), n);
}

void onnx_init_raw(onnx_graph *g, const char *name, onnx_dtype t, int ndim, const int64_t *dims,
                   const void *raw, size_t nbytes) {
    add_init(g, name, t, ndim, dims, dup_bytes(raw, nbytes), nbytes);
}

void onnx_init_scalar_f32(onnx_graph *g, const char *name, int ndim, float v) {
    int64_t one = 1;
    onnx_init_f32(g, name, ndim ? 1 : 0, &one, &v);
}

void onnx_init_ints(onnx_graph *g, const char *name, int n, ...) {
    int64_t v[ONNX_MAX_DIMS], d = n;
    if (n < 0 || n > ONNX_MAX_DIMS) {
        fail(g, "too many ints");
        return;
    }
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) v[i] = va_arg(ap, int64_t);
    va_end(ap);
    onnx_init_i64(g, name, 1, &d, v);
}

void onnx_pack_int4(uint8_t *dst, const int8_t *codes, size_t n) {
    for (size_t i = 0; i < n; i += 2) {
        uint8_t lo = (uint8_t)codes[i] & 0xF, hi = i + 1 < n ? (uint8_t)codes[i + 1] & 0xF : 0;
        dst[i / 2] = (uint8_t)(lo | hi << 4);
    }
}

/* ---- nodes ---- */

int onnx_node(onnx_graph *g, const char *op_type, const char *domain, int nin,
              const char *const *inputs, int nout, const char *const *outputs) {
    if (g->err[0]) return -1;
    Onnx__NodeProto *n = malloc(sizeof *n);
    char **in = malloc(sizeof(char *) * (nin ? nin : 1));
    char **out = malloc(sizeof(char *) * (nout ? nout : 1));
    if (!n || !in || !out || grow(g, (void **)&g->nodes, &g->capnodes, g->nnodes, sizeof *g->nodes)) {
        free(n), free(in), free(out);
        fail(g, "out of memory");
        return -1;
    }
    onnx__node_proto__init(n);
    for (int i = 0; i < nin; i++) in[i] = (char *)inputs[i];
    for (int i = 0; i < nout; i++) out[i] = (char *)outputs[i];
    n->n_input = nin, n->input = in;
    n->n_output = nout, n->output = out;
    n->op_type = keep(g, op_type);
    n->name = (char *)onnx_name(g, "%s_%zu", op_type, g->nnodes);
    if (domain) {
        n->domain = keep(g, domain);
        g->uses_ms |= !strcmp(domain, "com.microsoft");
    }
    g->nodes[g->nnodes++] = n;
    return g->err[0] ? -1 : (int)g->nnodes - 1;
}

static Onnx__AttributeProto *new_attr(onnx_graph *g, int node, const char *name,
                                      Onnx__AttributeProto__AttributeType t) {
    if (g->err[0] || node < 0 || (size_t)node >= g->nnodes) return NULL;
    Onnx__NodeProto *n = g->nodes[node];
    Onnx__AttributeProto *a = malloc(sizeof *a);
    Onnx__AttributeProto **arr = realloc(n->attribute, sizeof *arr * (n->n_attribute + 1));
    if (!a || !arr) {
        free(a);
        if (arr) n->attribute = arr;
        fail(g, "out of memory");
        return NULL;
    }
    onnx__attribute_proto__init(a);
    a->name = keep(g, name);
    a->has_type = 1;
    a->type = t;
    n->attribute = arr;
    n->attribute[n->n_attribute++] = a;
    return a;
}

void onnx_attr_int(onnx_graph *g, int node, const char *name, int64_t v) {
    Onnx__AttributeProto *a = new_attr(g, node, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = 1, a->i = v;
}

void onnx_attr_float(onnx_graph *g, int node, const char *name, float v) {
    Onnx__AttributeProto *a = new_attr(g, node, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = 1, a->f = v;
}

void onnx_attr_string(onnx_graph *g, int node, const char *name, const char *v) {
    Onnx__AttributeProto *a = new_attr(g, node, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    if (!a) return;
    char *s = keep(g, v);
    a->has_s = 1;
    a->s.len = strlen(s);
    a->s.data = (uint8_t *)s;
}

void onnx_attr_ints(onnx_graph *g, int node, const char *name, int n, const int64_t *v) {
    Onnx__AttributeProto *a = new_attr(g, node, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (!a) return;
    a->ints = dup_bytes(v, sizeof(int64_t) * n);
    if (!a->ints) {
        fail(g, "out of memory");
        return;
    }
    a->n_ints = n;
}

const char *onnx_op1(onnx_graph *g, const char *op, const char *out, const char *a) {
    const char *in[] = {a};
    onnx_node(g, op, NULL, 1, in, 1, &out);
    return out;
}

const char *onnx_op2(onnx_graph *g, const char *op, const char *out, const char *a, const char *b) {
    const char *in[] = {a, b};
    onnx_node(g, op, NULL, 2, in, 1, &out);
    return out;
}

const char *onnx_op3(onnx_graph *g, const char *op, const char *out, const char *a, const char *b,
                     const char *c) {
    const char *in[] = {a, b, c};
    onnx_node(g, op, NULL, 3, in, 1, &out);
    return out;
}

/* ---- saving ---- */

/* The value info of the graph's input or output, in caller-provided storage. */
typedef struct {
    Onnx__ValueInfoProto vi;
    Onnx__TypeProto tp;
    Onnx__TypeProto__Tensor tt;
    Onnx__TensorShapeProto shape;
    Onnx__TensorShapeProto__Dimension dim[ONNX_MAX_DIMS];
    Onnx__TensorShapeProto__Dimension *pdim[ONNX_MAX_DIMS];
} io_proto;

static void make_io(io_proto *p, const io_desc *d) {
    onnx__value_info_proto__init(&p->vi);
    onnx__type_proto__init(&p->tp);
    onnx__type_proto__tensor__init(&p->tt);
    onnx__tensor_shape_proto__init(&p->shape);
    for (int i = 0; i < d->ndim; i++) {
        onnx__tensor_shape_proto__dimension__init(&p->dim[i]);
        if (d->dims[i] < 0) {
            p->dim[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            p->dim[i].dim_param = (char *)d->sym;
        } else {
            p->dim[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            p->dim[i].dim_value = d->dims[i];
        }
        p->pdim[i] = &p->dim[i];
    }
    p->shape.n_dim = d->ndim;
    p->shape.dim = p->pdim;
    p->tt.has_elem_type = 1;
    p->tt.elem_type = ONNX_FLOAT;
    p->tt.shape = &p->shape;
    p->tp.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    p->tp.tensor_type = &p->tt;
    p->vi.name = (char *)d->name;
    p->vi.type = &p->tp;
}

int onnx_graph_save(onnx_graph *g, const char *path, const char *producer_version,
                    const char *const *meta_keys, const char *const *meta_vals, int nmeta,
                    char *err, size_t errlen) {
    if (!g->in.name || !g->out.name) fail(g, "the graph has no input or no output");
    if (g->err[0]) {
        snprintf(err, errlen, "%s", g->err);
        return -1;
    }
    io_proto in, out;
    make_io(&in, &g->in);
    make_io(&out, &g->out);
    Onnx__ValueInfoProto *pin = &in.vi, *pout = &out.vi;
    Onnx__GraphProto gp;
    onnx__graph_proto__init(&gp);
    gp.name = g->name;
    gp.n_node = g->nnodes, gp.node = g->nodes;
    gp.n_initializer = g->ninits, gp.initializer = g->inits;
    gp.n_input = 1, gp.input = &pin;
    gp.n_output = 1, gp.output = &pout;

    Onnx__OperatorSetIdProto ops[2], *pops[2] = {&ops[0], &ops[1]};
    onnx__operator_set_id_proto__init(&ops[0]);
    onnx__operator_set_id_proto__init(&ops[1]);
    ops[0].domain = "";
    ops[0].has_version = 1, ops[0].version = ONNX_OPSET;
    ops[1].domain = "com.microsoft";
    ops[1].has_version = 1, ops[1].version = 1;

    Onnx__StringStringEntryProto *ents = calloc(nmeta ? nmeta : 1, sizeof *ents);
    Onnx__StringStringEntryProto **pents = calloc(nmeta ? nmeta : 1, sizeof *pents);
    if (!ents || !pents) {
        free(ents), free(pents);
        snprintf(err, errlen, "onnx: out of memory");
        return -1;
    }
    for (int i = 0; i < nmeta; i++) {
        onnx__string_string_entry_proto__init(&ents[i]);
        ents[i].key = (char *)meta_keys[i];
        ents[i].value = (char *)meta_vals[i];
        pents[i] = &ents[i];
    }
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    mp.has_ir_version = 1;
    mp.ir_version = ONNX_IR_VERSION; /* 10: not a constant of Debian's 1.12 onnx.proto */
    mp.n_opset_import = g->uses_ms ? 2 : 1;
    mp.opset_import = pops;
    mp.producer_name = "gplq";
    mp.producer_version = (char *)producer_version;
    mp.graph = &gp;
    mp.n_metadata_props = nmeta;
    mp.metadata_props = pents;

    int rc = -1;
    size_t n = onnx__model_proto__get_packed_size(&mp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        snprintf(err, errlen, "onnx: out of memory (%zu bytes)", n);
    } else if (onnx__model_proto__pack(&mp, buf) != n) {
        snprintf(err, errlen, "onnx: protobuf-c packed a different size than it announced");
    } else if (fs_write_atomic(path, buf, n)) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    free(buf);
    free(ents);
    free(pents);
    return rc;
}
