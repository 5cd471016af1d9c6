/*
 * safetensors.h: reading and writing the safetensors checkpoint format.
 *
 * Format (https://huggingface.co/docs/safetensors): 8 bytes little-endian u64 N, then N bytes of
 * UTF-8 JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "string value", ...}}, then the data buffer. Offsets are relative to the
 * start of the data buffer. The reader maps the file and hands out pointers into the mapping
 * (zero copy); it validates everything before returning, so a hostile file yields an error
 * message naming the problem, never an out-of-bounds read.
 *
 * Errors: functions returning int give 0 on success and -1 on failure, with a message written
 * to the caller's err buffer (errlen bytes, always NUL-terminated).
 */
#ifndef GPLQ_SAFETENSORS_H
#define GPLQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u * 1000u * 1000u) /* header larger than this is rejected */
/* What a header may ask the JSON parser to build, counted before it is parsed: jansson takes
 * about 1 KB for an entry as small as {"dtype":"F32","shape":[],"data_offsets":[0,0]} and
 * 230 bytes for an empty {}, so a 100 MB header of tiny entries took 1.8 GB (issue 15). A ViT
 * has a few hundred tensors and the largest checkpoints a few tens of thousands; a tensor's
 * entry is 4 values and up to 8 dims of its shape, as keys, strings, numbers and lists. */
#define ST_MAX_TENSORS 100000                      /* top-level entries, __metadata__ too */
#define ST_MAX_HEADER_CONTAINERS (4 * ST_MAX_TENSORS) /* objects and lists, nested ones too */
#define ST_MAX_HEADER_VALUES (20 * ST_MAX_TENSORS)    /* keys, strings, numbers, literals too */

typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16,
    ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_NDTYPES
} st_dtype;

/* Bytes per element of a dtype. */
size_t st_dtype_size(st_dtype d);
/* The dtype's name as in the header ("F32"), or "?" */
const char *st_dtype_name(st_dtype d);
/* Parses a header dtype name; returns -1 if unknown. */
int st_dtype_parse(const char *s, st_dtype *out);

typedef struct {
    char *name;                 /* owned by the st_file */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;              /* product of shape (1 for ndim 0) */
    const void *data;           /* borrowed: points into the mapping, valid until st_close */
    size_t nbytes;
} st_tensor;

typedef struct {
    void *map;                  /* the whole file, mmap'ed read-only (or the caller's buffer) */
    size_t map_len;
    int owns_map;               /* 1: map is our mapping (st_open), unmapped by st_close */
    int ntensors;
    st_tensor *tensors;         /* in header order */
    int nmeta;
    char **meta_keys;           /* owned */
    char **meta_vals;           /* owned */
} st_file;

/* Maps and validates path. On success *f owns the mapping; release with st_close.
 * Rejects: file shorter than 8 bytes, header length past the end of the file or over
 * ST_MAX_HEADER, a header over ST_MAX_TENSORS entries, ST_MAX_HEADER_CONTAINERS objects and
 * lists or ST_MAX_HEADER_VALUES values (checked before parsing), invalid JSON or a non-object
 * header, unknown dtype, bad shape, data_offsets
 * out of range, not matching dtype x shape, overlapping or leaving holes in the buffer,
 * duplicate names, non-string metadata values. On failure *f is left zeroed. */
int st_open(st_file *f, const char *path, char *err, size_t errlen);
/* Same, from a memory buffer the caller keeps alive (borrowed, not copied) until st_close. */
int st_open_mem(st_file *f, const void *buf, size_t len, char *err, size_t errlen);
void st_close(st_file *f);

/* Borrowed pointer to the tensor named name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);
/* Borrowed metadata value for key, or NULL. */
const char *st_meta(const st_file *f, const char *key);

/* Appends names (count of them, comma-separated; past 12, "and N more") to the string in out
 * (n bytes), as far as it fits. */
void st_list_names(char *out, size_t n, const char *const *names, int count);
/* The message of a file that is not what a loader expected: "<what>; missing: <the names of
 * want not in f>; unexpected: <the names f has>" in err. */
void st_say_not(const st_file *f, const char *what, const char *const *want, int nwant,
                char *err, size_t errlen);

/* Converts t to float32 into out (t->numel floats, caller-owned). Handles every dtype
 * (integers and bool by value). Returns 0, never fails for a validated tensor. */
int st_to_f32(const st_tensor *t, float *out);

/* Writer: collect tensors (data borrowed until st_writer_save returns) and metadata, then
 * write atomically (a temporary file in the same folder, fsync, rename). Tensors are written
 * in the order added. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);                 /* new; free with st_writer_free */
void st_writer_free(st_writer *w);
/* Adds a tensor; name is copied, data is borrowed. Returns -1 (with err) on a duplicate name. */
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, char *err, size_t errlen);
/* Adds (or replaces) a metadata string; key and value are copied. */
int st_writer_meta(st_writer *w, const char *key, const char *value);
/* 0, or -1 with err; a failed write, sync or rename leaves path as it was, and errno saying
 * why (ENOSPC for a full disk). */
int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen);

#endif
