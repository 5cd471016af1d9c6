/*
 * openapi.c: see openapi.h. The assembler's .incbin puts api/openapi.json's bytes, and a NUL,
 * into read-only data; GPLQ_SRC_DIR (the Makefile's -D) makes the path absolute, so the build
 * works from any directory.
 */
#include "api/openapi.h"

#include <jansson.h>
#include <pthread.h>
#include <string.h>

#include "config/jobspec.h"

#ifndef GPLQ_SRC_DIR
#define GPLQ_SRC_DIR "."
#endif

__asm__(".section .rodata\n"
        ".global gplq_openapi_start\n"
        ".type gplq_openapi_start, @object\n"
        "gplq_openapi_start:\n"
        ".incbin \"" GPLQ_SRC_DIR "/api/openapi.json\"\n"
        ".global gplq_openapi_end\n"
        "gplq_openapi_end:\n"
        ".byte 0\n"
        ".previous\n");

extern const char gplq_openapi_start[];
extern const char gplq_openapi_end[];

const char *openapi_source(size_t *len) {
    *len = (size_t)(gplq_openapi_end - gplq_openapi_start);
    return gplq_openapi_start;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char *doc;
static size_t doc_len;

/* The options' schema (type, default, bounds, description) into both schemas that list them. */
static void build(void) {
    size_t n;
    const char *src = openapi_source(&n);
    json_t *root = json_loadb(src, n, 0, NULL);
    json_t *schemas = json_object_get(json_object_get(root, "components"), "schemas");
    const char *names[] = {"JobCreate", "JobSpec"};
    for (int i = 0; i < 2; i++) {
        json_t *props = json_object_get(json_object_get(schemas, names[i]), "properties");
        json_t *opts = jobspec_schema();
        json_object_update(props, opts);
        json_decref(opts);
    }
    doc = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))
               : NULL;
    doc_len = doc ? strlen(doc) : 0;
    json_decref(root);
}

const char *openapi_json(void) {
    pthread_once(&once, build);
    return doc;
}

size_t openapi_json_len(void) {
    pthread_once(&once, build);
    return doc_len;
}
