/*
 * inspect.c: `gplq-worker inspect-model FILE` and `gplq-worker inspect-dataset FILE`, the
 * checks gplqd runs on an upload before it accepts it.
 *
 * They run in a child process of the daemon, for two reasons: the daemon does not link the
 * model code (ARCHITECTURE.md), and a parser meeting hostile bytes can at worst kill this
 * child, never the API. Each prints exactly one JSON line on stdout:
 *   {"ok": true, "config": {...}, "convention": "timm", "params": N,
 *    "description": "Swin: img 16, patch 2, ..."}                          (model)
 *   {"ok": true, "summary": {...}}                                       (dataset)
 *   {"ok": false, "error": "a sentence naming the problem"}
 * and exits 0 when ok, 1 when the file is refused, 2 on bad usage.
 *
 * gplqd appends its limits, --max-memory BYTES and --max-cpu-s S (api/inspect.h says why the
 * child applies them): they are in force, with setrlimit, before the upload is opened. The
 * memory limit (RLIMIT_AS) counts from what the program already holds when main starts (its
 * libraries: OpenBLAS alone reserves a buffer per core) and, for a model, beyond the file,
 * which the reader maps whole; so BYTES is what the inspection itself may allocate, on any
 * machine. No core files either: a crash on hostile bytes must not write gigabytes to disk.
 */
#include "worker/inspect.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/options.h"
#include "io/checkpoint.h"
#include "io/imagefolder.h"
#include "io/safetensors.h"

#define LIMIT_ARGS " [--max-memory BYTES] [--max-cpu-s S]"
#define USAGE_MODEL "usage: gplq-worker inspect-model FILE [--num-heads N] [--img-size N] " \
                    "[--mean M --std S]" LIMIT_ARGS
#define USAGE_DATASET "usage: gplq-worker inspect-dataset FILE" LIMIT_ARGS

/* The limits from the command line (bounds); 0 where none was given. */
typedef struct {
    long long memory;   /* --max-memory: bytes the inspection may add to the address space */
    long long cpu_s;    /* --max-cpu-s: seconds of CPU time */
} limits;

static limits bounds;

static int answer(json_t *obj) {
    int ok = json_is_true(json_object_get(obj, "ok"));
    char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    printf("%s\n", s ? s : "{\"ok\": false, \"error\": \"out of memory\"}");
    free(s);
    json_decref(obj);
    fflush(stdout);
    return ok ? 0 : 1;
}

/* A reader's "out of memory" under the memory limit is the limit's doing, and says so. */
static int refuse(const char *msg) {
    char buf[2300];
    if (bounds.memory > 0 && (strcasestr(msg, "out of memory") || strcasestr(msg, "allocate"))) {
        int mib = bounds.memory >= 1 << 20;
        snprintf(buf, sizeof buf, "%s (an upload's inspection may use %lld %s, the limit)", msg,
                 mib ? bounds.memory >> 20 : bounds.memory, mib ? "MiB" : "bytes");
        msg = buf;
    }
    return answer(json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

/* Takes --max-memory N and --max-cpu-s N out of argv (into bounds), so that what is left is
 * the command's own arguments. Returns the new argc, or -1 on a malformed limit. */
static int take_limits(int argc, char **argv) {
    int n = 0;
    for (int i = 0; i < argc; i++) {
        long long *to = !strcmp(argv[i], "--max-memory") ? &bounds.memory
                        : !strcmp(argv[i], "--max-cpu-s") ? &bounds.cpu_s : NULL;
        if (!to) {
            argv[n++] = argv[i];
            continue;
        }
        char *end = NULL;
        *to = i + 1 < argc ? strtoll(argv[i + 1], &end, 10) : -1;
        if (!end || *end || *to < 0) return -1;
        i++;
    }
    return n;
}

/* The address space the process holds now, from /proc/self/statm; -1 if unreadable. */
static long long address_space_now(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = -1;
    if (f) {
        if (fscanf(f, "%lld", &pages) != 1) pages = -1;
        fclose(f);
    }
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

/* Applies bounds before anything of the upload is read: RLIMIT_AS at what is held now plus
 * mapped (the bytes of the file the reader will map) plus bounds.memory; RLIMIT_CPU at
 * bounds.cpu_s (SIGXCPU, then SIGKILL 5 s later if that is caught); no core files. Returns 0,
 * or -1 with err: an inspection without the limits gplqd asked for does not run. */
static int apply_limits(long long mapped, char *err, size_t errlen) {
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    if (bounds.cpu_s > 0) {
        struct rlimit cpu = {(rlim_t)bounds.cpu_s, (rlim_t)bounds.cpu_s + 5};
        if (setrlimit(RLIMIT_CPU, &cpu)) {
            snprintf(err, errlen, "cannot limit the inspector's CPU time: %s", strerror(errno));
            return -1;
        }
    }
    if (bounds.memory > 0) {
        long long held = address_space_now();
        if (held < 0) {
            snprintf(err, errlen, "cannot limit the inspector's memory: /proc/self/statm "
                     "cannot be read");
            return -1;
        }
        struct rlimit as = {(rlim_t)(held + mapped + bounds.memory),
                            (rlim_t)(held + mapped + bounds.memory)};
        if (setrlimit(RLIMIT_AS, &as)) {
            snprintf(err, errlen, "cannot limit the inspector's memory: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* The readers name the file they were given; here that is gplqd's temporary path, which means
 * nothing to the user (and is the server's business), so it becomes "the uploaded file". */
static int refuse_upload(const char *msg, const char *path) {
    char out[2048];
    size_t n = 0, plen = strlen(path);
    const char *at;
    while (plen && (at = strstr(msg, path)) && n < sizeof out) {
        n += (size_t)snprintf(out + n, sizeof out - n, "%.*s%s", (int)(at - msg), msg,
                              "the uploaded file");
        msg = at + plen;
    }
    if (n < sizeof out) snprintf(out + n, sizeof out - n, "%s", msg);
    return refuse(out);
}

/* A whole decimal number in [min, max] from text, or -1 (the bounds are gplqd's, checked
 * again here: this program is also run by hand). */
static int int_arg(const char *s, int min, int max) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    return !*s || *end || errno || x < min || x > max ? -1 : (int)x;
}

int inspect_model_main(int argc, char **argv) {
    const char *path = NULL, *mean = NULL, *std = NULL;
    int heads = 0, img_size = 0;
    if ((argc = take_limits(argc, argv)) < 0)
        return refuse("--max-memory and --max-cpu-s take a number"), 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--num-heads") && v) heads = int_arg(v, 0, 64), i++;
        else if (!strcmp(a, "--img-size") && v) img_size = int_arg(v, 0, 4096), i++;
        else if (!strcmp(a, "--mean") && v) mean = v, i++;
        else if (!strcmp(a, "--std") && v) std = v, i++;
        else if (!path && a[0] != '-') path = a;
        else return refuse(USAGE_MODEL), 2;
    }
    if (!path) return refuse(USAGE_MODEL), 2;
    if (heads < 0) return refuse("num_heads must be between 1 and 64");
    if (img_size < 0) return refuse("img_size must be between 1 and 4096");

    char err[1024];
    ckpt_hints hints = {.num_heads = heads, .img_size = img_size, .check_only = 1};
    if (!mean != !std) return refuse("mean and std go together (give both)");
    if (mean && (opt_parse_triple(mean, "mean", OPT_MEAN_MIN, OPT_MEAN_MAX, hints.mean, err,
                                  sizeof err) ||
                 opt_parse_triple(std, "std", OPT_STD_MIN, OPT_STD_MAX, hints.std, err,
                                  sizeof err)))
        return refuse(err);
    hints.have_norm = mean != NULL;
    struct stat sb;
    if (apply_limits(stat(path, &sb) ? 0 : (long long)sb.st_size, err, sizeof err))
        return refuse(err);
    st_file f;
    if (st_open(&f, path, err, sizeof err)) return refuse_upload(err, path);
    /* every tensor's name, shape and dtype is checked against the inferred config, as a full
     * load does, so an accepted upload is one a worker can load; the weights are not copied
     * (that was most of an upload's time) */
    model m;
    ckpt_convention conv;
    int rc = ckpt_load_file(&m, &f, &hints, &conv, err, sizeof err);
    st_close(&f);
    if (rc) return refuse_upload(err, path);
    model_config mc = model_get_config(&m);
    char desc[512];
    model_config_describe(&mc, desc, sizeof desc);
    json_t *out = json_pack("{s:b, s:o, s:s, s:I, s:s}", "ok", 1, "config", ckpt_config_json(&mc),
                            "convention", ckpt_convention_name(conv), "params",
                            (json_int_t)model_num_params(&m), "description", desc);
    model_free(&m);
    return answer(out);
}

int inspect_dataset_main(int argc, char **argv) {
    if ((argc = take_limits(argc, argv)) < 0)
        return refuse("--max-memory and --max-cpu-s take a number"), 2;
    if (argc != 1 || argv[0][0] == '-')
        return refuse(USAGE_DATASET), 2;
    char err[1024];
    if (apply_limits(0, err, sizeof err)) return refuse(err);
    imgf_limits lim;
    imgf_limits_default(&lim);
    json_t *summary = NULL;
    if (imgf_inspect(argv[0], &lim, &summary, err, sizeof err)) return refuse_upload(err, argv[0]);
    return answer(json_pack("{s:b, s:o}", "ok", 1, "summary", summary));
}
