/*
 * jtext.h: a JSON object written as text, member by member, without building a jansson tree.
 *
 * For the hot paths where the tree costs more than the work: GET /v1/jobs/{id}, whose job row
 * holds its spec, progress and metrics as JSON text already (parsing them into a tree only to
 * dump it again was a third of gplqd's time per request), and the access log line of every
 * request. The text is what json_dumps(JSON_COMPACT | JSON_REAL_PRECISION(p)) writes for the
 * same object, byte for byte (tests/test_util.c holds it to that): the same escapes, reals
 * printed at the same precision, members in the order they are added.
 *
 * Objects and arrays nest (jtext_object, jtext_array, jtext_close) up to JTEXT_DEPTH deep. A
 * member of an array has no key: pass NULL.
 *
 * Out of memory is sticky: every call after it does nothing and jtext_end returns NULL.
 */
#ifndef GPLQ_JTEXT_H
#define GPLQ_JTEXT_H

#include <stddef.h>
#include <stdint.h>

#define JTEXT_DEPTH 8

typedef struct {
    char *p;        /* the text so far (owned until jtext_end) */
    size_t len, cap;
    int oom;        /* an allocation failed, or nesting passed JTEXT_DEPTH */
    int precision;  /* significant digits of reals, as JSON_REAL_PRECISION */
    int depth;      /* open objects and arrays inside the outermost object */
    int members[JTEXT_DEPTH + 1];  /* members written at each depth, for the commas */
    char close[JTEXT_DEPTH + 1];   /* '}' or ']' for each */
} jtext;

/* Starts an object: "{". precision: the digits of every real written (1 to 17). */
void jtext_begin(jtext *t, int precision);
/* A string member; v NULL writes null. Bytes that are not UTF-8 are repaired as jlog_str
 * repairs them (the non-ASCII and control bytes become '?'). key and v are borrowed. */
void jtext_str(jtext *t, const char *key, const char *v);
void jtext_int(jtext *t, const char *key, int64_t v);
void jtext_real(jtext *t, const char *key, double v);
/* A member whose value is JSON text already, such as a column the store wrote with json_dumps
 * or its database's JSON functions; NULL writes null. It is copied as it is, but for its reals,
 * printed again at the object's precision as json_dumps would print the value they parse to.
 * json must be one valid JSON value: it is not checked. */
void jtext_json(jtext *t, const char *key, const char *json);
/* Opens an object or an array as a member (key NULL inside an array); jtext_close closes the
 * innermost one open. */
void jtext_object(jtext *t, const char *key);
void jtext_array(jtext *t, const char *key);
void jtext_close(jtext *t);
/* Closes what is still open and the object ("}" and, if newline, "\n") and returns its text (owned by the caller, NUL
 * terminated; its length in *len if len), or NULL if memory ran out. t is spent either way. */
char *jtext_end(jtext *t, int newline, size_t *len);

#endif
