/*
 * openapi.c: see openapi.h. The assembler's .incbin puts api/openapi.json's bytes, and a NUL,
 * into read-only data; GPLQ_SRC_DIR (the Makefile's -D) makes the path absolute, so the build
 * works from any directory.
 */
#include "api/openapi.h"

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

const char *openapi_json(void) {
    return gplq_openapi_start;
}

size_t openapi_json_len(void) {
    return (size_t)(gplq_openapi_end - gplq_openapi_start);
}
