/*
 * range.h: the conditional and partial parts of an HTTP GET of a file (RFC 9110 sections 13
 * and 14): If-None-Match against an ETag, If-Range, and a single "Range: bytes=..." range.
 *
 * Pure functions of header strings and the file size, so the artifact download handler and its
 * tests share them. One range only: a request for several ranges gets the whole file (the RFC
 * allows a server to ignore Range), which every downloader handles.
 */
#ifndef GPLQ_RANGE_H
#define GPLQ_RANGE_H

#include <stdint.h>

typedef enum {
    RANGE_FULL,          /* 200, the whole file: no Range, a Range we ignore, or If-Range differs */
    RANGE_PARTIAL,       /* 206 with Content-Range: bytes offset-(offset+length-1)/size */
    RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * / size */
} range_kind;

/* 1 when an If-None-Match value (a list of entity tags, or "*") matches etag (a quoted
 * strong tag such as "\"abc\""), with the weak comparison the RFC prescribes for it. */
int range_etag_matches(const char *if_none_match, const char *etag);

/* Evaluates range (the Range header, NULL if absent) and if_range (NULL if absent) for a file
 * of size bytes whose tag is etag. For RANGE_PARTIAL *offset and *length are set; for
 * RANGE_FULL they cover the whole file. */
range_kind range_parse(const char *range, const char *if_range, const char *etag, int64_t size,
                       int64_t *offset, int64_t *length);

#endif
