/*
 * safetensors.c: reader and writer for the safetensors checkpoint format (see safetensors.h).
 *
 * The reader trusts nothing in the file. It parses the JSON header with jansson, checks every
 * entry (keys, dtype, shape, offsets) and then checks that the tensors, sorted by offset, tile
 * the data buffer exactly, as the reference implementation does. Only after all of that does
 * it hand out pointers into the buffer, so no later code can read outside it.
 *
 * The writer produces what the reference writer produces (compact JSON, header padded with
 * spaces to a multiple of 8 bytes, contiguous offsets) except that tensors keep the order in
 * which they were added, and it writes through a temporary file so a crash never leaves a
 * half-written checkpoint under the final name.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/half.h"
#include "util/utf8.h"

/* Element loads below memcpy the file's little-endian bytes straight into host integers. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* ---------------------------------------------------------------------------------------- */
/* dtypes */

static const struct {
    const char *name;
    size_t size;
} st_dtype_traits[ST_NDTYPES] = {
    [ST_F64] = {"F64", 8}, [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1}, [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

static int st_dtype_valid(st_dtype d) { return (unsigned)d < (unsigned)ST_NDTYPES; }

size_t st_dtype_size(st_dtype d) { return st_dtype_valid(d) ? st_dtype_traits[d].size : 0; }

const char *st_dtype_name(st_dtype d) { return st_dtype_valid(d) ? st_dtype_traits[d].name : "?"; }

int st_dtype_parse(const char *s, st_dtype *out) {
    if (!s) return -1;
    for (int i = 0; i < ST_NDTYPES; i++) {
        if (strcmp(s, st_dtype_traits[i].name) == 0) {
            *out = (st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* error helpers */

/* Writes a message into err (if there is room for anything at all) and returns -1, so that
 * every failure path is a single `return st_fail(...)`. */
__attribute__((format(printf, 3, 4))) static int st_fail(char *err, size_t errlen,
                                                          const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Quotes a name from the file for use in a message: 'name', with control characters, quotes
 * and backslashes escaped and long names cut, because the name is attacker-controlled and
 * must neither corrupt a terminal nor push the actual problem out of the error buffer.
 * Returns buf. */
static const char *st_quote(const char *s, char *buf, size_t n) {
    enum { MAX_SHOWN = 80 };
    size_t o = 0, shown = 0;
    buf[o++] = '\'';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, shown++) {
        /* Stop before a UTF-8 lead byte once over the limit, so we never cut a character. */
        if (shown >= MAX_SHOWN && (*p & 0xC0) != 0x80) {
            if (o + 4 < n) {
                memcpy(buf + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (o + 6 >= n) break;
        if (*p < 0x20 || *p == 0x7F || *p == '\'' || *p == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *p);
        else
            buf[o++] = (char)*p;
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}
#define ST_QBUF 400 /* enough for MAX_SHOWN characters, each escaped to 4 bytes, plus quotes */

/* "[4, 4]" into buf (n bytes). */
static const char *st_format_shape(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}
#define ST_SHAPEBUF (ST_MAX_DIMS * 24 + 4)

static const char *st_json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------- */
/* reader */

/* Frees everything f owns except the mapping itself and zeroes f. */
static void st_free_contents(st_file *f) {
    if (f->tensors) {
        for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
        free(f->tensors);
    }
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    memset(f, 0, sizeof *f);
}

/* Reads a JSON list of at most max integers into out and returns how many there were, or -1
 * with *why describing what v is instead (for the message) if it is not such a list. */
static int st_int_list(const json_t *v, int64_t *out, int max, const char **why) {
    if (!json_is_array(v)) {
        *why = st_json_type_name(v);
        return -1;
    }
    size_t n = json_array_size(v);
    if (n > (size_t)max) {
        *why = "a longer list";
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_integer(e)) {
            *why = json_is_real(e) ? "a list holding a real number"
                                   : "a list holding a non-integer";
            return -1;
        }
        out[i] = (int64_t)json_integer_value(e);
    }
    return (int)n;
}

/* Validates one header entry ({"dtype","shape","data_offsets"}) against a data buffer of
 * data_len bytes and fills t (all but name). begin/end receive the offsets for the tiling
 * check. */
static int st_parse_entry(const char *name, const json_t *v, const unsigned char *data,
                          size_t data_len, st_tensor *t, size_t *begin, size_t *end, char *err,
                          size_t errlen) {
    char qn[ST_QBUF], qk[ST_QBUF], sh[ST_SHAPEBUF];
    st_quote(name, qn, sizeof qn);
    if (!json_is_object(v))
        return st_fail(err, errlen, "tensor %s: entry is %s, not an object", qn,
                       st_json_type_name(v));

    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return st_fail(err, errlen,
                           "tensor %s: unexpected key %s (expected dtype, shape, data_offsets)",
                           qn, st_quote(key, qk, sizeof qk));
    }
    static const char *const required[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, required[i]))
            return st_fail(err, errlen, "tensor %s: missing key '%s'", qn, required[i]);

    const json_t *jd = json_object_get(v, "dtype");
    if (!json_is_string(jd))
        return st_fail(err, errlen, "tensor %s: dtype must be a string, not %s", qn,
                       st_json_type_name(jd));
    if (st_dtype_parse(json_string_value(jd), &t->dtype) != 0)
        return st_fail(err, errlen, "tensor %s: unknown dtype %s", qn,
                       st_quote(json_string_value(jd), qk, sizeof qk));

    const char *why = "";
    const json_t *js = json_object_get(v, "shape");
    if (json_is_array(js) && json_array_size(js) > ST_MAX_DIMS)
        return st_fail(err, errlen, "tensor %s: too many dims: shape has %zu, the limit is %d",
                       qn, json_array_size(js), ST_MAX_DIMS);
    int ndim = st_int_list(js, t->shape, ST_MAX_DIMS, &why);
    if (ndim < 0)
        return st_fail(err, errlen, "tensor %s: shape must be a list of integers, not %s", qn, why);
    t->ndim = ndim;
    st_format_shape(t->shape, ndim, sh, sizeof sh);

    /* numel and byte size with overflow checks: a hostile shape must not wrap around into a
     * small size that then "matches" the offsets. */
    size_t esize = st_dtype_size(t->dtype);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] < 0)
            return st_fail(err, errlen, "tensor %s: negative dim %lld in shape %s", qn,
                           (long long)t->shape[i], sh);
    }
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] != 0 && numel > INT64_MAX / t->shape[i])
            return st_fail(err, errlen, "tensor %s: shape %s overflows the element count", qn,
                           sh);
        numel *= t->shape[i];
    }
    if ((uint64_t)numel > (uint64_t)INT64_MAX / esize || (uint64_t)numel > SIZE_MAX / esize)
        return st_fail(err, errlen, "tensor %s: dtype %s x shape %s overflows the byte size", qn,
                       st_dtype_name(t->dtype), sh);
    t->numel = numel;
    t->nbytes = (size_t)numel * esize;

    int64_t off[2];
    const json_t *jo = json_object_get(v, "data_offsets");
    int noff = st_int_list(jo, off, 2, &why);
    if (noff >= 0 && noff != 2) why = "a shorter list";
    if (noff != 2)
        return st_fail(err, errlen,
                       "tensor %s: data_offsets must be a list of two integers, not %s", qn, why);
    if (off[0] < 0 || off[1] < 0)
        return st_fail(err, errlen, "tensor %s: data_offsets [%lld, %lld] must be non-negative",
                       qn, (long long)off[0], (long long)off[1]);
    if (off[1] < off[0])
        return st_fail(err, errlen, "tensor %s: data_offsets [%lld, %lld]: end before begin", qn,
                       (long long)off[0], (long long)off[1]);
    if ((uint64_t)off[1] > (uint64_t)data_len)
        return st_fail(err, errlen,
                       "tensor %s: data_offsets [%lld, %lld] out of range: the data buffer has "
                       "%zu bytes",
                       qn, (long long)off[0], (long long)off[1], data_len);
    if ((uint64_t)(off[1] - off[0]) != (uint64_t)t->nbytes)
        return st_fail(err, errlen,
                       "tensor %s: data_offsets [%lld, %lld] do not match dtype %s x shape %s "
                       "(%zu bytes)",
                       qn, (long long)off[0], (long long)off[1], st_dtype_name(t->dtype), sh,
                       t->nbytes);
    *begin = (size_t)off[0];
    *end = (size_t)off[1];
    t->data = data + *begin;
    return 0;
}

/* Copies __metadata__ (an object of strings) into f. */
static int st_parse_meta(st_file *f, const json_t *m, char *err, size_t errlen) {
    char qk[ST_QBUF];
    if (!json_is_object(m))
        return st_fail(err, errlen, "__metadata__ must be an object of string values, not %s",
                       st_json_type_name(m));
    size_t n = json_object_size(m);
    if (n > INT_MAX) return st_fail(err, errlen, "__metadata__ has too many keys");
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) return st_fail(err, errlen, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)m, key, val) {
        if (!json_is_string(val))
            return st_fail(err, errlen, "__metadata__ key %s: value is %s, not a string",
                           st_quote(key, qk, sizeof qk), st_json_type_name(val));
        char *k = strdup(key), *v = strdup(json_string_value(val));
        if (!k || !v) {
            free(k);
            free(v);
            return st_fail(err, errlen, "out of memory");
        }
        f->meta_keys[f->nmeta] = k;
        f->meta_vals[f->nmeta] = v;
        f->nmeta++;
    }
    return 0;
}

/* One tensor's extent in the data buffer, for the tiling check. */
struct st_extent {
    size_t begin, end;
    int index;
};

static int st_extent_cmp(const void *a, const void *b) {
    const struct st_extent *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The reference implementation requires the tensors, sorted by offsets, to cover the data
 * buffer exactly: each begins where the previous ended and the last ends at the buffer's end.
 * Anything else is an overlap (two tensors alias bytes) or a hole (bytes nobody owns). */
static int st_check_tiling(const st_file *f, struct st_extent *ext, size_t data_len, char *err,
                           size_t errlen) {
    char qa[ST_QBUF], qb[ST_QBUF];
    int n = f->ntensors;
    qsort(ext, (size_t)n, sizeof *ext, st_extent_cmp);
    size_t pos = 0;
    int prev = -1;
    for (int i = 0; i < n; i++) {
        const struct st_extent *e = &ext[i];
        const char *name = f->tensors[e->index].name;
        if (e->begin < pos)
            return st_fail(err, errlen,
                           "tensor %s: data_offsets [%zu, %zu] overlap tensor %s [%zu, %zu]",
                           st_quote(name, qa, sizeof qa), e->begin, e->end,
                           st_quote(f->tensors[ext[prev].index].name, qb, sizeof qb),
                           ext[prev].begin, ext[prev].end);
        if (e->begin > pos)
            return st_fail(err, errlen,
                           "hole in the data buffer: bytes [%zu, %zu) before tensor %s belong to "
                           "no tensor",
                           pos, e->begin, st_quote(name, qa, sizeof qa));
        pos = e->end;
        prev = i;
    }
    if (pos != data_len) {
        if (prev < 0)
            return st_fail(err, errlen,
                           "hole in the data buffer: it has %zu bytes but the header lists no "
                           "tensors",
                           data_len);
        return st_fail(err, errlen,
                       "hole in the data buffer: bytes [%zu, %zu) after tensor %s belong to no "
                       "tensor",
                       pos, data_len, st_quote(f->tensors[ext[prev].index].name, qa, sizeof qa));
    }
    return 0;
}

/* Counts what json_loadb would build from the header (n bytes), without building it, and
 * refuses it past the ST_MAX_HEADER_* limits with a message naming the limit: top-level
 * entries, objects and lists, and values (every string, key or not, number, literal, object
 * and list). A linear scan that only tracks strings and nesting; malformed JSON is counted as
 * it comes and left to the parser to name. */
static int st_check_header_counts(const char *hdr, size_t n, char *err, size_t errlen) {
    long entries = 0, containers = 0, values = 0;
    int depth = 0, in_string = 0, in_scalar = 0, top_is_object = 0, expect_key = 0;
    for (size_t i = 0; i < n; i++) {
        char c = hdr[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
            continue;
        }
        int scalar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     c == '-' || c == '+' || c == '.';
        values += scalar && !in_scalar;
        in_scalar = scalar;
        if (c == '"') {
            in_string = 1;
            values++;
            if (depth == 1 && top_is_object && expect_key) entries++, expect_key = 0;
        } else if (c == '{' || c == '[') {
            containers++, values++;
            if (++depth == 1) top_is_object = expect_key = c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = top_is_object;
        }
        if (entries > ST_MAX_TENSORS)
            return st_fail(err, errlen, "header lists more than %d entries, the limit on the "
                           "tensors of one file", ST_MAX_TENSORS);
        if (containers > ST_MAX_HEADER_CONTAINERS)
            return st_fail(err, errlen, "header holds more than %d objects and lists, the limit "
                           "(%d per tensor)", ST_MAX_HEADER_CONTAINERS,
                           ST_MAX_HEADER_CONTAINERS / ST_MAX_TENSORS);
        if (values > ST_MAX_HEADER_VALUES)
            return st_fail(err, errlen, "header holds more than %d JSON values, the limit (%d per "
                           "tensor)", ST_MAX_HEADER_VALUES, ST_MAX_HEADER_VALUES / ST_MAX_TENSORS);
    }
    return 0;
}

#define ST_TOO_SHORT \
    "file too short: %zu bytes, but a safetensors file starts with an 8-byte header length"

/* Parses and validates buf (len bytes) into f, which must be zeroed. On failure frees what
 * it allocated and leaves f zeroed; the buffer itself is never touched. */
static int st_parse(st_file *f, const unsigned char *buf, size_t len, char *err, size_t errlen) {
    if (len < 8) return st_fail(err, errlen, ST_TOO_SHORT, len);
    uint64_t n;
    memcpy(&n, buf, 8);
    if (n > ST_MAX_HEADER)
        return st_fail(err, errlen, "header too large: %llu bytes (the limit is %u)",
                       (unsigned long long)n, ST_MAX_HEADER);
    if (n > len - 8)
        return st_fail(err, errlen,
                       "header length %llu runs past the end of the file (%zu bytes follow the "
                       "length field)",
                       (unsigned long long)n, len - 8);
    const char *hdr = (const char *)buf + 8;
    const unsigned char *data = buf + 8 + n;
    size_t data_len = len - 8 - (size_t)n;

    /* jansson stops at a NUL and reports a confusing "end of file" error; say what it is. */
    const char *nul = memchr(hdr, '\0', (size_t)n);
    if (nul)
        return st_fail(err, errlen, "invalid JSON header: NUL byte at header offset %zu",
                       (size_t)(nul - hdr));

    if (st_check_header_counts(hdr, (size_t)n, err, errlen)) return -1;
    json_error_t je;
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        /* jansson gives up without a word when an allocation fails deep in the parser */
        if (json_error_code(&je) == json_error_out_of_memory || !je.text[0])
            return st_fail(err, errlen, "out of memory parsing the %llu-byte header",
                           (unsigned long long)n);
        if (json_error_code(&je) == json_error_duplicate_key) /* text names the key */
            return st_fail(err, errlen, "duplicate name in header at line %d, column %d: %s",
                           je.line, je.column, je.text);
        return st_fail(err, errlen, "invalid JSON header at line %d, column %d: %s", je.line,
                       je.column, je.text);
    }

    int rc = -1;
    struct st_extent *ext = NULL;
    if (!json_is_object(root)) {
        st_fail(err, errlen, "header is %s, not a JSON object", st_json_type_name(root));
        goto done;
    }
    size_t nt = json_object_size(root) - (json_object_get(root, "__metadata__") ? 1 : 0);
    if (nt > INT_MAX) {
        st_fail(err, errlen, "header lists too many tensors (%zu)", nt);
        goto done;
    }
    /* allocated even for zero tensors: a non-NULL tensors marks a parsed file */
    f->tensors = calloc(nt ? nt : 1, sizeof(st_tensor));
    ext = calloc(nt ? nt : 1, sizeof *ext);
    if (!f->tensors || !ext) {
        st_fail(err, errlen, "out of memory for %zu tensors", nt);
        goto done;
    }

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (st_parse_meta(f, val, err, errlen) != 0) goto done;
            continue;
        }
        st_tensor *t = &f->tensors[f->ntensors];
        struct st_extent *e = &ext[f->ntensors];
        if (st_parse_entry(key, val, data, data_len, t, &e->begin, &e->end, err, errlen) != 0)
            goto done;
        e->index = f->ntensors;
        if (!(t->name = strdup(key))) {
            st_fail(err, errlen, "out of memory");
            goto done;
        }
        f->ntensors++;
    }
    if (st_check_tiling(f, ext, data_len, err, errlen) != 0) goto done;
    f->map = (void *)buf;
    f->map_len = len;
    rc = 0;
done:
    free(ext);
    json_decref(root);
    if (rc != 0) st_free_contents(f);
    return rc;
}

int st_open_mem(st_file *f, const void *buf, size_t len, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (!buf && len > 0) return st_fail(err, errlen, "NULL buffer");
    if (st_parse(f, buf, len, err, errlen) != 0) return -1;
    f->owns_map = 0;
    return 0;
}

int st_open(st_file *f, const char *path, char *err, size_t errlen) {
    char msg[512];
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return st_fail(err, errlen, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, errlen, "%s: not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return st_fail(err, errlen, "%s: file too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    /* mmap refuses a zero length, and a file this short has nothing to map anyway. */
    if (len < 8) {
        close(fd);
        snprintf(msg, sizeof msg, ST_TOO_SHORT, len);
        return st_fail(err, errlen, "%s: %s", path, msg);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return st_fail(err, errlen, "cannot map %s: %s", path, strerror(e));
    if (st_parse(f, map, len, msg, sizeof msg) != 0) {
        munmap(map, len);
        return st_fail(err, errlen, "%s: %s", path, msg);
    }
    f->owns_map = 1;
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->owns_map && f->map) munmap(f->map, f->map_len);
    st_free_contents(f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

void st_list_names(char *out, size_t n, const char *const *names, int count) {
    size_t len = strlen(out);
    for (int i = 0; i < count && len + 4 < n; i++) {
        if (i == 12) {
            snprintf(out + len, n - len, " and %d more", count - i);
            return;
        }
        snprintf(out + len, n - len, "%s%s", i ? ", " : "", names[i]);
        len = strlen(out);
    }
}

void st_say_not(const st_file *f, const char *what, const char *const *want, int nwant,
                char *err, size_t errlen) {
    const char **missing = calloc((size_t)nwant + 1, sizeof(char *));
    const char **unexpected = calloc((size_t)f->ntensors + 1, sizeof(char *));
    int nm = 0, nu = 0;
    for (int i = 0; i < nwant && missing; i++)
        if (!st_find(f, want[i])) missing[nm++] = want[i];
    for (int i = 0; i < f->ntensors && unexpected; i++) unexpected[nu++] = f->tensors[i].name;
    snprintf(err, errlen, "%s; missing: ", what);
    if (missing) st_list_names(err, errlen, missing, nm);
    size_t len = strlen(err);
    snprintf(err + len, errlen - len, "; unexpected: ");
    if (unexpected) st_list_names(err, errlen, unexpected, nu);
    if (!nu) snprintf(err + strlen(err), errlen - strlen(err), "(no tensors)");
    free(missing);
    free(unexpected);
}

/* ---------------------------------------------------------------------------------------- */
/* conversion to float32 */

/* Element loaders: safetensors does not align tensor data, so every load goes through memcpy
 * (one unaligned load after optimization) rather than a cast pointer, which would be both an
 * alignment and an aliasing violation. */
#define ST_DEFINE_LOAD(fn, T)                                                                    \
    static inline T fn(const void *p, int64_t i) {                                               \
        T v;                                                                                      \
        memcpy(&v, (const unsigned char *)p + (size_t)i * sizeof(T), sizeof(T));                 \
        return v;                                                                                 \
    }
ST_DEFINE_LOAD(st_ld_f64, double)
ST_DEFINE_LOAD(st_ld_u16, uint16_t)
ST_DEFINE_LOAD(st_ld_i64, int64_t)
ST_DEFINE_LOAD(st_ld_i32, int32_t)
ST_DEFINE_LOAD(st_ld_i16, int16_t)
ST_DEFINE_LOAD(st_ld_i8, int8_t)
ST_DEFINE_LOAD(st_ld_u8, uint8_t)

int st_to_f32(const st_tensor *t, float *out) {
    const void *p = t->data;
    int64_t n = t->numel;
    switch (t->dtype) {
    case ST_F64: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_f64(p, i); break;
    case ST_F32: if (n > 0) memcpy(out, p, (size_t)n * sizeof(float)); break;
    case ST_F16: for (int64_t i = 0; i < n; i++) out[i] = half_to_float(st_ld_u16(p, i)); break;
    case ST_BF16: for (int64_t i = 0; i < n; i++) out[i] = bf16_to_float(st_ld_u16(p, i)); break;
    case ST_I64: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_i64(p, i); break;
    case ST_I32: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_i32(p, i); break;
    case ST_I16: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_i16(p, i); break;
    case ST_I8: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_i8(p, i); break;
    case ST_U8: for (int64_t i = 0; i < n; i++) out[i] = (float)st_ld_u8(p, i); break;
    case ST_BOOL: for (int64_t i = 0; i < n; i++) out[i] = st_ld_u8(p, i) ? 1.0f : 0.0f; break;
    default: return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* writer */

struct st_wtensor {
    char *name; /* owned */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* borrowed until st_writer_save returns */
    size_t nbytes;
};

struct st_writer {
    struct st_wtensor *t;
    int n, cap;
    char **mkeys, **mvals; /* owned, in insertion order */
    int nmeta, mcap;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->t);
    free(w->mkeys);
    free(w->mvals);
    free(w);
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, char *err, size_t errlen) {
    char qn[ST_QBUF];
    if (!w || !name) return st_fail(err, errlen, "st_writer_add: NULL writer or name");
    st_quote(name, qn, sizeof qn);
    if (strcmp(name, "__metadata__") == 0)
        return st_fail(err, errlen, "tensor %s: name is reserved for metadata", qn);
    /* jansson refuses strings that are not UTF-8 and we must not write a header our own reader
     * (or the reference) rejects, so names and metadata are checked when added. */
    if (!utf8_valid(name)) return st_fail(err, errlen, "tensor %s: name is not valid UTF-8", qn);
    if (!st_dtype_valid(dtype))
        return st_fail(err, errlen, "tensor %s: invalid dtype %d", qn, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return st_fail(err, errlen, "tensor %s: ndim %d out of range [0, %d]", qn, ndim,
                       ST_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return st_fail(err, errlen, "tensor %s: negative dim %lld", qn, (long long)shape[i]);
        if (shape[i] != 0 && numel > INT64_MAX / shape[i])
            return st_fail(err, errlen, "tensor %s: shape overflows the element count", qn);
        numel *= shape[i];
    }
    size_t esize = st_dtype_size(dtype);
    if ((uint64_t)numel > (uint64_t)INT64_MAX / esize || (uint64_t)numel > SIZE_MAX / esize)
        return st_fail(err, errlen, "tensor %s: shape overflows the byte size", qn);
    if (numel > 0 && !data) return st_fail(err, errlen, "tensor %s: NULL data", qn);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return st_fail(err, errlen, "tensor %s: duplicate name", qn);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        struct st_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return st_fail(err, errlen, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    struct st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return st_fail(err, errlen, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->data = data;
    t->nbytes = (size_t)numel * esize;
    w->n++;
    return 0;
}

int st_writer_meta(st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value || !utf8_valid(key) || !utf8_valid(value)) return -1;
    char *v = strdup(value);
    if (!v) return -1;
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->mkeys[i], key) == 0) { /* replace in place: keeps the first position */
            free(w->mvals[i]);
            w->mvals[i] = v;
            return 0;
        }
    }
    if (w->nmeta == w->mcap) {
        int cap = w->mcap ? 2 * w->mcap : 8;
        char **k = realloc(w->mkeys, (size_t)cap * sizeof *k);
        if (k) w->mkeys = k;
        char **vs = k ? realloc(w->mvals, (size_t)cap * sizeof *vs) : NULL;
        if (vs) w->mvals = vs;
        if (!k || !vs) {
            free(v);
            return -1;
        }
        w->mcap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return -1;
    }
    w->mkeys[w->nmeta] = k;
    w->mvals[w->nmeta] = v;
    w->nmeta++;
    return 0;
}

/* Builds the compact header JSON: __metadata__ first, then tensors in insertion order with
 * contiguous offsets. Returns a malloc'ed string (caller frees) or NULL on out-of-memory. */
static char *st_writer_header(const st_writer *w) {
    json_t *root = json_object(), *meta = NULL;
    char *s = NULL;
    if (!root) return NULL;
    if (w->nmeta > 0) {
        if (!(meta = json_object()) || json_object_set_new(root, "__metadata__", meta) != 0)
            goto done;
        for (int i = 0; i < w->nmeta; i++)
            if (json_object_set_new(meta, w->mkeys[i], json_string(w->mvals[i])) != 0) goto done;
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const struct st_wtensor *t = &w->t[i];
        json_t *e = json_object(), *shape = json_array();
        if (!e || !shape) {
            json_decref(e);
            json_decref(shape);
            goto done;
        }
        /* json_object_set_new takes the reference even when it fails, so nothing leaks. Key
         * order is the reference's: dtype, shape, data_offsets. */
        if (json_object_set_new(root, t->name, e) != 0 ||
            json_object_set_new(e, "dtype", json_string(st_dtype_name(t->dtype))) != 0 ||
            json_object_set_new(e, "shape", shape) != 0)
            goto done;
        for (int d = 0; d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d])) != 0) goto done;
        json_t *offs = json_pack("[II]", (json_int_t)off, (json_int_t)(off + t->nbytes));
        if (json_object_set_new(e, "data_offsets", offs) != 0) goto done;
        off += t->nbytes;
    }
    s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
done:
    json_decref(root);
    return s;
}

/* write(2) until everything is out; partial writes and EINTR are normal on some files. */
static int st_write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* fsyncs the folder holding path so the rename itself survives a crash. Best effort: the
 * checkpoint is already complete under its name, and some file systems refuse to fsync a
 * folder, so a failure here is not reported as a failed save. */
static void st_sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen) {
    if (!w || !path) return st_fail(err, errlen, "st_writer_save: NULL writer or path");
    char *hdr = st_writer_header(w);
    if (!hdr) return st_fail(err, errlen, "out of memory building the header");
    size_t hlen = strlen(hdr);
    size_t pad = (8 - hlen % 8) % 8; /* as the reference writer: data starts 8-aligned */
    if (hlen + pad > ST_MAX_HEADER) {
        free(hdr);
        return st_fail(err, errlen, "%s: header too large: %zu bytes (the limit is %u)", path,
                       hlen + pad, ST_MAX_HEADER);
    }
    uint64_t n = hlen + pad; /* stored little-endian; the host is little-endian (see top) */
    unsigned char lenbytes[8];
    memcpy(lenbytes, &n, 8);

    /* Same folder as path so rename is atomic; the pid keeps concurrent savers apart. */
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(hdr);
        return st_fail(err, errlen, "out of memory");
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    int rc = -1, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        st_fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    static const char spaces[] = "       "; /* pad is at most 7 */
    int bad = st_write_all(fd, lenbytes, 8) || st_write_all(fd, hdr, hlen) ||
              st_write_all(fd, spaces, pad);
    for (int i = 0; i < w->n && !bad; i++)
        if (w->t[i].nbytes > 0) bad = st_write_all(fd, w->t[i].data, w->t[i].nbytes);
    if (bad) {
        st_fail(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    /* Data must be on disk before the rename makes it visible under path. */
    if (fsync(fd) != 0) {
        st_fail(err, errlen, "cannot fsync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) { /* NFS and friends report delayed write errors here */
        st_fail(err, errlen, "cannot close %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        st_fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    st_sync_dir(path);
    rc = 0;
    goto done;
fail:;
    /* errno stays the failure's (a full disk, say), not the clean-up's: callers look at it. */
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = e;
done:
    free(tmp);
    free(hdr);
    return rc;
}
