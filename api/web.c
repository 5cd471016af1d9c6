/*
 * web.c: see web.h. The assembler's .incbin puts each file's bytes into read-only data between
 * two symbols; GPLQ_SRC_DIR (the Makefile's -D) makes the paths absolute, so the build works
 * from any directory. The Makefile rebuilds this object when a file in web/ changes.
 */
#include "api/web.h"

#include <pthread.h>
#include <string.h>

#include "util/sha256.h"

#ifndef GPLQ_SRC_DIR
#define GPLQ_SRC_DIR "."
#endif

/* gplq_web_SYM_start .. gplq_web_SYM_end hold web/FILE. */
#define WEB_EMBED(sym, file)                                                                     \
    __asm__(".section .rodata\n"                                                                 \
            ".global gplq_web_" #sym "_start\n"                                                  \
            ".type gplq_web_" #sym "_start, @object\n"                                           \
            "gplq_web_" #sym "_start:\n"                                                         \
            ".incbin \"" GPLQ_SRC_DIR "/web/" file "\"\n"                                        \
            ".global gplq_web_" #sym "_end\n"                                                    \
            "gplq_web_" #sym "_end:\n"                                                           \
            ".previous\n");                                                                      \
    extern const char gplq_web_##sym##_start[], gplq_web_##sym##_end[]

WEB_EMBED(index, "index.html");
WEB_EMBED(app, "app.js");
WEB_EMBED(style, "style.css");
WEB_EMBED(charts, "charts.js");

/* Not const: the ETags are filled in once, by fill_etags; web_find hands out pointers only
 * after that, as const. */
static web_file files[] = {
    {"index.html", "text/html; charset=utf-8", gplq_web_index_start, gplq_web_index_end, ""},
    {"app.js", "text/javascript; charset=utf-8", gplq_web_app_start, gplq_web_app_end, ""},
    {"style.css", "text/css; charset=utf-8", gplq_web_style_start, gplq_web_style_end, ""},
    {"charts.js", "text/javascript; charset=utf-8", gplq_web_charts_start, gplq_web_charts_end, ""},
};
#define NFILES (sizeof files / sizeof *files)

static pthread_once_t etags_once = PTHREAD_ONCE_INIT;

/* SHA-256 of a few hundred kilobytes at most, once per process: cheap, and a content hash
 * makes the ETag strong (equal tags mean equal bytes), whichever build served it. */
static void fill_etags(void) {
    for (size_t i = 0; i < NFILES; i++) {
        uint8_t d[32];
        char hex[65];
        sha256(files[i].start, web_size(&files[i]), d);
        sha256_hex(d, hex);
        files[i].etag[0] = '"';
        memcpy(files[i].etag + 1, hex, 64);
        files[i].etag[65] = '"';
        files[i].etag[66] = '\0';
    }
}

const web_file *web_find(const char *name) {
    pthread_once(&etags_once, fill_etags);
    for (size_t i = 0; name && i < NFILES; i++)
        if (!strcmp(files[i].name, name)) return &files[i];
    return NULL;
}

size_t web_size(const web_file *f) {
    return (size_t)(f->end - f->start);
}
