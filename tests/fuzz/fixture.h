/*
 * fixture.h: the world the API harnesses (fuzz_api, fuzz_events) dispatch requests into: a
 * data directory on tmpfs with a real SQLite database holding two owners' tokens, a model, the
 * built-in dataset, a finished job with events and an artifact file, and a queued job, and an
 * api_ctx over it as gplqd builds one (auth on, limits, a download-link key, an in-process
 * inspector stub instead of the worker child).
 *
 * Every run starts from the same state: the database is built once into a template file, and
 * fuzz_fx_begin copies it (140 KB on tmpfs) and opens the copy, so what one input created or
 * deleted does not leak into the next, and a crash replays from its input alone. The data
 * directory is removed when the process exits (not after a crash: it is left for a look).
 *
 * Inputs name the fixture's objects with placeholders that fuzz_fx_expand replaces (ids and
 * tokens are random at creation, so a fuzzer could not guess them): @T alice's token, @A the
 * admin's, @M the model id, @D the dataset id, @J the finished job, @Q the queued job, @L a
 * valid download-link query for @J's artifact ("expires=...&sig=...").
 */
#ifndef GPLQ_FUZZ_FIXTURE_H
#define GPLQ_FUZZ_FIXTURE_H

#include <stddef.h>

#include "api/api.h"

typedef struct {
    char dir[256];       /* the data dir of the runs */
    char db[300];        /* its gplq.db */
    char tmpl[300];      /* the template database */
    char artifact[600];  /* the finished job's artifact file */
    store *st;           /* open between fuzz_fx_begin and fuzz_fx_end */
    api_ctx ctx;
    unsigned char link_key[32];
    char token[72], admin_token[72];
    char model_id[64], dataset_id[64], job_id[64], queued_id[64];
    char link_query[160];
} fuzz_fx;

/* Builds the fixture (once, at start); aborts on failure: a harness without it tests nothing. */
void fuzz_fx_init(fuzz_fx *fx);
/* A fresh copy of the template, opened into fx->st and fx->ctx.st. 0, or -1 (skip the run). */
int fuzz_fx_begin(fuzz_fx *fx);
/* Closes the run's database. */
void fuzz_fx_end(fuzz_fx *fx);
/* s (n bytes) with the placeholders replaced, as a new NUL-terminated string (free()), and its
 * length in *outlen; NULL when out of memory. NUL bytes in s are kept. */
char *fuzz_fx_expand(const fuzz_fx *fx, const char *s, size_t n, size_t *outlen);

#endif
