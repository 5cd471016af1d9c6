/*
 * web.h: the browser dashboard's files (web/index.html, app.js, style.css, charts.js), embedded
 * in the binary when api/web.c is compiled, as api/openapi.c embeds the OpenAPI document.
 *
 * The page has no build step: the four files in web/ are what the browser gets, byte for byte.
 * Embedding them keeps gplqd one self-contained program (it runs in images without the source
 * tree), and the bytes can never drift from the binary that serves them. api/public.c serves them
 * at GET / and GET /web/{name}.
 *
 * Each file carries a strong ETag (its SHA-256 in quotes), computed once on first use, so a
 * browser revalidates with If-None-Match and gets a 304 until a new build changes the bytes.
 */
#ifndef GPLQ_WEB_H
#define GPLQ_WEB_H

#include <stddef.h>

typedef struct {
    const char *name;          /* "index.html": the name under /web/ */
    const char *content_type;  /* static: "text/html; charset=utf-8", ... */
    const char *start, *end;   /* the embedded bytes, [start, end); static, not NUL-terminated */
    char etag[67];             /* "\"<64 hex digits of SHA-256>\"" */
} web_file;

/* The file called name ("index.html", "app.js", "style.css", "charts.js"), or NULL if there is
 * none. Borrowed: static, valid for the life of the process, etag already filled. Thread-safe
 * (the first call computes every ETag, under pthread_once). */
const web_file *web_find(const char *name);

/* The file's size in bytes. */
size_t web_size(const web_file *f);

#endif
