/*
 * fixture.c: see fixture.h.
 */
#include "tests/fuzz/fixture.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/auth.h"
#include "api/inspect.h"
#include "config/layout.h"
#include "storage/blob.h"
#include "util/fs.h"

static void die(const char *what, const char *msg) {
    fprintf(stderr, "fuzz fixture: %s: %s\n", what, msg);
    abort();
}

/* The upload inspector, in process (the real one is a child running the parsers, which the
 * parser harnesses fuzz): it answers by the upload's first byte, G accepted, C crashed, else
 * refused. */
static int fx_inspect(void *arg, const char *const *args, json_t **out, char *err,
                      size_t errlen) {
    (void)arg;
    *out = NULL;
    int fd = open(args[1], O_RDONLY | O_CLOEXEC);
    char c = 0;
    if (fd < 0 || read(fd, &c, 1) != 1) c = 0;
    if (fd >= 0) close(fd);
    int model = !strcmp(args[0], "inspect-model");
    if (c == 'C') {
        snprintf(err, errlen, "the inspector crashed (signal 11)");
        return INSPECT_EFAIL;
    }
    if (c == 'G')
        *out = model ? json_pack("{s:b, s:{s:i, s:i, s:i}, s:s}", "ok", 1, "config", "dim", 192,
                                 "depth", 12, "num_heads", 3, "convention", "timm")
                     : json_pack("{s:b, s:{s:s, s:[s,s], s:i, s:i}}", "ok", 1, "summary",
                                 "format", "imagefolder", "classes", "a", "b", "train", 10, "val",
                                 0);
    else
        *out = json_pack("{s:b, s:s}", "ok", 0, "error", "not a safetensors file");
    return INSPECT_OK;
}

static json_t *fx_workers(void *arg) {
    (void)arg;
    return json_pack("[{s:s, s:i, s:b}]", "name", "w1", "pid", 11, "alive", 1);
}

static void token(store *st, const char *name, int admin, char *out) {
    char id[AUTH_ID_LEN + 1], hash[65];
    json_t *row = NULL;
    if (auth_token_new(out, id, hash) || store_token_insert(st, id, name, admin, hash, &row))
        die("token", store_errmsg(st));
    json_decref(row);
}

static void copy_id(char *dst, size_t n, json_t *obj) {
    const char *id = json_string_value(json_object_get(obj, "id"));
    if (!id) die("fixture", "a row without an id");
    snprintf(dst, n, "%s", id);
    json_decref(obj);
}

static int write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) || w != n ? -1 : 0;
}

/* The data dir, removed at exit (a crash leaves it, for a look). */
static char fx_dir[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)st;
    (void)f;
    if (flag == FTW_DP) rmdir(path);
    else unlink(path);
    return 0;
}

static void fx_remove(void) {
    if (fx_dir[0]) nftw(fx_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char artifact_text[] = "{\"accuracy\": {\"fp32\": 0.9, \"w4a4\": 0.88}}\n";

void fuzz_fx_init(fuzz_fx *fx) {
    memset(fx, 0, sizeof *fx);
    /* tmpfs when there is one: every run copies the database */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fx->dir, sizeof fx->dir, "%s/gplq-fuzz-XXXXXX", base);
    if (!mkdtemp(fx->dir)) die("mkdtemp", fx->dir);
    snprintf(fx_dir, sizeof fx_dir, "%s", fx->dir);
    atexit(fx_remove);
    char err[512];
    if (blob_init(fx->dir, err, sizeof err)) die("blob_init", err);
    snprintf(fx->db, sizeof fx->db, "%s/gplq.db", fx->dir);
    snprintf(fx->tmpl, sizeof fx->tmpl, "%s/template.db", fx->dir);
    store *st;
    if (store_open(&st, fx->tmpl, 1000, err, sizeof err)) die("store_open", err);
    token(st, "alice", 0, fx->token);
    token(st, "root", 1, fx->admin_token);
    json_t *row = NULL;
    json_t *cfg = json_pack("{s:i, s:i, s:i}", "dim", 192, "depth", 12, "num_heads", 3);
    if (store_model_insert(st, "alice", "tiny", "00", 1000, cfg, &row))
        die("model", store_errmsg(st));
    json_decref(cfg);
    copy_id(fx->model_id, sizeof fx->model_id, row);
    json_t *summary = json_pack("{s:i}", "train", 60000);
    row = NULL;
    if (store_dataset_insert(st, "", "fashion-mnist", "fashion-mnist", "builtin", "", 0, summary,
                             &row) != STORE_OK)
        die("dataset", store_errmsg(st));
    json_decref(summary);
    copy_id(fx->dataset_id, sizeof fx->dataset_id, row);
    json_t *spec = json_pack("{s:i}", "wbits", 4);
    row = NULL;
    if (store_job_insert(st, "alice", fx->model_id, fx->dataset_id, spec, 3, "key-1", &row))
        die("job", store_errmsg(st));
    json_decref(spec);
    copy_id(fx->job_id, sizeof fx->job_id, row);
    /* the job runs, reports progress and succeeds with an artifact: events of every kind */
    store_claim claim;
    if (store_job_claim(st, "w1:1", 60000, &claim)) die("claim", store_errmsg(st));
    store_claim_free(&claim);
    json_t *progress = json_pack("{s:i, s:i}", "step", 1, "steps", 10);
    store_job_progress(st, fx->job_id, "w1:1", 60000, "stage1", progress, 1);
    json_decref(progress);
    if (store_artifact_add(st, fx->job_id, LAYOUT_ARTIFACT_REPORT, sizeof artifact_text - 1,
                           "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))
        die("artifact", store_errmsg(st));
    if (store_job_finish(st, fx->job_id, "w1:1", "succeeded", NULL))
        die("finish", store_errmsg(st));
    row = NULL;
    spec = json_pack("{s:i}", "wbits", 4);
    if (store_job_insert(st, "alice", fx->model_id, fx->dataset_id, spec, 3, NULL, &row))
        die("job", store_errmsg(st));
    json_decref(spec);
    copy_id(fx->queued_id, sizeof fx->queued_id, row);
    store_close(st);

    if (layout_artifact(fx->artifact, sizeof fx->artifact, fx->dir, fx->job_id,
                        LAYOUT_ARTIFACT_REPORT))
        die("layout", fx->artifact);
    if (auth_link_key_new(fx->link_key)) die("link key", "no randomness");
    char path[300], sig[65];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/%s", fx->job_id, LAYOUT_ARTIFACT_REPORT);
    auth_link_sign(fx->link_key, path, 4102444800LL, sig); /* 2100-01-01 */
    snprintf(fx->link_query, sizeof fx->link_query, "expires=4102444800&sig=%s", sig);

    fx->ctx = (api_ctx){.data_dir = fx->dir,
                        .limits = {.max_model_bytes = 1 << 20, .max_dataset_bytes = 1 << 20,
                                   .max_json_bytes = 1 << 16, .max_attempts = 3,
                                   .max_queued_jobs = 4, .max_owner_upload_bytes = 1 << 20},
                        .auth = 1, .version = "0.0.0-fuzz", .link_key = fx->link_key,
                        .webhook_allow_hosts = NULL, .inspect = fx_inspect,
                        .workers = fx_workers};
}

/* Copies the template over the run's database (and drops a WAL a crashed run left). */
static int copy_template(const fuzz_fx *fx) {
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", fx->db);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", fx->db);
    unlink(wal);
    int in = open(fx->tmpl, O_RDONLY | O_CLOEXEC);
    int out = open(fx->db, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = in >= 0 && out >= 0 ? 0 : -1;
    char buf[1 << 16];
    ssize_t n;
    while (!rc && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) rc = -1;
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return rc;
}

int fuzz_fx_begin(fuzz_fx *fx) {
    char err[512];
    if (copy_template(fx)) return -1;
    /* a DELETE of the job in the previous run removed its folder */
    if (access(fx->artifact, F_OK)) {
        char dir[600];
        layout_artifacts_dir(dir, sizeof dir, fx->dir, fx->job_id);
        if (fs_mkdirs(dir) ||
            write_file(fx->artifact, artifact_text, sizeof artifact_text - 1))
            return -1;
    }
    if (store_open(&fx->st, fx->db, 1000, err, sizeof err)) return -1;
    fx->ctx.st = fx->st;
    return 0;
}

void fuzz_fx_end(fuzz_fx *fx) {
    store_close(fx->st);
    fx->st = NULL;
    fx->ctx.st = NULL;
}

char *fuzz_fx_expand(const fuzz_fx *fx, const char *s, size_t n, size_t *outlen) {
    size_t cap = n + 1, len = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '@') cap += sizeof fx->link_query;
    char *out = malloc(cap);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *v = NULL;
        if (s[i] == '@' && i + 1 < n) {
            switch (s[i + 1]) {
            case 'T': v = fx->token; break;
            case 'A': v = fx->admin_token; break;
            case 'M': v = fx->model_id; break;
            case 'D': v = fx->dataset_id; break;
            case 'J': v = fx->job_id; break;
            case 'Q': v = fx->queued_id; break;
            case 'L': v = fx->link_query; break;
            }
        }
        if (v) {
            size_t l = strlen(v);
            memcpy(out + len, v, l);
            len += l;
            i++;
        } else {
            out[len++] = s[i];
        }
    }
    out[len] = '\0';
    *outlen = len;
    return out;
}
