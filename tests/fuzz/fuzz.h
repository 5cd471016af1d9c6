/*
 * fuzz.h: what the libFuzzer harnesses in tests/fuzz/ share: the input as a file for the
 * readers that take a path, and the input cut into NUL-terminated fields for the parsers that
 * take several strings. Header-only (static inline), so that each harness stays one .c file.
 *
 * Every harness also checks what it can of the contract it fuzzes (an error message is
 * NUL-terminated and not empty, a range lies inside the file, ...) and calls abort() when it
 * does not hold: libFuzzer reports an abort as a crash, with the input that caused it.
 */
#ifndef GPLQ_FUZZ_H
#define GPLQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 1 when FUZZ_VERBOSE is set in the environment: the harnesses then print what each input
 * came to (accepted, or the error message; the API's status and body), which is how one checks
 * that a seed reaches what it was written for. */
static inline int fuzz_verbose(void) {
    static int v = -1;
    if (v < 0) v = getenv("FUZZ_VERBOSE") != NULL;
    return v;
}

/* Prints "what: message" when verbose. */
static inline void fuzz_say(const char *what, const char *msg) {
    if (fuzz_verbose()) fprintf(stderr, "fuzz: %s: %s\n", what, msg);
}

/* The input as a file, for the readers that take a path (st_open, imgf_inspect, imgf_load): a
 * memfd, a file that lives in memory only, so a run costs no disk I/O and leaves nothing
 * behind. Its path, "/proc/self/fd/N", goes into path (n bytes); open() on it gives a new
 * descriptor of the same file at offset 0, as a real file would. Returns the descriptor (the
 * caller closes it, which frees the file), or -1 (then the harness skips the input). */
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t n) {
    int fd = memfd_create("gplq-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, n, "/proc/self/fd/%d", fd);
    return fd;
}

/* Cuts the input into at most nfields NUL-terminated strings at each '\n' (the last field
 * takes the rest, newlines included); missing fields are NULL. A NUL inside a field ends that
 * string early, as it would in a C header value. Returns the buffer that holds the strings
 * (free() it), or NULL when out of memory. */
static inline char *fuzz_fields(const uint8_t *data, size_t size, char **fields, int nfields) {
    char *buf = malloc(size + 1);
    if (!buf) return NULL;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (int i = 0; i < nfields; i++) fields[i] = NULL;
    char *p = buf;
    for (int i = 0; i < nfields && p; i++) {
        fields[i] = p;
        char *nl = i + 1 < nfields ? memchr(p, '\n', (size_t)(buf + size - p)) : NULL;
        if (nl) *nl = '\0';
        p = nl ? nl + 1 : NULL;
    }
    return buf;
}

/* An error message a failed call left in err (errlen bytes): it must be a NUL-terminated,
 * non-empty string (the callers print it and send it to users). */
static inline void fuzz_check_err(const char *err, size_t errlen) {
    if (!memchr(err, '\0', errlen) || !err[0]) {
        fprintf(stderr, "fuzz: a failure without an error message\n");
        abort();
    }
}

#endif
