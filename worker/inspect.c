/*
 * inspect.c: `gplq-worker inspect-model FILE` and `gplq-worker inspect-dataset FILE`, the
 * checks gplqd runs on an upload before it accepts it.
 *
 * They run in a child process of the daemon, for two reasons: the daemon does not link the
 * model code (ARCHITECTURE.md), and a parser meeting hostile bytes can at worst kill this
 * child, never the API. Each prints exactly one JSON line on stdout:
 *   {"ok": true, "config": {...}, "convention": "timm", "params": N}      (model)
 *   {"ok": true, "summary": {...}}                                       (dataset)
 *   {"ok": false, "error": "a sentence naming the problem"}
 * and exits 0 when ok, 1 when the file is refused, 2 on bad usage.
 */
#include "worker/inspect.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/imagefolder.h"
#include "io/safetensors.h"

static int answer(json_t *obj) {
    int ok = json_is_true(json_object_get(obj, "ok"));
    char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    printf("%s\n", s ? s : "{\"ok\": false, \"error\": \"out of memory\"}");
    free(s);
    json_decref(obj);
    fflush(stdout);
    return ok ? 0 : 1;
}

static int refuse(const char *msg) {
    return answer(json_pack("{s:b, s:s}", "ok", 0, "error", msg));
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

int inspect_model_main(int argc, char **argv) {
    const char *path = NULL;
    int heads = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--num-heads") && i + 1 < argc) heads = atoi(argv[++i]);
        else if (!path && argv[i][0] != '-') path = argv[i];
        else return refuse("usage: gplq-worker inspect-model FILE [--num-heads N]"), 2;
    }
    if (!path) return refuse("usage: gplq-worker inspect-model FILE [--num-heads N]"), 2;
    if (heads < 0 || heads > 64) return refuse("num_heads must be between 1 and 64");

    char err[1024];
    st_file f;
    if (st_open(&f, path, err, sizeof err)) return refuse_upload(err, path);
    /* every tensor's name, shape and dtype is checked against the inferred config, as a full
     * load does, so an accepted upload is one a worker can load; the weights are not copied
     * (that was most of an upload's time) */
    vit_model m;
    ckpt_convention conv;
    ckpt_hints hints = {.num_heads = heads, .check_only = 1};
    int rc = ckpt_load_file(&m, &f, &hints, &conv, err, sizeof err);
    st_close(&f);
    if (rc) return refuse_upload(err, path);
    json_t *out = json_pack("{s:b, s:o, s:s, s:I}", "ok", 1, "config", ckpt_config_json(&m.cfg),
                            "convention", ckpt_convention_name(conv), "params",
                            (json_int_t)m.num_params);
    vit_free(&m);
    return answer(out);
}

int inspect_dataset_main(int argc, char **argv) {
    if (argc != 1 || argv[0][0] == '-')
        return refuse("usage: gplq-worker inspect-dataset FILE"), 2;
    char err[1024];
    imgf_limits lim;
    imgf_limits_default(&lim);
    json_t *summary = NULL;
    if (imgf_inspect(argv[0], &lim, &summary, err, sizeof err)) return refuse_upload(err, argv[0]);
    return answer(json_pack("{s:b, s:o}", "ok", 1, "summary", summary));
}
