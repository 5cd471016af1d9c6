/*
 * test_api.c: gplqd's REST handlers without a socket. Each case builds api_requests by hand and
 * calls api_dispatch against a real SQLite database and data directory in a temp folder; the
 * upload inspector is a small shell script this test writes (it answers by the upload's first
 * four bytes), run through the real inspect_run, so the child-process plumbing is tested too.
 * SQLite's writes fail on demand (sqlite_fault.h) for the answers to a full disk.
 */
#include <dirent.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/inspect.h"
#include "api/metrics.h"
#include "api/openapi.h"
#include "api/range.h"
#include "api/sse.h"
#include "api/web.h"
#include "api/webhook.h"
#include "config/jobspec.h"
#include "storage/blob.h"
#include "storage/store.h"
#include "sqlite_fault.h"
#include "test.h"
#include "util/sha256.h"

TEST_MAIN()

/* ---------------------------------------------------------------- fixture */

typedef struct {
    char dir[256];
    char stub[512];      /* the stub inspector */
    char args_log[512];  /* where it appends its arguments */
    store *st;
    api_ctx ctx;
    int wakes;
    int inspect_timeout_ms;
    const char *inspect_bin; /* normally stub */
    inspector ins;           /* fx_inspect's, with inspect_bin and inspect_timeout_ms */
    const char *token;       /* sent as "Authorization: Bearer" by call() when set */
    char bearer[128];
} fixture;

static const char *stub_script =
    "#!/bin/sh\n"
    "# stub gplq-worker inspect-*: answers by the upload's first four bytes\n"
    "echo \"$*\" >> \"%s\"\n"
    "head=$(head -c 4 \"$2\")\n"
    "case \"$head\" in\n"
    "GOOD) if [ \"$1\" = inspect-model ]; then\n"
    "        img=$(echo \"$*\" | sed -n 's/.*--img-size \\([0-9]*\\).*/\\1/p')\n"
    "        echo '{\"ok\":true,\"config\":{\"dim\":192,\"depth\":12,\"num_heads\":3,\"img_size\":'${img:-28}'},\"convention\":\"timm\",\"description\":\"ViT: the stub'\"'\"'s\"}'\n"
    "      else\n"
    "        echo '{\"ok\":true,\"summary\":{\"format\":\"imagefolder\",\"classes\":[\"a\",\"b\"],\"train\":10,\"val\":0}}'\n"
    "      fi; exit 0;;\n"
    "CRSH) kill -SEGV $$;;\n"
    "SLOW) exec sleep 10;;\n"
    "JUNK) echo 'this is not json'; exit 0;;\n"
    "*) echo '{\"ok\":false,\"error\":\"not a safetensors file: the header length exceeds the file\"}'; exit 1;;\n"
    "esac\n";

static int fx_inspect(void *arg, const char *const *args, json_t **out, char *err, size_t errlen) {
    fixture *f = arg;
    f->ins.bin = f->inspect_bin;
    f->ins.timeout_ms = f->inspect_timeout_ms;
    return inspect_run(&f->ins, args, out, err, errlen);
}

static void fx_wake(void *arg) {
    ((fixture *)arg)->wakes++;
}

static json_t *fx_workers(void *arg) {
    (void)arg;
    return json_pack("[{s:s, s:i, s:b, s:s}, {s:s, s:i, s:b, s:n}]", "name", "w1", "pid", 11,
                     "alive", 1, "blas_core", "Haswell", "name", "w2", "pid", 0, "alive", 0,
                     "blas_core");
}

static void fx_open(fixture *f) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/gplq-test-api-XXXXXX");
    if (!mkdtemp(f->dir)) abort();
    char err[512], path[600];
    if (blob_init(f->dir, err, sizeof err)) fprintf(stderr, "blob_init: %s\n", err), abort();
    snprintf(path, sizeof path, "%s/gplq.db", f->dir);
    if (store_open(&f->st, path, 5000, err, sizeof err)) fprintf(stderr, "store_open: %s\n", err), abort();
    static const uint8_t key[32] = {1, 2, 3}; /* webhook secrets are sealed under it */
    store_set_secret_key(f->st, key);
    json_t *row = NULL, *summary = json_pack("{s:i}", "train", 60000);
    store_dataset_insert(f->st, "", "fashion-mnist", "fashion-mnist", "builtin", "", 0, summary, &row);
    json_decref(summary);
    json_decref(row);
    snprintf(f->stub, sizeof f->stub, "%s/stub-inspector.sh", f->dir);
    snprintf(f->args_log, sizeof f->args_log, "%s/stub-args.log", f->dir);
    FILE *s = fopen(f->stub, "w");
    fprintf(s, stub_script, f->args_log);
    fclose(s);
    chmod(f->stub, 0755);
    f->inspect_bin = f->stub;
    f->inspect_timeout_ms = 5000;
    f->ctx = (api_ctx){.data_dir = f->dir,
                       .limits = {.max_model_bytes = 1 << 20, .max_dataset_bytes = 1 << 20,
                                  .max_json_bytes = 4096, .max_attempts = 3},
                       .st = f->st, .owner = "", .version = "9.9.9-test",
                       .wake = fx_wake, .wake_arg = f, .inspect = fx_inspect, .inspect_arg = f,
                       .workers = fx_workers, .workers_arg = f};
}

static void fx_close(fixture *f) {
    store_close(f->st);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", f->dir);
}

/* Files in DATA/sub (tmp, blobs/xx...), counted recursively. */
static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
    }
    closedir(d);
    return n;
}

static int count_in(fixture *f, const char *sub) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", f->dir, sub);
    return count_files(p);
}

/* ---------------------------------------------------------------- requests */

/* Runs METHOD URL (with ?query, no decoding needed here) with an optional body, an optional
 * upload and headers given as name, value pairs ending in NULL. Returns the status. */
static int call(fixture *f, api_response *res, const char *method, const char *url,
                const char *body, blob_writer *up, ...) {
    char path[512], qbuf[512];
    api_kv q[16], h[16];
    int nq = 0, nh = 0;
    snprintf(path, sizeof path, "%s", url);
    char *qm = strchr(path, '?');
    if (qm) {
        *qm = '\0';
        snprintf(qbuf, sizeof qbuf, "%s", qm + 1);
        for (char *tok = strtok(qbuf, "&"); tok && nq < 16; tok = strtok(NULL, "&")) {
            char *eq = strchr(tok, '=');
            if (eq) *eq = '\0';
            q[nq++] = (api_kv){tok, eq ? eq + 1 : ""};
        }
    }
    va_list ap;
    va_start(ap, up);
    for (const char *k; (k = va_arg(ap, const char *)) && nh < 16;) h[nh++] = (api_kv){k, va_arg(ap, const char *)};
    va_end(ap);
    if (f->token) {
        snprintf(f->bearer, sizeof f->bearer, "Bearer %s", f->token);
        h[nh++] = (api_kv){"Authorization", f->bearer};
    }
    api_request req = {.method = method, .path = path, .query = q, .nquery = nq, .headers = h,
                       .nheaders = nh, .body = body, .body_len = body ? strlen(body) : 0,
                       .upload = up, .request_id = "test-req"};
    api_dispatch(&f->ctx, &req, res);
    /* a JSON body written as text (api_json_text) is read as a client reads it */
    if (!res->body && res->text && res->content_type &&
        !strcmp(res->content_type, "application/json"))
        res->body = json_loadb(res->text, res->text_len, 0, NULL);
    return res->status;
}

/* The same, for an upload of n bytes of data. */
static int upload(fixture *f, api_response *res, const char *url, const void *data, size_t n) {
    blob_writer w;
    char err[256];
    if (blob_begin(&w, f->dir, err, sizeof err)) fprintf(stderr, "blob_begin: %s\n", err), abort();
    if (n && blob_write(&w, data, n, err, sizeof err)) fprintf(stderr, "blob_write: %s\n", err), abort();
    return call(f, res, "POST", url, NULL, &w, NULL);
}

static const char *err_code(const api_response *res) {
    return json_string_value(json_object_get(json_object_get(res->body, "error"), "code"));
}

static const char *err_field(const api_response *res) {
    return json_string_value(json_object_get(json_object_get(res->body, "error"), "field"));
}

static const char *err_message(const api_response *res) {
    const char *m = json_string_value(json_object_get(json_object_get(res->body, "error"), "message"));
    return m ? m : "";
}

static const char *str(json_t *obj, const char *key) {
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

static const char *header(const api_response *res, const char *name) {
    for (int i = 0; i < res->nheaders; i++)
        if (!strcasecmp(res->headers[i].name, name)) return res->headers[i].value;
    return NULL;
}

/* Uploads a good model (the stub accepts "GOOD..."), returns its id in out. */
static void make_model(fixture *f, const char *tail, char out[64]) {
    char data[128];
    snprintf(data, sizeof data, "GOOD model %s", tail);
    api_response res;
    upload(f, &res, "/v1/models?name=m", data, strlen(data));
    CHECK_MSG(res.status == 201 || res.status == 200, "model upload: %d", res.status);
    snprintf(out, 64, "%s", str(res.body, "id"));
    api_response_free(&res);
}

static void make_job(fixture *f, const char *model_id, const char *extra, char out[64]) {
    char body[512];
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"%s%s}",
             model_id, extra ? "," : "", extra ? extra : "");
    api_response res;
    call(f, &res, "POST", "/v1/jobs", body, NULL, NULL);
    CHECK_MSG(res.status == 201, "job create: %d %s", res.status, err_message(&res));
    snprintf(out, 64, "%s", str(res.body, "id"));
    api_response_free(&res);
}

/* ---------------------------------------------------------------- routing */

TEST(route_table_is_consistent) {
    for (int i = 0; i < api_nroutes; i++) {
        const api_route *r = &api_routes[i];
        if (r->flags & API_WEB) /* the dashboard: public pages, outside /v1/ */
            CHECK_MSG((!strcmp(r->pattern, "/") || !strncmp(r->pattern, "/web/", 5)) &&
                          (r->flags & API_PUBLIC) && !strcmp(r->method, "GET"),
                      "%s", r->name);
        else
            CHECK(!strncmp(r->pattern, "/v1/", 4) || !strcmp(r->pattern, "/metrics"));
        CHECK(r->handler != NULL);
        for (int j = 0; j < i; j++) CHECK_MSG(strcmp(api_routes[j].name, r->name), "duplicate name %s", r->name);
        /* each pattern, with its parameters filled, routes back to itself */
        char path[256], *o = path;
        for (const char *p = r->pattern; *p;) {
            if (*p == '{') {
                o += sprintf(o, "x1");
                p = strchr(p, '}') + 1;
            } else {
                *o++ = *p++;
            }
        }
        *o = '\0';
        api_params prm;
        char allow[64];
        CHECK_MSG(api_route_find(r->method, path, &prm, allow, sizeof allow) == r, "%s %s", r->method, path);
    }
    api_params prm;
    char allow[64];
    const api_route *r = api_route_find("HEAD", "/v1/jobs/j_1/artifacts/model.q", &prm, allow, sizeof allow);
    CHECK(r && !strcmp(r->name, "artifacts.get"));
    CHECK(prm.n == 2 && !strcmp(prm.v[0], "j_1") && !strcmp(prm.v[1], "model.q"));
    CHECK(api_route_find("GET", "/v1/jobs/", &prm, allow, sizeof allow) == NULL);
    CHECK(api_route_find("GET", "/v1/jobs/a/b/c/d", &prm, allow, sizeof allow) == NULL && !allow[0]);
}

TEST(not_found_and_method_not_allowed) {
    fixture f;
    fx_open(&f);
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/nope", NULL, NULL, NULL) == 404);
    CHECK(!strcmp(err_code(&res), "not_found"));
    CHECK(*err_message(&res));
    api_response_free(&res);
    CHECK(call(&f, &res, "PUT", "/v1/jobs", NULL, NULL, NULL) == 405);
    CHECK(!strcmp(err_code(&res), "method_not_allowed"));
    const char *allow = header(&res, "Allow");
    CHECK(allow && strstr(allow, "GET") && strstr(allow, "POST") && strstr(allow, "HEAD"));
    api_response_free(&res);
    CHECK(call(&f, &res, "DELETE", "/v1/health", NULL, NULL, NULL) == 405);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs/j_1", NULL, NULL, NULL) == 405);
    allow = header(&res, "Allow");
    CHECK(allow && strstr(allow, "DELETE") && strstr(allow, "GET"));
    api_response_free(&res);
    fx_close(&f);
}

TEST(health) {
    fixture f;
    fx_open(&f);
    char m[64], j[64];
    make_model(&f, "h", m);
    make_job(&f, m, NULL, j);
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/health", NULL, NULL, NULL) == 200);
    CHECK(!strcmp(str(res.body, "version"), "9.9.9-test"));
    CHECK(!strcmp(str(res.body, "status"), "ok"));
    CHECK(json_integer_value(json_object_get(res.body, "workers_alive")) == 1);
    CHECK(json_array_size(json_object_get(res.body, "workers")) == 2);
    CHECK(!strcmp(str(res.body, "blas_core"), "Haswell"));
    CHECK(json_integer_value(json_object_get(res.body, "queue_depth")) == 1);
    CHECK(json_integer_value(json_object_get(json_object_get(res.body, "jobs"), "queued")) == 1);
    api_response_free(&res);
    /* no supervisor (workers 0): an empty list, blas_core null */
    f.ctx.workers = NULL;
    CHECK(call(&f, &res, "GET", "/v1/health", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "workers")) == 0);
    CHECK(json_is_null(json_object_get(res.body, "blas_core")));
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- models */

TEST(model_upload_accepted_and_deduplicated) {
    fixture f;
    fx_open(&f);
    const char *data = "GOOD this stands for a safetensors file";
    uint8_t d[32];
    char hex[65];
    sha256(data, strlen(data), d);
    sha256_hex(d, hex);
    api_response res;
    CHECK(upload(&f, &res, "/v1/models?name=vit-demo&num_heads=3", data, strlen(data)) == 201);
    const char *id = str(res.body, "id");
    CHECK(!strcmp(str(res.body, "name"), "vit-demo"));
    CHECK(!strcmp(str(res.body, "sha256"), hex));
    CHECK(json_integer_value(json_object_get(res.body, "bytes")) == (json_int_t)strlen(data));
    json_t *cfg = json_object_get(res.body, "config");
    CHECK(json_integer_value(json_object_get(cfg, "dim")) == 192);
    CHECK(!strcmp(str(cfg, "convention"), "timm"));
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/models/%s", id);
    CHECK(header(&res, "Location") && !strcmp(header(&res, "Location"), loc));
    char id1[64];
    snprintf(id1, sizeof id1, "%s", id);
    api_response_free(&res);
    /* the blob is in place under its hash; nothing is left in tmp/ */
    char path[700];
    blob_path(path, sizeof path, f.dir, hex);
    CHECK(access(path, R_OK) == 0);
    CHECK(count_in(&f, "tmp") == 0);
    /* the inspector got the path and --num-heads */
    FILE *a = fopen(f.args_log, "r");
    char line[1024] = "";
    CHECK(a && fgets(line, sizeof line, a));
    if (a) fclose(a);
    CHECK_MSG(strstr(line, "inspect-model ") && strstr(line, "--num-heads 3"), "args: %s", line);

    /* the same bytes again: the same model, 200 */
    CHECK(upload(&f, &res, "/v1/models", data, strlen(data)) == 200);
    CHECK(!strcmp(str(res.body, "id"), id1));
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 1 && count_in(&f, "tmp") == 0);

    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "models")) == 1);
    api_response_free(&res);
    fx_close(&f);
}

TEST(model_upload_refused_leaves_nothing) {
    fixture f;
    fx_open(&f);
    f.inspect_timeout_ms = 700;
    struct {
        const char *data, *expect;
    } cases[] = {
        {"\x01\x02random bytes", "header length exceeds"},
        {"CRSH", "crashed"},
        {"JUNK", "no JSON answer"},
        {"SLOW", "did not finish"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        api_response res;
        CHECK_MSG(upload(&f, &res, "/v1/models", cases[i].data, strlen(cases[i].data)) == 422,
                  "case %zu: %d", i, res.status);
        CHECK(!strcmp(err_code(&res), "invalid_model"));
        CHECK_MSG(strstr(err_message(&res), cases[i].expect), "case %zu: '%s'", i, err_message(&res));
        api_response_free(&res);
    }
    CHECK(count_in(&f, "tmp") == 0);
    CHECK(count_in(&f, "blobs") == 0);
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "models")) == 0);
    api_response_free(&res);
    fx_close(&f);
}

TEST(model_upload_bad_requests) {
    fixture f;
    fx_open(&f);
    api_response res;
    /* no body at all, and an empty one */
    CHECK(call(&f, &res, "POST", "/v1/models", NULL, NULL, NULL) == 400);
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models", "", 0) == 400);
    CHECK(strstr(err_message(&res), "empty"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models?num_heads=x", "GOOD", 4) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "num_heads"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models?num_heads=65", "GOOD", 4) == 400);
    CHECK(strstr(err_message(&res), "out of range"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models?colour=blue", "GOOD", 4) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "colour"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models?name=", "GOOD", 4) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "name"));
    api_response_free(&res);
    CHECK(count_in(&f, "tmp") == 0 && count_in(&f, "blobs") == 0);

    /* the checks made before the body: size (413) and a multipart form (415) */
    api_params p;
    char allow[64];
    const api_route *r = api_route_find("POST", "/v1/models", &p, allow, sizeof allow);
    api_kv h[] = {{"Content-Type", "multipart/form-data; boundary=x"}};
    api_request req = {.method = "POST", .path = "/v1/models"};
    api_response_init(&res);
    CHECK(api_precheck(&f.ctx, r, &req, (1 << 20) + 1, &res) == 1 && res.status == 413);
    CHECK(!strcmp(err_code(&res), "too_large"));
    api_response_free(&res);
    api_response_init(&res);
    CHECK(api_precheck(&f.ctx, r, &req, 1 << 20, &res) == 0);
    api_response_free(&res);
    req.headers = h;
    req.nheaders = 1;
    api_response_init(&res);
    CHECK(api_precheck(&f.ctx, r, &req, 100, &res) == 1 && res.status == 415);
    CHECK(!strcmp(err_code(&res), "unsupported_media_type"));
    api_response_free(&res);
    /* a bad query is refused before the body too */
    api_kv q[] = {{"num_heads", "-1"}};
    req = (api_request){.method = "POST", .path = "/v1/models", .query = q, .nquery = 1};
    api_response_init(&res);
    CHECK(api_precheck(&f.ctx, r, &req, 100, &res) == 1 && res.status == 400);
    api_response_free(&res);
    /* JSON routes: the JSON limit */
    r = api_route_find("POST", "/v1/jobs", &p, allow, sizeof allow);
    req = (api_request){.method = "POST", .path = "/v1/jobs"};
    api_response_init(&res);
    CHECK(api_precheck(&f.ctx, r, &req, 4097, &res) == 1 && res.status == 413);
    api_response_free(&res);
    fx_close(&f);
}

/* img_size, mean and std of the upload's query: checked here, handed to the inspector, and
 * what it answered is the model's config, which the model's jobs carry to the worker. */
TEST(model_upload_input_hints) {
    fixture f;
    fx_open(&f);
    const char *data = "GOOD a Swin that does not say its image size";
    api_response res;
    CHECK(upload(&f, &res, "/v1/models?img_size=16&mean=0.5&std=0.25,0.5,1", data, strlen(data)) == 201);
    json_t *cfg = json_object_get(res.body, "config");
    CHECK(json_integer_value(json_object_get(cfg, "img_size")) == 16);
    CHECK_MSG(!strcmp(str(cfg, "description"), "ViT: the stub's"), "%s", str(cfg, "description"));
    char id[64];
    snprintf(id, sizeof id, "%s", str(res.body, "id"));
    api_response_free(&res);
    FILE *a = fopen(f.args_log, "r");
    char line[1024] = "";
    CHECK(a && fgets(line, sizeof line, a));
    if (a) fclose(a);
    CHECK_MSG(strstr(line, "--img-size 16 --mean 0.5,0.5,0.5 --std 0.25,0.5,1 ") &&
              !strstr(line, "--num-heads"), "args: %s", line);

    /* the same bytes with the same hints are the same model; with others, a conflict that
     * names it (answering with it would run jobs at its size, not the one asked for) */
    CHECK(upload(&f, &res, "/v1/models?img_size=16", data, strlen(data)) == 200);
    CHECK(!strcmp(str(res.body, "id"), id));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models", data, strlen(data)) == 409);
    CHECK(!strcmp(err_code(&res), "conflict") && strstr(err_message(&res), id));
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 1 && count_in(&f, "tmp") == 0);

    /* a job on it carries what the worker needs to load it the same way; not settable */
    char body[256];
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"}", id);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    json_t *in = json_object_get(json_object_get(res.body, "spec"), "model_input");
    json_t *want = json_pack("{s:i, s:i}", "img_size", 16, "num_heads", 3);
    CHECK_MSG(json_equal(in, want), "model_input %s", in ? json_dumps(in, JSON_COMPACT) : "absent");
    json_decref(want);
    api_response_free(&res);
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\","
             "\"model_input\":{\"img_size\":32}}", id);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "model_input"));
    api_response_free(&res);

    /* bad values: 400 naming the field, before the inspector runs */
    struct {
        const char *query, *field, *msg;
    } bad[] = {
        {"img_size=x", "img_size", "not an integer"},
        {"img_size=5000", "img_size", "out of range"},
        {"img_size=-1", "img_size", "out of range"},
        {"mean=abc&std=1", "mean", "one number or three"},
        {"mean=0.5,0.5&std=1", "mean", "one number or three"},
        {"mean=0.5", "std", "go together"},
        {"std=0.5", "mean", "go together"},
        {"mean=0.5&std=0", "std", "out of range"},
        {"mean=0.5&std=1,2,3,4", "std", "one number or three"},
    };
    int inspected = 0;
    a = fopen(f.args_log, "r");
    while (a && fgets(line, sizeof line, a)) inspected++;
    if (a) fclose(a);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char url[128];
        snprintf(url, sizeof url, "/v1/models?%s", bad[i].query);
        CHECK_MSG(upload(&f, &res, url, "GOOD other", 10) == 400, "%s: %d", url, res.status);
        CHECK_MSG(err_field(&res) && !strcmp(err_field(&res), bad[i].field), "%s: field %s", url,
                  err_field(&res));
        CHECK_MSG(strstr(err_message(&res), bad[i].msg), "%s: '%s'", url, err_message(&res));
        api_response_free(&res);
    }
    int after = 0;
    a = fopen(f.args_log, "r");
    while (a && fgets(line, sizeof line, a)) after++;
    if (a) fclose(a);
    CHECK_MSG(after == inspected, "%d inspections for bad queries", after - inspected);
    CHECK(count_in(&f, "tmp") == 0);
    fx_close(&f);
}

TEST(internal_errors_leak_nothing) {
    fixture f;
    fx_open(&f);
    f.inspect_bin = "/nonexistent/secret-path/gplq-worker";
    api_response res;
    CHECK(upload(&f, &res, "/v1/models", "GOOD", 4) == 500);
    CHECK(!strcmp(err_code(&res), "internal"));
    CHECK(!strstr(err_message(&res), "secret-path"));
    CHECK(strstr(err_message(&res), "test-req")); /* the request id, to find the log line */
    api_response_free(&res);
    CHECK(count_in(&f, "tmp") == 0 && count_in(&f, "blobs") == 0);
    fx_close(&f);
}

/* A full disk or an I/O error under a request: an upload that does not fit is a 507, any
 * other write a 503, both with Retry-After and a message that names no path; nothing is kept,
 * and the same requests succeed once the fault is gone (tests/sqlite_fault.h makes SQLite's
 * writes fail as on a full disk). */
TEST(storage_faults_are_503_or_507_and_change_nothing) {
    sqlite_fault_install(); /* before the database is opened */
    fixture f;
    fx_open(&f);
    char model[64], job[64], url[128];
    make_model(&f, "one", model);
    make_job(&f, model, NULL, job);
    char body[256];
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"}", model);
    snprintf(url, sizeof url, "/v1/jobs/%s/cancel", job);
    api_response res;
    for (int fault = SQLITE_FAULT_FULL; fault <= SQLITE_FAULT_IOERR; fault++) {
        int full = fault == SQLITE_FAULT_FULL;
        const char *says = full ? "disk is full" : "I/O error";
        sqlite_fault = fault;
        CHECK_MSG(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 503, "job: %d",
                  res.status);
        CHECK(!strcmp(err_code(&res), "unavailable") && header(&res, "Retry-After"));
        CHECK_MSG(strstr(err_message(&res), says) && !strstr(err_message(&res), f.dir),
                  "message: %s", err_message(&res));
        api_response_free(&res);
        CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 503);
        api_response_free(&res);
        /* an upload whose row cannot be written: nothing of it stays */
        const char *data = "GOOD another model";
        CHECK(upload(&f, &res, "/v1/models", data, strlen(data)) == (full ? 507 : 503));
        CHECK(!strcmp(err_code(&res), full ? "insufficient_storage" : "unavailable"));
        CHECK(header(&res, "Retry-After") && !strstr(err_message(&res), f.dir));
        CHECK_MSG(strstr(err_message(&res), "upload was not stored"), "message: %s",
                  err_message(&res));
        api_response_free(&res);
        CHECK(count_in(&f, "tmp") == 0 && count_in(&f, "blobs") == 1);
        sqlite_fault = SQLITE_FAULT_NONE;
    }
    /* nothing changed, and the same requests go through now */
    CHECK(call(&f, &res, "GET", "/v1/jobs", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "jobs")) == 1);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models", "GOOD another model", 18) == 201);
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 2);
    fx_close(&f);
}

TEST(model_get_and_delete) {
    fixture f;
    fx_open(&f);
    char m[64], path[128];
    make_model(&f, "get", m);
    api_response res;
    snprintf(path, sizeof path, "/v1/models/%s", m);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    CHECK(!strcmp(str(res.body, "id"), m));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/models/m_nope", NULL, NULL, NULL) == 404);
    CHECK(strstr(err_message(&res), "m_nope"));
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 1);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    CHECK(res.body == NULL);
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 0); /* the last reference went: so did the file */
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    fx_close(&f);
}

TEST(model_in_use_cannot_be_deleted) {
    fixture f;
    fx_open(&f);
    char m[64], j[64], path[128], cancel[128];
    make_model(&f, "busy", m);
    make_job(&f, m, NULL, j);
    api_response res;
    snprintf(path, sizeof path, "/v1/models/%s", m);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 409);
    CHECK(!strcmp(err_code(&res), "conflict"));
    CHECK(*err_message(&res));
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 1);
    snprintf(cancel, sizeof cancel, "/v1/jobs/%s/cancel", j);
    CHECK(call(&f, &res, "POST", cancel, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- datasets */

TEST(datasets) {
    fixture f;
    fx_open(&f);
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/datasets", NULL, NULL, NULL) == 200);
    json_t *arr = json_object_get(res.body, "datasets");
    CHECK(json_array_size(arr) == 1 && !strcmp(str(json_array_get(arr, 0), "id"), "fashion-mnist"));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/datasets/fashion-mnist", NULL, NULL, NULL) == 200);
    CHECK(!strcmp(str(res.body, "kind"), "builtin"));
    api_response_free(&res);
    CHECK(call(&f, &res, "DELETE", "/v1/datasets/fashion-mnist", NULL, NULL, NULL) == 409);
    api_response_free(&res);

    CHECK(upload(&f, &res, "/v1/datasets?name=flowers&val_fraction=0.2", "GOOD tar", 8) == 201);
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", str(res.body, "id"));
    json_t *sum = json_object_get(res.body, "summary");
    CHECK(json_integer_value(json_object_get(sum, "train")) == 10);
    CHECK_NEAR(json_real_value(json_object_get(sum, "val_fraction")), 0.2, 1e-9);
    CHECK(!strcmp(str(res.body, "name"), "flowers"));
    CHECK(header(&res, "Location") != NULL);
    api_response_free(&res);
    FILE *a = fopen(f.args_log, "r");
    char line[1024] = "";
    CHECK(a && fgets(line, sizeof line, a));
    if (a) fclose(a);
    CHECK(!strncmp(line, "inspect-dataset ", 16));

    CHECK(upload(&f, &res, "/v1/datasets", "BAD!", 4) == 422);
    CHECK(!strcmp(err_code(&res), "invalid_dataset"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/datasets?val_fraction=0.95", "GOOD", 4) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "val_fraction"));
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/datasets?num_heads=3", "GOOD", 4) == 400);
    api_response_free(&res);

    CHECK(call(&f, &res, "GET", "/v1/datasets", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "datasets")) == 2);
    api_response_free(&res);
    snprintf(path, sizeof path, "/v1/datasets/%s", id);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    CHECK(count_in(&f, "blobs") == 0 && count_in(&f, "tmp") == 0);
    /* as many inspections as the cap allows are running: 503 with Retry-After, at once, and
     * the upload's bytes are gone; with a slot free again the same upload is accepted */
    f.ins.max_running = 2;
    atomic_store(&f.ins.running, 2);
    CHECK(upload(&f, &res, "/v1/datasets?name=later", "GOOD busy", 9) == 503);
    CHECK(!strcmp(err_code(&res), "busy") && header(&res, "Retry-After") &&
          !strcmp(header(&res, "Retry-After"), "10"));
    CHECK_MSG(strstr(err_message(&res), "inspecting 2 uploads, the most it does at once"), "%s",
              err_message(&res));
    api_response_free(&res);
    CHECK(count_in(&f, "tmp") == 0);
    atomic_store(&f.ins.running, 1);
    CHECK(upload(&f, &res, "/v1/datasets?name=later", "GOOD busy", 9) == 201);
    CHECK(atomic_load(&f.ins.running) == 1);
    snprintf(path, sizeof path, "/v1/datasets/%s", str(res.body, "id"));
    api_response_free(&res);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- jobs */

TEST(job_create_resolves_every_option) {
    fixture f;
    fx_open(&f);
    char m[64], body[256];
    make_model(&f, "job", m);
    snprintf(body, sizeof body,
             "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\",\"train_subset\":512,"
             "\"lr\":1e-5,\"qwt\":false}", m);
    api_response res;
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    CHECK(f.wakes == 1);
    CHECK(!strcmp(str(res.body, "state"), "queued"));
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", str(res.body, "id"));
    CHECK(header(&res, "Location") && !strcmp(header(&res, "Location"), loc));
    CHECK(json_integer_value(json_object_get(res.body, "max_attempts")) == 3);
    json_t *spec = json_object_get(res.body, "spec");
    /* every option of the table, resolved: the defaults and the given ones */
    jobspec js;
    jobspec_defaults(&js);
    json_t *defaults = jobspec_to_json(&js);
    const char *key;
    json_t *v;
    json_object_foreach(defaults, key, v) CHECK_MSG(json_object_get(spec, key), "spec lacks %s", key);
    json_decref(defaults);
    CHECK(json_integer_value(json_object_get(spec, "wbits")) == 4);
    CHECK(json_integer_value(json_object_get(spec, "train_subset")) == 512);
    CHECK_NEAR(json_real_value(json_object_get(spec, "lr")), 1e-5, 1e-12);
    CHECK(json_is_false(json_object_get(spec, "qwt")));
    CHECK(!strcmp(str(spec, "model_id"), m));
    CHECK(!strcmp(str(spec, "dataset_id"), "fashion-mnist"));
    api_response_free(&res);

    CHECK(call(&f, &res, "GET", loc, NULL, NULL, NULL) == 200);
    CHECK(!strcmp(str(res.body, "model_id"), m));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/jobs/j_nope", NULL, NULL, NULL) == 404);
    api_response_free(&res);

    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\",\"max_attempts\":5}", m);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    CHECK(json_integer_value(json_object_get(res.body, "max_attempts")) == 5);
    api_response_free(&res);
    fx_close(&f);
}

TEST(job_create_errors_name_the_field) {
    fixture f;
    fx_open(&f);
    char m[64];
    make_model(&f, "err", m);
    struct {
        const char *extra; /* appended to a valid body */
        int status;
        const char *field, *msg;
    } cases[] = {
        {",\"colour\":1", 400, "colour", "unknown option"},
        {",\"lr\":5", 400, "lr", "out of range"},
        {",\"wbits\":9", 400, "wbits", "out of range"},
        {",\"wbits\":\"four\"", 400, "wbits", "integer"},
        {",\"batch_size\":1.5", 400, "batch_size", "integer"},
        {",\"qwt\":\"yes\"", 400, "qwt", "true or false"},
        {",\"max_attempts\":0", 400, "max_attempts", "max_attempts"},
        {",\"webhook\":{}", 400, "webhook.url", "must be a string"},
        {",\"webhook\":[]", 400, "webhook", "must be an object"},
        {",\"webhook\":{\"url\":\"gopher://x.org/\",\"secret\":\"0123456789abcdef\"}", 400,
         "webhook.url", "http or https"},
        {",\"webhook\":{\"url\":\"https://x.org/\",\"secret\":\"short\"}", 400, "webhook.secret",
         "16 to 256"},
        {",\"webhook\":{\"url\":\"https://x.org/\",\"secret\":\"0123456789abcdef\",\"x\":1}", 400,
         "webhook", "not a webhook field"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"%s}", m, cases[i].extra);
        api_response res;
        CHECK_MSG(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == cases[i].status, "%s: %d", cases[i].extra, res.status);
        CHECK_MSG(err_field(&res) && !strcmp(err_field(&res), cases[i].field), "%s: field %s", cases[i].extra, err_field(&res));
        CHECK_MSG(strstr(err_message(&res), cases[i].msg), "%s: '%s'", cases[i].extra, err_message(&res));
        api_response_free(&res);
    }
    struct {
        const char *body;
        int status;
        const char *field;
    } whole[] = {
        {"{\"dataset_id\":\"fashion-mnist\"}", 400, "model_id"},
        {"{\"model_id\":7,\"dataset_id\":\"fashion-mnist\"}", 400, "model_id"},
        {"{\"model_id\":\"m_nope\",\"dataset_id\":\"fashion-mnist\"}", 404, "model_id"},
        {"{\"model_id\":\"M\",\"dataset_id\":\"d_nope\"}", 404, "dataset_id"},
        {"{\"model_id\":\"M\"}", 400, "dataset_id"},
        {"not json", 400, NULL},
        {"[1,2]", 400, NULL},
        {"", 400, NULL},
    };
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++) {
        char body[512];
        const char *M = strstr(whole[i].body, "\"M\"");
        if (M) /* put the real model id in */
            snprintf(body, sizeof body, "%.*s\"%s\"%s", (int)(M - whole[i].body), whole[i].body, m, M + 3);
        else
            snprintf(body, sizeof body, "%s", whole[i].body);
        api_response res;
        CHECK_MSG(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == whole[i].status, "%s: %d", body, res.status);
        if (whole[i].field) CHECK_MSG(err_field(&res) && !strcmp(err_field(&res), whole[i].field), "%s: field %s", body, err_field(&res));
        CHECK(err_code(&res) != NULL);
        api_response_free(&res);
    }
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/jobs", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "jobs")) == 0);
    api_response_free(&res);
    CHECK(f.wakes == 0);
    fx_close(&f);
}

TEST(job_idempotency_key) {
    fixture f;
    fx_open(&f);
    char m[64], body[256], first[64];
    make_model(&f, "idem", m);
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"}", m);
    api_response res;
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, "Idempotency-Key", "nightly-2026-11-27", NULL) == 201);
    snprintf(first, sizeof first, "%s", str(res.body, "id"));
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, "idempotency-key", "nightly-2026-11-27", NULL) == 200);
    CHECK(!strcmp(str(res.body, "id"), first));
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, "Idempotency-Key", "nightly-2026-11-28", NULL) == 201);
    CHECK(strcmp(str(res.body, "id"), first));
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, "Idempotency-Key", "has space", NULL) == 400);
    CHECK(err_field(&res) && !strcmp(err_field(&res), "Idempotency-Key"));
    api_response_free(&res);
    CHECK(f.wakes == 2);
    fx_close(&f);
}

TEST(job_list_filters_and_pages) {
    fixture f;
    fx_open(&f);
    char m[64], ids[5][64];
    make_model(&f, "list", m);
    for (int i = 0; i < 5; i++) make_job(&f, m, NULL, ids[i]);
    api_response res;
    char url[512], seen[5][64];
    int nseen = 0;
    snprintf(url, sizeof url, "/v1/jobs?limit=2");
    for (int page = 0; page < 4; page++) {
        CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 200);
        json_t *jobs = json_object_get(res.body, "jobs");
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j) if (nseen < 5) snprintf(seen[nseen++], 64, "%s", str(j, "id"));
        json_t *next = json_object_get(res.body, "next_cursor");
        CHECK(json_array_size(jobs) == (page < 2 ? 2u : 1u));
        if (json_is_null(next)) {
            api_response_free(&res);
            break;
        }
        snprintf(url, sizeof url, "/v1/jobs?limit=2&cursor=%s", json_string_value(next));
        api_response_free(&res);
    }
    CHECK(nseen == 5);
    for (int i = 0; i < 5 && nseen == 5; i++) /* newest first */
        CHECK_MSG(!strcmp(seen[i], ids[4 - i]), "position %d: %s, expected %s", i, seen[i], ids[4 - i]);

    CHECK(call(&f, &res, "GET", "/v1/jobs?state=queued", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "jobs")) == 5);
    CHECK(json_is_null(json_object_get(res.body, "next_cursor")));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/jobs?state=running", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "jobs")) == 0);
    api_response_free(&res);
    const char *bad[][2] = {{"/v1/jobs?state=sleeping", "state"}, {"/v1/jobs?limit=0", "limit"},
                            {"/v1/jobs?limit=501", "limit"}, {"/v1/jobs?limit=ten", "limit"},
                            {"/v1/jobs?cursor=zzz", "cursor"}, {"/v1/jobs?sort=asc", "sort"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(call(&f, &res, "GET", bad[i][0], NULL, NULL, NULL) == 400, "%s: %d", bad[i][0], res.status);
        CHECK_MSG(err_field(&res) && !strcmp(err_field(&res), bad[i][1]), "%s: field %s", bad[i][0], err_field(&res));
        api_response_free(&res);
    }
    fx_close(&f);
}

TEST(job_cancel_and_delete) {
    fixture f;
    fx_open(&f);
    char m[64], j[64], path[128], cancel[160];
    make_model(&f, "cancel", m);
    make_job(&f, m, NULL, j);
    snprintf(path, sizeof path, "/v1/jobs/%s", j);
    snprintf(cancel, sizeof cancel, "%s/cancel", path);
    api_response res;
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 409); /* still queued */
    api_response_free(&res);
    int wakes = f.wakes;
    CHECK(call(&f, &res, "POST", cancel, NULL, NULL, NULL) == 200);
    CHECK(!strcmp(str(res.body, "state"), "canceled"));
    CHECK(f.wakes == wakes + 1);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", cancel, NULL, NULL, NULL) == 409); /* already ended */
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs/j_nope/cancel", NULL, NULL, NULL) == 404);
    api_response_free(&res);
    /* the job's folder goes with it */
    char dir[600], file[700];
    snprintf(dir, sizeof dir, "%s/jobs/%s/artifacts", f.dir, j);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    snprintf(file, sizeof file, "%s/report.json", dir);
    FILE *o = fopen(file, "w");
    fputs("{}", o);
    fclose(o);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    api_response_free(&res);
    snprintf(dir, sizeof dir, "%s/jobs/%s", f.dir, j);
    CHECK(access(dir, F_OK) != 0);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- tokens and owners */

/* A new token for owner name, recorded in f's database; its text in out (65 bytes). */
static void make_token(fixture *f, const char *name, int admin, char *out) {
    char id[AUTH_ID_LEN + 1], hash[65];
    CHECK(auth_token_new(out, id, hash) == 0);
    json_t *row = NULL;
    CHECK_MSG(store_token_insert(f->st, id, name, admin, hash, &row) == STORE_OK, "%s",
              store_errmsg(f->st));
    CHECK(!strcmp(str(row, "id"), id) && !strcmp(str(row, "name"), name));
    json_decref(row);
}

TEST(token_shape) {
    char t[AUTH_TOKEN_LEN + 1], id[AUTH_ID_LEN + 1], hash[65], id2[AUTH_ID_LEN + 1], hash2[65];
    CHECK(auth_token_new(t, id, hash) == 0);
    CHECK(strlen(t) == AUTH_TOKEN_LEN && !strncmp(t, "gplq_", 5));
    CHECK(strlen(id) == AUTH_ID_LEN && !strncmp(id, "t_", 2) && !strncmp(id + 2, t + 5, 16));
    CHECK(auth_token_parse(t, id2, hash2) == 0 && !strcmp(id, id2) && !strcmp(hash, hash2));
    char u[AUTH_TOKEN_LEN + 1];
    CHECK(auth_token_new(u, id2, hash2) == 0 && strcmp(t, u) && strcmp(hash, hash2));
    t[40] = t[40] == 'A' ? 'B' : 'A'; /* another secret, same id: another hash */
    CHECK(auth_token_parse(t, id2, hash2) == 0 && !strcmp(id, id2) && strcmp(hash, hash2));
    CHECK(auth_token_parse("gplq_short", id2, hash2) == -1);
    CHECK(auth_token_parse(NULL, id2, hash2) == -1);
    memcpy(t, "gplx_", 5);
    CHECK(auth_token_parse(t, id2, hash2) == -1);
    CHECK(auth_name_ok("ci") && auth_name_ok("team-a.prod_2") && auth_name_ok("7"));
    CHECK(!auth_name_ok("") && !auth_name_ok("-x") && !auth_name_ok("a b") &&
          !auth_name_ok("a/b") && !auth_name_ok(NULL));
    char longname[80];
    memset(longname, 'a', 65);
    longname[65] = '\0';
    CHECK(!auth_name_ok(longname));
}

TEST(auth_401_without_bad_or_revoked_token) {
    fixture f;
    fx_open(&f);
    f.ctx.auth = 1;
    char tok[AUTH_TOKEN_LEN + 1];
    make_token(&f, "ci", 0, tok);
    api_response res;
    /* every route but the public ones: 401 without a token, before anything else */
    for (int i = 0; i < api_nroutes; i++) {
        const api_route *r = &api_routes[i];
        char path[256], *o = path;
        for (const char *p = r->pattern; *p;) {
            if (*p == '{') {
                o += sprintf(o, "x1");
                p = strchr(p, '}') + 1;
            } else {
                *o++ = *p++;
            }
        }
        *o = '\0';
        f.token = NULL;
        int st = call(&f, &res, r->method, path, "{}", NULL, NULL);
        if (r->flags & API_PUBLIC) {
            CHECK_MSG(st != 401, "%s %s is public but answered 401", r->method, path);
        } else {
            CHECK_MSG(st == 401, "%s %s without a token: %d", r->method, path, st);
            CHECK(!strcmp(err_code(&res), "unauthorized"));
            const char *www = header(&res, "WWW-Authenticate");
            CHECK(www && !strncmp(www, "Bearer realm=", 13) && !strstr(www, "invalid_token"));
        }
        api_response_free(&res);
    }
    /* malformed, unknown, wrong scheme, revoked */
    char unknown[AUTH_TOKEN_LEN + 1], id[AUTH_ID_LEN + 1], hash[65];
    auth_token_new(unknown, id, hash);
    char forged[AUTH_TOKEN_LEN + 1];
    snprintf(forged, sizeof forged, "%s", tok);
    forged[50] = forged[50] == 'x' ? 'y' : 'x'; /* right id, wrong secret */
    const char *bad[] = {"nonsense", unknown, forged};
    for (int i = 0; i < 3; i++) {
        f.token = bad[i];
        CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 401);
        const char *www = header(&res, "WWW-Authenticate");
        CHECK(www && strstr(www, "error=\"invalid_token\""));
        api_response_free(&res);
    }
    f.token = NULL;
    char basic[128];
    snprintf(basic, sizeof basic, "Basic %s", tok);
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, "Authorization", basic, NULL) == 401);
    api_response_free(&res);
    f.token = tok;
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 200);
    api_response_free(&res);
    /* the scheme's name is case-insensitive (RFC 7235) */
    f.token = NULL;
    snprintf(basic, sizeof basic, "bearer %s", tok);
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, "Authorization", basic, NULL) == 200);
    api_response_free(&res);
    json_t *row = NULL;
    char tid[AUTH_ID_LEN + 1];
    auth_token_parse(tok, tid, hash);
    CHECK(store_token_revoke(f.st, tid, &row) == STORE_OK && !json_is_null(json_object_get(row, "revoked_at")));
    json_decref(row);
    CHECK(store_token_revoke(f.st, tid, &row) == STORE_ECONFLICT);
    CHECK(store_token_revoke(f.st, "t_nope", &row) == STORE_ENOTFOUND);
    f.token = tok;
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 401);
    api_response_free(&res);
    /* health stays open */
    f.token = NULL;
    CHECK(call(&f, &res, "GET", "/v1/health", NULL, NULL, NULL) == 200);
    api_response_free(&res);
    int64_t n = 0;
    CHECK(store_token_count(f.st, &n) == STORE_OK && n == 1);
    fx_close(&f);
}

TEST(owners_are_isolated_and_admin_sees_all) {
    fixture f;
    fx_open(&f);
    f.ctx.auth = 1;
    char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1], a2[AUTH_TOKEN_LEN + 1],
        adm[AUTH_TOKEN_LEN + 1];
    make_token(&f, "team-a", 0, a);
    make_token(&f, "team-b", 0, b);
    make_token(&f, "team-a", 0, a2); /* a rotation: the same owner */
    make_token(&f, "ops", 1, adm);
    char m[64], j[64], d[64], path[256];
    api_response res;
    f.token = a;
    make_model(&f, "a", m);
    make_job(&f, m, NULL, j);
    CHECK(upload(&f, &res, "/v1/datasets?name=ds", "GOOD data", 9) == 201);
    snprintf(d, sizeof d, "%s", str(res.body, "id"));
    api_response_free(&res);

    /* B: 404 for each of A's things, never their data; its lists hold none of them */
    f.token = b;
    const char *fmts[][2] = {{"GET", "/v1/models/%s"},         {"DELETE", "/v1/models/%s"},
                             {"GET", "/v1/datasets/%s"},       {"DELETE", "/v1/datasets/%s"},
                             {"GET", "/v1/jobs/%s"},           {"DELETE", "/v1/jobs/%s"},
                             {"POST", "/v1/jobs/%s/cancel"},   {"GET", "/v1/jobs/%s/artifacts"},
                             {"GET", "/v1/jobs/%s/artifacts/report.json"}};
    for (size_t i = 0; i < sizeof fmts / sizeof *fmts; i++) {
        const char *id = strstr(fmts[i][1], "models") ? m : strstr(fmts[i][1], "datasets") ? d : j;
        snprintf(path, sizeof path, fmts[i][1], id);
        CHECK_MSG(call(&f, &res, fmts[i][0], path, NULL, NULL, NULL) == 404, "%s %s: %d",
                  fmts[i][0], path, res.status);
        char *dump = json_dumps(res.body, 0);
        CHECK_MSG(dump && !strstr(dump, "team-a") && !strstr(dump, "GOOD"), "%s", dump);
        free(dump);
        api_response_free(&res);
    }
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "models")) == 0);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/datasets", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "datasets")) == 1); /* the built-in */
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/jobs", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "jobs")) == 0);
    api_response_free(&res);
    char body[256];
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"}", m);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 404);
    CHECK(!strcmp(err_field(&res), "model_id"));
    api_response_free(&res);
    /* B's upload of the same bytes is B's own model, not A's row */
    char mb[64];
    make_model(&f, "a", mb);
    CHECK(strcmp(mb, m) != 0);

    /* A's other token is A */
    f.token = a2;
    snprintf(path, sizeof path, "/v1/jobs/%s", j);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    /* the admin sees both owners' things, and acts on them */
    f.token = adm;
    CHECK(call(&f, &res, "GET", "/v1/models", NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "models")) == 2);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j);
    CHECK(call(&f, &res, "POST", path, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    fx_close(&f);
}

TEST(per_owner_limits) {
    fixture f;
    fx_open(&f);
    f.ctx.auth = 1;
    f.ctx.limits.max_queued_jobs = 2;
    f.ctx.limits.max_owner_upload_bytes = 100;
    char a[AUTH_TOKEN_LEN + 1], adm[AUTH_TOKEN_LEN + 1];
    make_token(&f, "a", 0, a);
    make_token(&f, "ops", 1, adm);
    f.token = a;
    char m[64], j[64];
    make_model(&f, "q", m);
    make_job(&f, m, NULL, j);
    make_job(&f, m, NULL, j);
    char body[256];
    snprintf(body, sizeof body, "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\"}", m);
    api_response res;
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 429);
    CHECK(!strcmp(err_code(&res), "too_many_jobs") && header(&res, "Retry-After"));
    api_response_free(&res);
    /* a place frees up when one leaves the queue */
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j);
    CHECK(call(&f, &res, "POST", path, NULL, NULL, NULL) == 200);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    api_response_free(&res);
    /* the admin is not limited */
    f.token = adm;
    CHECK(call(&f, &res, "POST", "/v1/jobs", body, NULL, NULL) == 201);
    api_response_free(&res);

    /* uploads: what the owner holds plus the new body, against the limit (the model above
     * holds 12 bytes) */
    f.token = a;
    char data[100];
    memset(data, 'x', sizeof data);
    memcpy(data, "GOOD", 4);
    CHECK(upload(&f, &res, "/v1/datasets", data, 80) == 201);
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/datasets", data, 20) == 413);
    CHECK(!strcmp(err_code(&res), "quota_exceeded"));
    api_response_free(&res);
    CHECK(count_in(&f, "tmp") == 0);
    /* refused on the headers too, from Content-Length */
    const api_route *r = NULL;
    for (int i = 0; i < api_nroutes; i++)
        if (!strcmp(api_routes[i].name, "models.create")) r = &api_routes[i];
    api_principal who = {.owner = "a"};
    api_request req = {.method = "POST", .path = "/v1/models", .who = &who};
    api_ctx c = f.ctx;
    api_ctx_apply(&c, &who);
    api_response_init(&res);
    CHECK(api_precheck(&c, r, &req, 101, &res) == 1 && res.status == 413);
    api_response_free(&res);
    /* under the whole limit it may be a model the owner has: known only after the body */
    api_response_init(&res);
    CHECK(api_precheck(&c, r, &req, 50, &res) == 0);
    api_response_free(&res);
    CHECK(upload(&f, &res, "/v1/models?name=m", "GOOD model q", 12) == 200); /* held already */
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- live events */

/* The "id: N" values of an SSE text, in order, into ids; returns their count. */
static int sse_ids(const char *text, size_t n, long long *ids, int max) {
    int k = 0;
    for (size_t i = 0; i + 4 < n && k < max; i++)
        if ((i == 0 || text[i - 1] == '\n') && !strncmp(text + i, "id: ", 4))
            ids[k++] = atoll(text + i + 4);
    return k;
}

TEST(job_events_stream) {
    fixture f;
    fx_open(&f);
    char m[64], j[64], path[160];
    make_model(&f, "ev", m);
    make_job(&f, m, NULL, j);
    snprintf(path, sizeof path, "/v1/jobs/%s/events", j);
    api_response res;
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    CHECK(res.stream && !strcmp(res.stream_job, j) && res.stream_after == 0);
    CHECK(!strcmp(res.content_type, "text/event-stream") && !res.body);
    CHECK(!strcmp(header(&res, "Cache-Control"), "no-cache"));
    api_response_free(&res);
    char url[200];
    snprintf(url, sizeof url, "%s?after=7", path);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 200 && res.stream_after == 7);
    api_response_free(&res);
    /* Last-Event-ID wins over ?after= (it is what a reconnecting browser sends) */
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "Last-Event-ID", "12", NULL) == 200 &&
          res.stream_after == 12);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, "Last-Event-ID", "x1", NULL) == 400);
    CHECK(!strcmp(err_field(&res), "Last-Event-ID") && !res.stream);
    api_response_free(&res);
    snprintf(url, sizeof url, "%s?after=-1", path);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 400);
    api_response_free(&res);
    snprintf(url, sizeof url, "%s?since=1", path);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 400);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/jobs/j_nope/events", NULL, NULL, NULL) == 404);
    api_response_free(&res);
    f.ctx.owner = "someone-else";
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 404 && !res.stream);
    api_response_free(&res);
    f.ctx.owner = "";

    /* the stream itself: a worker's claim, progress, end */
    store_claim claimed;
    CHECK(store_job_claim(f.st, "w1:1", 60000, &claimed) == STORE_OK);
    store_claim_free(&claimed);
    sse_stream s;
    CHECK(sse_init(&s, j, 0, 2000) == 0);
    CHECK(!strncmp(s.buf, "retry: 2000\n", 12));
    CHECK(sse_fill(&s, f.st) == 2 && !s.ended); /* queued, running */
    json_t *prog = json_pack("{s:s, s:i}", "stage", "stage1", "step", 1);
    CHECK(store_job_progress(f.st, j, "w1:1", 60000, "stage1", prog, 1) == STORE_OK);
    json_decref(prog);
    CHECK(sse_fill(&s, f.st) == 1 && !s.ended);
    CHECK(sse_fill(&s, f.st) == 0 && !s.ended); /* nothing new */
    CHECK(store_job_finish(f.st, j, "w1:1", "succeeded", NULL) == STORE_OK);
    CHECK(sse_fill(&s, f.st) == 1 && s.ended);
    long long ids[16];
    int n = sse_ids(s.buf + s.off, sse_pending(&s), ids, 16);
    CHECK(n == 4);
    for (int i = 1; i < n; i++) CHECK(ids[i] > ids[i - 1]);
    CHECK(s.last_id == ids[n - 1]);
    /* each event is "id:", "event:", one "data:" line of the event object, a blank line */
    char *text = strndup(s.buf + s.off, sse_pending(&s));
    CHECK(strstr(text, "event: state\ndata: {\"id\":") != NULL);
    CHECK(strstr(text, "event: progress\ndata: {") != NULL);
    char *last = strstr(text, "event: state\ndata: {\"id\":");
    for (char *p; last && (p = strstr(last + 1, "event: state\ndata: ")); last = p) {
    }
    json_t *ev = last ? json_loads(strchr(last, '{'), JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    json_t *data = json_object_get(ev, "data");
    CHECK(!strcmp(str(data, "state"), "succeeded"));
    CHECK(!strcmp(str(json_object_get(data, "job"), "state"), "succeeded")); /* as it ended */
    json_decref(ev);
    free(text);
    sse_free(&s);

    /* reconnecting after the second event: the rest and nothing else; at the end: nothing */
    CHECK(sse_init(&s, j, ids[1], 2000) == 0);
    CHECK(sse_fill(&s, f.st) == 2 && s.ended);
    long long again[16];
    CHECK(sse_ids(s.buf, s.len, again, 16) == 2 && again[0] == ids[2] && again[1] == ids[3]);
    sse_free(&s);
    CHECK(sse_init(&s, j, ids[3], 2000) == 0);
    CHECK(sse_fill(&s, f.st) == 0 && s.ended);
    sse_free(&s);
    /* a deleted job ends its stream */
    CHECK(sse_init(&s, "j_gone", 0, 2000) == 0);
    CHECK(sse_fill(&s, f.st) == 0 && s.ended && strstr(s.buf, ": the job was deleted"));
    sse_free(&s);
    fx_close(&f);
}

/* ---------------------------------------------------------------- webhooks */

TEST(webhook_url_policy) {
    char err[512];
    const char *ok[] = {"https://hooks.example.com/gplq", "http://example.com:8080/a?b=c",
                        "HTTPS://Example.COM/x", "https://8.8.8.8/x", "http://[2001:4860::8888]/x"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        CHECK_MSG(webhook_url_check(ok[i], "", err, sizeof err) == 0, "%s: %s", ok[i], err);
    const char *bad[] = {"", "example.com/x", "ftp://example.com/", "file:///etc/passwd",
                         "http://user:pw@example.com/", "http://user@example.com/",
                         "http://127.0.0.1/", "http://127.1.2.3:9/", "http://10.0.0.1/",
                         "http://172.16.0.1/", "http://172.31.255.255/", "http://192.168.1.1/",
                         "http://169.254.169.254/latest", "http://100.64.0.1/", "http://0.0.0.0/",
                         "http://[::1]/", "http://[::]/", "http://[fe80::1]/", "http://[fd00::1]/",
                         "http://[::ffff:127.0.0.1]/", "http://localhost/", "http://a.localhost/",
                         "http://224.0.0.1/", "http://exa mple.com/", "http://example.com/\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(webhook_url_check(bad[i], NULL, err, sizeof err) == -1, "%s accepted", bad[i]);
    CHECK(webhook_url_check("http://172.32.0.1/", "", err, sizeof err) == 0); /* public */
    /* with an allowlist: its hosts, whatever their address, and nothing else */
    const char *allow = " 127.0.0.1 , *.corp.example,[::1],hooks.example.com";
    CHECK(webhook_url_check("http://127.0.0.1:5000/h", allow, err, sizeof err) == 0);
    CHECK(webhook_url_check("http://[::1]:5000/h", allow, err, sizeof err) == 0);
    CHECK(webhook_url_check("https://ci.corp.example/h", allow, err, sizeof err) == 0);
    CHECK(webhook_url_check("https://HOOKS.example.com/h", allow, err, sizeof err) == 0);
    CHECK(webhook_url_check("https://corp.example/h", allow, err, sizeof err) == -1);
    CHECK(webhook_url_check("https://evilcorp.example/h", allow, err, sizeof err) == -1);
    CHECK(webhook_url_check("https://example.com/h", allow, err, sizeof err) == -1);
    CHECK(strstr(err, "allowlist") != NULL);
    CHECK(webhook_url_check("ftp://127.0.0.1/h", allow, err, sizeof err) == -1);
    /* every spelling of a literal the resolver takes is judged as the address it is (fuzzing
     * found 127.1, 0 and octal ones passing), and a trailing dot changes no name */
    static const char *const spelled[] = {"http://127.1/h", "http://127%2e1/h", "http://0/h",
                                          "http://%30/h", "http://02%30706433/h",
                                          "http://017700000001/h", "http://0x7f.1/h",
                                          "http://api.localhost./h", "http://localhost./h"};
    for (size_t i = 0; i < sizeof spelled / sizeof *spelled; i++)
        CHECK_MSG(webhook_url_check(spelled[i], NULL, err, sizeof err) == -1, "%s", spelled[i]);
    CHECK(webhook_url_check("http://93.184.216.34/h", NULL, err, sizeof err) == 0);

    struct sockaddr_in a4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "93.184.216.34", &a4.sin_addr);
    CHECK(!webhook_addr_private((struct sockaddr *)&a4));
    inet_pton(AF_INET, "169.254.169.254", &a4.sin_addr);
    CHECK(webhook_addr_private((struct sockaddr *)&a4));
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.1.1", &a6.sin6_addr);
    CHECK(webhook_addr_private((struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2606:4700::1111", &a6.sin6_addr);
    CHECK(!webhook_addr_private((struct sockaddr *)&a6));
    /* the IPv6 forms that reach IPv4 are judged by the IPv4 they reach; the others by range */
    static const struct { const char *addr; int private; } v6[] = {
        {"::127.0.0.1", 1}, {"::10.0.0.1", 1}, {"::", 1}, {"::1", 1}, {"::93.184.216.34", 0},
        {"::ffff:0:169.254.169.254", 1}, {"::ffff:0:93.184.216.34", 0},
        {"64:ff9b::10.0.0.1", 1}, {"64:ff9b::127.0.0.1", 1}, {"64:ff9b::93.184.216.34", 0},
        {"64:ff9b:1::93.184.216.34", 1}, {"2002:7f00:1::", 1}, {"2002:a9fe:a9fe::1", 1},
        {"2002:5db8:d822::1", 0}, {"fec0::1", 1}, {"2001:0:4136:e378::1", 1}, {"100::1", 1},
        {"fc00::1", 1}, {"fe80::1", 1}, {"ff02::1", 1}, {"2001:db9::1", 0}, {"2001:1::1", 0},
    };
    for (size_t i = 0; i < sizeof v6 / sizeof *v6; i++) {
        CHECK(inet_pton(AF_INET6, v6[i].addr, &a6.sin6_addr) == 1);
        CHECK_MSG(webhook_addr_private((struct sockaddr *)&a6) == v6[i].private, "%s", v6[i].addr);
    }
}

TEST(webhook_signature_and_backoff) {
    /* the receiver's computation: HMAC-SHA256(secret, "<t>.<body>") in hex */
    const char *body = "{\"id\":\"evt_1\",\"type\":\"job.succeeded\"}";
    char sig[160], msg[256];
    webhook_sign("whsec_0123456789abcdef", 1700000000, body, strlen(body), sig, sizeof sig);
    snprintf(msg, sizeof msg, "1700000000.%s", body);
    uint8_t mac[32];
    char hex[65], want[160];
    sha256_hmac("whsec_0123456789abcdef", 22, msg, strlen(msg), mac);
    sha256_hex(mac, hex);
    snprintf(want, sizeof want, "t=1700000000,v1=%s", hex);
    CHECK_MSG(!strcmp(sig, want), "%s", sig);
    webhook_sign("another secret, as long", 1700000000, body, strlen(body), msg, sizeof msg);
    CHECK(strcmp(sig, msg) != 0);
    /* doubling from the base, jitter within [0.5, 1.5), capped at an hour */
    CHECK(webhook_backoff_ms(1000, 1, 0.5) == 1000);
    CHECK(webhook_backoff_ms(1000, 3, 0.5) == 4000);
    CHECK(webhook_backoff_ms(1000, 3, 0.0) == 2000 && webhook_backoff_ms(1000, 3, 0.999) < 6000);
    CHECK(webhook_backoff_ms(1000, 40, 0.5) == 3600000);
}

/* GET /v1/jobs/{id} writes the job as text from its row, splicing the stored JSON columns
 * (util/jtext.h): at every point of a job's life the bytes are those that dumping
 * store_job_get's tree would send, reals at the API's precision, escapes and all; GET /v1/jobs
 * those of store_job_list's page. */
TEST(job_get_text_is_the_dumped_tree) {
    fixture f;
    fx_open(&f);
    f.ctx.webhook_allow_hosts = "hooks.test";
    char m[64], j[64], path[160];
    make_model(&f, "text", m);
    make_job(&f, m, "\"lr\":0.6,\"webhook\":{\"url\":\"http://hooks.test/in\",\"secret\":"
                    "\"whsec_test_0123456789\",\"progress_every_s\":2.5}", j);
    snprintf(path, sizeof path, "/v1/jobs/%s", j);
    for (int phase = 0; phase < 4; phase++) {
        if (phase == 1) {
            store_claim c;
            CHECK(store_job_claim(f.st, "w1:1", 60000, &c) == STORE_OK);
            store_claim_free(&c);
        } else if (phase == 2) {
            json_t *pr = json_pack("{s:s, s:f, s:f, s:f, s:[f, i]}", "stage", "stage1", "loss", 0.6,
                                   "lr", 1e-5, "third", 1.0 / 3, "curve", 96.41, 7);
            CHECK(store_job_progress(f.st, j, "w1:1", 60000, "stage1", pr, 1) == STORE_OK);
            json_decref(pr);
            json_t *me = json_pack("{s:f, s:{s:f, s:s}}", "top1", 0.8963, "timings_s", "stage1",
                                   655.3, "note", "a \"quoted\"\nline, caf\xc3\xa9, 1.5e3");
            CHECK(store_job_metrics(f.st, j, "w1:1", me) == STORE_OK);
            json_decref(me);
        } else if (phase == 3) {
            CHECK(store_job_finish(f.st, j, "w1:1", "failed", "it \"failed\"\tat 0.6\x01") ==
                  STORE_OK);
        }
        json_t *tree = NULL;
        CHECK(store_job_get(f.st, NULL, j, &tree) == STORE_OK);
        char *want = json_dumps(tree, JSON_COMPACT | JSON_REAL_PRECISION(API_REAL_PRECISION));
        json_decref(tree);
        api_response res;
        CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200 && res.text);
        CHECK_MSG(want && res.text && res.text_len == strlen(want) + 1 &&
                      !strncmp(res.text, want, strlen(want)) && res.text[res.text_len - 1] == '\n',
                  "phase %d\n got %.*s\nwant %s", phase, (int)res.text_len, res.text, want);
        if (phase == 3)
            CHECK(strstr(want, "\"lr\":0.6,") && strstr(want, "\"progress_every_s\":2.5") &&
                  strstr(want, "\"top1\":0.8963") && strstr(want, "\\u0001"));
        free(want);
        api_response_free(&res);
    }
    /* GET /v1/jobs, written the same way: a page with a cursor, then the last page */
    char j2[64];
    make_job(&f, m, "\"weight_decay\":0.1", j2);
    const char *pages[] = {"/v1/jobs?limit=1", "/v1/jobs?limit=5"};
    for (int i = 0; i < 2; i++) {
        json_t *arr = NULL;
        char *next = NULL;
        CHECK(store_job_list(f.st, NULL, NULL, i ? 5 : 1, NULL, &arr, &next) == STORE_OK);
        CHECK((next != NULL) == (i == 0) && json_array_size(arr) == (i ? 2u : 1u));
        json_t *page = json_pack("{s:o, s:s?}", "jobs", arr, "next_cursor", next);
        char *want = json_dumps(page, JSON_COMPACT | JSON_REAL_PRECISION(API_REAL_PRECISION));
        json_decref(page);
        free(next);
        api_response res;
        CHECK(call(&f, &res, "GET", pages[i], NULL, NULL, NULL) == 200 && res.text);
        CHECK_MSG(want && res.text && res.text_len == strlen(want) + 1 &&
                      !strncmp(res.text, want, strlen(want)),
                  "%s\n got %.*s\nwant %s", pages[i], (int)res.text_len, res.text, want);
        free(want);
        api_response_free(&res);
    }
    fx_close(&f);
}

TEST(job_webhook_stored_apart_and_listed) {
    fixture f;
    fx_open(&f);
    f.ctx.webhook_allow_hosts = "hooks.test";
    char m[64], j[64], path[160];
    make_model(&f, "wh", m);
    const char *secret = "whsec_test_0123456789";
    char extra[256];
    snprintf(extra, sizeof extra,
             "\"webhook\":{\"url\":\"http://hooks.test/in\",\"secret\":\"%s\",\"progress_every_s\":2}",
             secret);
    make_job(&f, m, extra, j);
    api_response res;
    snprintf(path, sizeof path, "/v1/jobs/%s", j);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    json_t *hook = json_object_get(res.body, "webhook");
    CHECK(!strcmp(str(hook, "url"), "http://hooks.test/in"));
    CHECK(json_number_value(json_object_get(hook, "progress_every_s")) == 2.0);
    CHECK(!json_object_get(json_object_get(res.body, "spec"), "webhook"));
    char *dump = json_dumps(res.body, 0);
    CHECK(dump && !strstr(dump, secret));
    free(dump);
    api_response_free(&res);
    /* a host off the allowlist */
    snprintf(extra, sizeof extra,
             "{\"model_id\":\"%s\",\"dataset_id\":\"fashion-mnist\",\"webhook\":{\"url\":"
             "\"https://example.com/\",\"secret\":\"%s\"}}", m, secret);
    CHECK(call(&f, &res, "POST", "/v1/jobs", extra, NULL, NULL) == 400);
    CHECK(!strcmp(err_field(&res), "webhook.url"));
    api_response_free(&res);

    /* the worker's side: started, progress (at most every 2 s), succeeded in the outbox */
    store_claim claimed;
    CHECK(store_job_claim(f.st, "w1:1", 60000, &claimed) == STORE_OK);
    store_claim_free(&claimed);
    json_t *prog = json_pack("{s:s, s:i}", "stage", "stage1", "step", 1);
    for (int i = 0; i < 3; i++)
        CHECK(store_job_progress(f.st, j, "w1:1", 60000, "stage1", prog, 1) == STORE_OK);
    json_decref(prog);
    CHECK(store_job_finish(f.st, j, "w1:1", "succeeded", NULL) == STORE_OK);
    snprintf(path, sizeof path, "/v1/jobs/%s/webhooks", j);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    json_t *dl = json_object_get(res.body, "deliveries");
    CHECK_MSG(json_array_size(dl) == 3, "%zu deliveries", json_array_size(dl));
    const char *types[] = {"job.started", "job.progress", "job.succeeded"};
    for (size_t i = 0; i < 3 && i < json_array_size(dl); i++) {
        json_t *d = json_array_get(dl, i);
        CHECK_MSG(!strcmp(str(d, "type"), types[i]), "%zu: %s", i, str(d, "type"));
        CHECK(!strcmp(str(d, "status"), "pending") && json_array_size(json_object_get(d, "attempts")) == 0);
        CHECK(!strncmp(str(d, "id"), "evt_", 4));
    }
    CHECK(!strcmp(str(json_object_get(res.body, "webhook"), "url"), "http://hooks.test/in"));
    api_response_free(&res);

    /* what the delivery thread sees, and what an attempt leaves */
    json_t *due = NULL;
    CHECK(store_webhook_due(f.st, store_now_ms(), 60000, 10, &due) == STORE_OK);
    CHECK(json_array_size(due) == 1); /* one job's events go in order: the first one alone */
    json_t *first = json_array_get(due, 0);
    CHECK(!strcmp(str(first, "secret"), secret) && !strcmp(str(first, "url"), "http://hooks.test/in"));
    json_t *payload = json_loads(str(first, "payload"), 0, NULL);
    CHECK(!strcmp(str(payload, "type"), "job.started"));
    CHECK(!strcmp(str(json_object_get(payload, "job"), "state"), "running"));
    CHECK(json_integer_value(json_object_get(payload, "created")) > 1600000000);
    json_decref(payload);
    json_int_t ob = json_integer_value(json_object_get(first, "outbox_id"));
    json_t *again = NULL;
    CHECK(store_webhook_due(f.st, store_now_ms(), 60000, 10, &again) == STORE_OK);
    CHECK(json_array_size(again) == 0); /* leased */
    json_decref(again);
    CHECK(store_webhook_record(f.st, ob, 1, store_now_ms(), 503, 12, "HTTP 503", "retry",
                               store_now_ms() - 1) == STORE_OK);
    CHECK(store_webhook_due(f.st, store_now_ms(), 60000, 10, &again) == STORE_OK);
    CHECK(json_array_size(again) == 1 &&
          json_integer_value(json_object_get(json_array_get(again, 0), "attempts")) == 1);
    json_decref(again);
    CHECK(store_webhook_record(f.st, ob, 2, store_now_ms(), 204, 5, NULL, "delivered", 0) == STORE_OK);
    json_decref(due);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    json_t *d0 = json_array_get(json_object_get(res.body, "deliveries"), 0);
    CHECK(!strcmp(str(d0, "status"), "delivered") && json_is_null(json_object_get(d0, "next_attempt_at")));
    json_t *att = json_object_get(d0, "attempts");
    CHECK(json_array_size(att) == 2);
    CHECK(json_integer_value(json_object_get(json_array_get(att, 0), "status_code")) == 503);
    CHECK(!strcmp(str(json_array_get(att, 0), "error"), "HTTP 503"));
    CHECK(json_integer_value(json_object_get(json_array_get(att, 1), "status_code")) == 204);
    CHECK(json_is_null(json_object_get(json_array_get(att, 1), "error")));
    api_response_free(&res);
    json_t *counts = NULL;
    CHECK(store_webhook_counts(f.st, &counts) == STORE_OK);
    CHECK(json_integer_value(json_object_get(counts, "delivered")) == 1 &&
          json_integer_value(json_object_get(counts, "pending")) == 2);
    json_decref(counts);
    f.ctx.owner = "not-the-owner";
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    f.ctx.owner = "";
    /* a job without a webhook: no outbox rows, webhook null */
    char j2[64];
    make_job(&f, m, NULL, j2);
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j2);
    CHECK(call(&f, &res, "POST", path, NULL, NULL, NULL) == 200);
    CHECK(json_is_null(json_object_get(res.body, "webhook")));
    api_response_free(&res);
    snprintf(path, sizeof path, "/v1/jobs/%s/webhooks", j2);
    CHECK(call(&f, &res, "GET", path, NULL, NULL, NULL) == 200);
    CHECK(json_array_size(json_object_get(res.body, "deliveries")) == 0);
    api_response_free(&res);
    /* deleting the job takes its webhook, secret and deliveries along */
    snprintf(path, sizeof path, "/v1/jobs/%s", j);
    CHECK(call(&f, &res, "DELETE", path, NULL, NULL, NULL) == 204);
    api_response_free(&res);
    CHECK(store_webhook_counts(f.st, &counts) == STORE_OK);
    CHECK(json_integer_value(json_object_get(counts, "pending")) == 0);
    json_decref(counts);
    fx_close(&f);
}

/* ---------------------------------------------------------------- OpenAPI */

/* The object a "#/components/..." reference points at, or NULL. */
static json_t *resolve_ref(json_t *doc, const char *ref) {
    if (strncmp(ref, "#/", 2)) return NULL;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", ref + 2);
    json_t *v = doc;
    for (char *save, *tok = strtok_r(buf, "/", &save); tok && v; tok = strtok_r(NULL, "/", &save))
        v = json_object_get(v, tok);
    return v;
}

/* Every $ref in v resolves; the bad ones are reported. */
static void check_refs(json_t *doc, json_t *v) {
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!strcmp(k, "$ref")) CHECK_MSG(resolve_ref(doc, json_string_value(x)), "dangling $ref %s", json_string_value(x));
            else check_refs(doc, x);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) check_refs(doc, x);
    }
}

/* 1 if params (an array, $refs allowed) declares path parameter name. */
static int declares(json_t *doc, json_t *params, const char *name) {
    size_t i;
    json_t *p;
    json_array_foreach(params, i, p) {
        json_t *ref = json_object_get(p, "$ref");
        json_t *q = ref ? resolve_ref(doc, json_string_value(ref)) : p;
        if (!strcmp(str(q, "in"), "path") && !strcmp(str(q, "name"), name) &&
            json_is_true(json_object_get(q, "required")))
            return 1;
    }
    return 0;
}

TEST(openapi_describes_every_route_and_only_routes) {
    json_error_t je;
    json_t *doc = json_loadb(openapi_json(), openapi_json_len(), 0, &je);
    CHECK_MSG(doc, "api/openapi.json is not JSON: %s (line %d)", je.text, je.line);
    if (!doc) return;
    CHECK(!strcmp(str(doc, "openapi"), "3.1.0"));
    CHECK(json_object_get(json_object_get(json_object_get(doc, "components"), "securitySchemes"), "bearerAuth"));
    json_t *paths = json_object_get(doc, "paths");
    /* each route the router knows is described, as the route it is; the dashboard's routes
     * (API_WEB) are not the REST API and are left out of the document */
    int nrest = 0;
    for (int i = 0; i < api_nroutes; i++) {
        const api_route *r = &api_routes[i];
        if (r->flags & API_WEB) continue;
        nrest++;
        char m[8];
        size_t k = 0;
        for (; r->method[k] && k < sizeof m - 1; k++) m[k] = (char)(r->method[k] | 0x20);
        m[k] = '\0';
        json_t *item = json_object_get(paths, r->pattern);
        json_t *op = json_object_get(item, m);
        CHECK_MSG(op, "%s %s (%s) is not in api/openapi.json", r->method, r->pattern, r->name);
        if (!op) continue;
        CHECK_MSG(!strcmp(str(op, "operationId"), r->name), "%s %s: operationId %s, route %s",
                  r->method, r->pattern, str(op, "operationId"), r->name);
        json_t *responses = json_object_get(op, "responses");
        int success = 0;
        const char *code;
        json_t *x;
        json_object_foreach(responses, code, x) success |= code[0] == '2';
        CHECK_MSG(success, "%s: no 2xx response", r->name);
        json_t *sec = json_object_get(op, "security");
        if (r->flags & API_PUBLIC) {
            CHECK_MSG(json_is_array(sec) && json_array_size(sec) == 0, "%s is public: security []", r->name);
        } else if (r->flags & API_LINK) {
            /* a token or a download link */
            CHECK_MSG(json_array_size(sec) == 2 &&
                          json_object_get(json_array_get(sec, 0), "bearerAuth") &&
                          json_object_get(json_array_get(sec, 1), "downloadLink"),
                      "%s takes a link: security [bearerAuth, downloadLink]", r->name);
            CHECK_MSG(json_object_get(responses, "401"), "%s: no 401 response", r->name);
        } else {
            CHECK_MSG(!sec, "%s: the document's bearer security applies", r->name);
            CHECK_MSG(json_object_get(responses, "401"), "%s: no 401 response", r->name);
        }
        /* every {name} of the pattern is a declared path parameter */
        for (const char *b = strchr(r->pattern, '{'); b; b = strchr(b + 1, '{')) {
            char name[64];
            const char *e = strchr(b, '}');
            snprintf(name, sizeof name, "%.*s", (int)(e - b - 1), b + 1);
            CHECK_MSG(declares(doc, json_object_get(op, "parameters"), name) ||
                          declares(doc, json_object_get(item, "parameters"), name),
                      "%s: path parameter %s is not declared", r->name, name);
        }
    }
    /* and each described operation is a route */
    static const char *const verbs[] = {"get", "put", "post", "delete", "options", "head", "patch", "trace"};
    const char *path;
    json_t *item;
    int described = 0;
    json_object_foreach(paths, path, item) {
        for (size_t v = 0; v < sizeof verbs / sizeof *verbs; v++) {
            if (!json_object_get(item, verbs[v])) continue;
            described++;
            int found = 0;
            for (int i = 0; i < api_nroutes; i++)
                found |= !(api_routes[i].flags & API_WEB) &&
                         !strcasecmp(api_routes[i].method, verbs[v]) && !strcmp(api_routes[i].pattern, path);
            CHECK_MSG(found, "api/openapi.json describes %s %s, which no route serves", verbs[v], path);
        }
    }
    CHECK_MSG(described == nrest, "%d operations described, %d REST routes", described, nrest);
    check_refs(doc, doc);
    /* the embedded copy is the file in the tree */
    char file[1024];
    snprintf(file, sizeof file, "%s/api/openapi.json", GPLQ_SRC_DIR);
    FILE *fp = fopen(file, "rb");
    CHECK_MSG(fp, "cannot read %s", file);
    if (fp) {
        size_t len;
        const char *src = openapi_source(&len);
        char *disk = malloc(len + 2);
        size_t n = fread(disk, 1, len + 1, fp);
        fclose(fp);
        CHECK_MSG(n == len && !memcmp(disk, src, n),
                  "%s changed since api/openapi.c was compiled: rebuild it (touch api/openapi.c)", file);
        free(disk);
    }
    /* the job options are the option table's, in both schemas, "auto" included */
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    const char *with_options[] = {"JobCreate", "JobSpec"};
    for (int i = 0; i < 2; i++) {
        json_t *props = json_object_get(json_object_get(schemas, with_options[i]), "properties");
        json_t *wbits = json_object_get(props, "wbits"), *lr = json_object_get(props, "lr");
        CHECK_MSG(json_integer_value(json_object_get(wbits, "default")) == 4 &&
                  json_number_value(json_object_get(wbits, "maximum")) == 8, "%s", with_options[i]);
        CHECK(!strcmp(str(lr, "default"), "auto") && json_array_size(json_object_get(lr, "oneOf")) == 2);
        CHECK(json_object_get(props, "model_id") && json_object_get(props, "num_heads"));
        CHECK(json_object_size(props) >= 4 + JOBSPEC_NOPTS - (i ? 2 : 0));
    }
    json_decref(doc);
    /* served as is, without a token */
    fixture f;
    fx_open(&f);
    f.ctx.auth = 1;
    api_response res;
    CHECK(call(&f, &res, "GET", "/v1/openapi.json", NULL, NULL, NULL) == 200);
    CHECK(res.text && res.text_len == openapi_json_len() && !strcmp(res.content_type, "application/json"));
    api_response_free(&res);
    fx_close(&f);
}

TEST(metrics_text) {
    fixture f;
    fx_open(&f);
    char m[64], j[64];
    make_model(&f, "metrics", m);
    make_job(&f, m, NULL, j);
    store_claim claimed;
    CHECK(store_job_claim(f.st, "w1:1", 60000, &claimed) == STORE_OK);
    store_claim_free(&claimed);
    json_t *prog = json_pack("{s:s}", "stage", "stage1");
    CHECK(store_job_progress(f.st, j, "w1:1", 60000, "stage1", prog, 1) == STORE_OK);
    json_decref(prog);
    prog = json_pack("{s:s}", "stage", "stage2");
    CHECK(store_job_progress(f.st, j, "w1:1", 60000, "stage2", prog, 1) == STORE_OK);
    json_decref(prog);
    CHECK(store_job_finish(f.st, j, "w1:1", "succeeded", NULL) == STORE_OK);
    make_job(&f, m, NULL, j);
    int route = -1;
    for (int i = 0; i < api_nroutes; i++)
        if (!strcmp(api_routes[i].name, "jobs.get")) route = i;
    metrics_http(route, 200);
    metrics_http(route, 200);
    metrics_http(route, 404);
    metrics_http(-1, 404);
    metrics_http(route, 418);
    metrics_upload_bytes(1, 1000);
    metrics_webhook("retry");
    f.ctx.auth = 1; /* public: no token needed */
    api_response res;
    CHECK(call(&f, &res, "GET", "/metrics", NULL, NULL, NULL) == 200);
    CHECK(res.text && !strncmp(res.content_type, "text/plain; version=0.0.4", 25));
    const char *want[] = {"# TYPE gplq_jobs gauge\n", "gplq_jobs{state=\"queued\"} 1\n",
                          "gplq_jobs{state=\"succeeded\"} 1\n", "gplq_queue_depth 1\n",
                          "# TYPE gplq_job_duration_seconds histogram\n",
                          "gplq_job_duration_seconds_bucket{state=\"succeeded\",le=\"10\"} 1\n",
                          "gplq_job_duration_seconds_bucket{state=\"succeeded\",le=\"+Inf\"} 1\n",
                          "gplq_job_duration_seconds_count{state=\"succeeded\"} 1\n",
                          "gplq_stage_duration_seconds_count{stage=\"stage1\"} 1\n",
                          "gplq_stage_duration_seconds_count{stage=\"stage2\"} 1\n",
                          "gplq_workers 2\n", "gplq_workers_alive 1\n",
                          "gplq_http_requests_total{route=\"jobs.get\",code=\"200\"} 2\n",
                          "gplq_http_requests_total{route=\"jobs.get\",code=\"404\"} 1\n",
                          "gplq_http_requests_total{route=\"jobs.get\",code=\"other\"} 1\n",
                          "gplq_http_requests_total{route=\"none\",code=\"404\"} 1\n",
                          "gplq_upload_bytes_total{kind=\"model\"} 1000\n",
                          "gplq_webhook_deliveries_total{outcome=\"retry\"} 1\n",
                          "gplq_webhook_outbox{status=\"pending\"} 0\n",
                          "gplq_metrics_db_up 1\n"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECK_MSG(res.text && strstr(res.text, want[i]), "missing: %s\n%s", want[i], res.text);
    /* every sample line is NAME{labels} VALUE or NAME VALUE, every series has a TYPE */
    char *copy = res.text ? strdup(res.text) : NULL;
    for (char *save, *line = copy ? strtok_r(copy, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char *sp = strrchr(line, ' ');
        CHECK_MSG(sp && sp[1], "bad line: %s", line);
        char *end;
        strtod(sp + 1, &end);
        CHECK_MSG(!*end, "bad value: %s", line);
        CHECK_MSG(!strncmp(line, "gplq_", 5), "bad name: %s", line);
    }
    free(copy);
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- the dashboard */

/* web/NAME as it is on disk now, in a new buffer (free()), its size in *n; NULL if unreadable. */
static char *read_src(const char *name, size_t *n) {
    char file[1024];
    snprintf(file, sizeof file, "%s/web/%s", GPLQ_SRC_DIR, name);
    FILE *fp = fopen(file, "rb");
    if (!fp) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, fp)) > 0;) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(fp);
    *n = len;
    return buf;
}

TEST(web_dashboard_served_without_a_token) {
    fixture f;
    fx_open(&f);
    f.ctx.auth = 1; /* the page and its files need no token; the API still does */
    api_response res;
    /* GET /: the page, its bytes as in the tree, with the headers that keep other origins out */
    CHECK(call(&f, &res, "GET", "/", NULL, NULL, NULL) == 200);
    CHECK(res.content_type && !strcmp(res.content_type, "text/html; charset=utf-8"));
    CHECK(!res.body && !res.text && res.static_body);
    size_t n = 0;
    char *disk = read_src("index.html", &n);
    CHECK_MSG(disk, "cannot read web/index.html");
    CHECK_MSG(disk && n == res.static_len && !memcmp(disk, res.static_body, n),
              "web/index.html changed since api/web.c was compiled: rebuild (make)");
    free(disk);
    const char *csp = header(&res, "Content-Security-Policy");
    CHECK(csp && strstr(csp, "default-src 'self'") && strstr(csp, "script-src 'self'") &&
          strstr(csp, "frame-ancestors 'none'") && !strstr(csp, "unsafe"));
    CHECK(header(&res, "X-Content-Type-Options") && !strcmp(header(&res, "X-Content-Type-Options"), "nosniff"));
    CHECK(header(&res, "Referrer-Policy") && !strcmp(header(&res, "Referrer-Policy"), "no-referrer"));
    CHECK(header(&res, "Cache-Control") && !strcmp(header(&res, "Cache-Control"), "no-cache"));
    char etag[80];
    snprintf(etag, sizeof etag, "%s", header(&res, "ETag") ? header(&res, "ETag") : "");
    CHECK(strlen(etag) == 66 && etag[0] == '"' && etag[65] == '"');
    api_response_free(&res);
    /* the ETag is the content's SHA-256 */
    const web_file *wf = web_find("index.html");
    uint8_t d[32];
    char hex[65];
    sha256(wf->start, web_size(wf), d);
    sha256_hex(d, hex);
    CHECK(!strncmp(etag + 1, hex, 64) && !strcmp(wf->etag, etag));
    /* HEAD answers as GET (the glue drops the body) */
    CHECK(call(&f, &res, "HEAD", "/", NULL, NULL, NULL) == 200);
    api_response_free(&res);
    /* revalidation: a matching If-None-Match is a 304 without a body, same ETag */
    CHECK(call(&f, &res, "GET", "/", NULL, NULL, "If-None-Match", etag, NULL) == 304);
    CHECK(!res.body && !res.text && !res.static_body && res.fd < 0);
    CHECK(header(&res, "ETag") && !strcmp(header(&res, "ETag"), etag));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/", NULL, NULL, "If-None-Match", "\"stale\"", NULL) == 200);
    api_response_free(&res);
    /* the assets, each with its own type and tag; the CSP goes on the page only */
    const char *names[] = {"app.js", "charts.js", "style.css"};
    const char *types[] = {"text/javascript; charset=utf-8", "text/javascript; charset=utf-8",
                           "text/css; charset=utf-8"};
    for (int i = 0; i < 3; i++) {
        char url[64];
        snprintf(url, sizeof url, "/web/%s", names[i]);
        CHECK_MSG(call(&f, &res, "GET", url, NULL, NULL, NULL) == 200, "%s", url);
        CHECK_MSG(res.content_type && !strcmp(res.content_type, types[i]), "%s: %s", url, res.content_type);
        CHECK(header(&res, "ETag") && header(&res, "X-Content-Type-Options"));
        CHECK(!header(&res, "Content-Security-Policy"));
        disk = read_src(names[i], &n);
        CHECK_MSG(disk && n == res.static_len && !memcmp(disk, res.static_body, n),
                  "web/%s changed since api/web.c was compiled: rebuild (make)", names[i]);
        free(disk);
        char tag[80];
        snprintf(tag, sizeof tag, "%s", header(&res, "ETag") ? header(&res, "ETag") : "");
        api_response_free(&res);
        CHECK(call(&f, &res, "GET", url, NULL, NULL, "If-None-Match", tag, NULL) == 304);
        api_response_free(&res);
    }
    /* an unknown name is a JSON 404 like any other; names are looked up, never opened */
    const char *missing[] = {"/web/nope", "/web/..", "/web/index.htm", "/web/%2e%2e%2fapi.c"};
    for (int i = 0; i < 4; i++) {
        CHECK_MSG(call(&f, &res, "GET", missing[i], NULL, NULL, NULL) == 404, "%s", missing[i]);
        CHECK(!strcmp(err_code(&res), "not_found") && !strcmp(res.content_type, "application/json"));
        api_response_free(&res);
    }
    CHECK(call(&f, &res, "GET", "/web/", NULL, NULL, NULL) == 404);
    api_response_free(&res);
    CHECK(call(&f, &res, "POST", "/", "{}", NULL, NULL) == 405);
    CHECK(header(&res, "Allow") && !strcmp(header(&res, "Allow"), "GET, HEAD"));
    api_response_free(&res);
    /* while the API itself still wants a token */
    CHECK(call(&f, &res, "GET", "/v1/jobs", NULL, NULL, NULL) == 401);
    api_response_free(&res);
    CHECK(web_find("nope") == NULL && web_find(NULL) == NULL);
    fx_close(&f);
}

/* ---------------------------------------------------------------- artifacts */

TEST(artifact_download_etag_and_ranges) {
    fixture f;
    fx_open(&f);
    char m[64], j[64];
    make_model(&f, "art", m);
    make_job(&f, m, NULL, j);
    /* a worker's side: claim, write a file, record it */
    store_claim claimed;
    CHECK(store_job_claim(f.st, "w1", 60000, &claimed) == STORE_OK);
    store_claim_free(&claimed);
    char dir[600], file[700], cmd[700];
    snprintf(dir, sizeof dir, "%s/jobs/%s/artifacts", f.dir, j);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    snprintf(file, sizeof file, "%s/model.q", dir);
    unsigned char data[1000];
    for (int i = 0; i < 1000; i++) data[i] = (unsigned char)(i * 7);
    FILE *o = fopen(file, "wb");
    fwrite(data, 1, sizeof data, o);
    fclose(o);
    uint8_t d[32];
    char hex[65], etag[80];
    sha256(data, sizeof data, d);
    sha256_hex(d, hex);
    snprintf(etag, sizeof etag, "\"%s\"", hex);
    CHECK(store_artifact_add(f.st, j, "model.q", 1000, hex) == STORE_OK);

    api_response res;
    char url[256];
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts", j);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 200);
    json_t *arts = json_object_get(res.body, "artifacts");
    CHECK(json_array_size(arts) == 1 && !strcmp(str(json_array_get(arts, 0), "sha256"), hex));
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", "/v1/jobs/j_nope/artifacts", NULL, NULL, NULL) == 404);
    api_response_free(&res);

    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/model.q", j);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 200);
    CHECK(res.fd >= 0 && res.offset == 0 && res.length == 1000 && res.body == NULL);
    CHECK(header(&res, "ETag") && !strcmp(header(&res, "ETag"), etag));
    CHECK(header(&res, "Accept-Ranges") != NULL);
    unsigned char back[1000];
    CHECK(pread(res.fd, back, sizeof back, 0) == 1000 && !memcmp(back, data, 1000));
    api_response_free(&res);

    struct {
        const char *range;
        int status;
        long long off, len;
        const char *content_range;
    } cases[] = {
        {"bytes=0-99", 206, 0, 100, "bytes 0-99/1000"},
        {"bytes=900-", 206, 900, 100, "bytes 900-999/1000"},
        {"bytes=-100", 206, 900, 100, "bytes 900-999/1000"},
        {"bytes=990-5000", 206, 990, 10, "bytes 990-999/1000"},
        {"bytes=1000-", 416, 0, 0, "bytes */1000"},
        {"bytes=-0", 416, 0, 0, "bytes */1000"},
        {"bytes=0-1,5-9", 200, 0, 1000, NULL},  /* several ranges: the whole file */
        {"items=0-1", 200, 0, 1000, NULL},       /* another unit: ignored */
        {"bytes=9-2", 200, 0, 1000, NULL},       /* malformed: ignored */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK_MSG(call(&f, &res, "GET", url, NULL, NULL, "Range", cases[i].range, NULL) == cases[i].status,
                  "%s: %d", cases[i].range, res.status);
        if (cases[i].status != 416)
            CHECK_MSG(res.offset == cases[i].off && res.length == cases[i].len, "%s: %lld+%lld",
                      cases[i].range, (long long)res.offset, (long long)res.length);
        else
            CHECK(res.fd < 0 && !strcmp(err_code(&res), "range_not_satisfiable"));
        const char *cr = header(&res, "Content-Range");
        if (cases[i].content_range) CHECK_MSG(cr && !strcmp(cr, cases[i].content_range), "%s: %s", cases[i].range, cr);
        else CHECK(cr == NULL);
        api_response_free(&res);
    }
    /* conditional requests */
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "If-None-Match", etag, NULL) == 304);
    CHECK(res.fd < 0 && res.body == NULL && header(&res, "ETag"));
    api_response_free(&res);
    char list[200];
    snprintf(list, sizeof list, "\"other\", W/%s", etag);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "If-None-Match", list, NULL) == 304);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "If-None-Match", "\"other\"", NULL) == 200);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "Range", "bytes=0-9", "If-Range", etag, NULL) == 206);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, "Range", "bytes=0-9", "If-Range", "\"old\"", NULL) == 200);
    CHECK(res.length == 1000);
    api_response_free(&res);

    /* names that are not artifacts, and never reach the file system */
    const char *bad[] = {"model.x", "..", ".hidden", "a%2Fb", "a b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/%s", j, bad[i]);
        CHECK_MSG(call(&f, &res, "GET", url, NULL, NULL, NULL) == 404, "%s: %d", bad[i], res.status);
        api_response_free(&res);
    }
    CHECK(call(&f, &res, "GET", "/v1/jobs/j_nope/artifacts/model.q", NULL, NULL, NULL) == 404);
    CHECK(strstr(err_message(&res), "j_nope"));
    api_response_free(&res);
    /* recorded, but the file is gone: 404 that says so, not a crash */
    unlink(file);
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/model.q", j);
    CHECK(call(&f, &res, "GET", url, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    fx_close(&f);
}

TEST(download_links) {
    /* the signature is HMAC-SHA256(key, "PATH\nEXPIRES") (test_sha256 holds sha256_hmac to RFC 4231) */
    unsigned char key[AUTH_LINK_KEY_LEN], other[AUTH_LINK_KEY_LEN];
    CHECK(auth_link_key_new(key) == 0 && auth_link_key_new(other) == 0 && memcmp(key, other, sizeof key));
    char sig[65], hex[65];
    auth_link_sign(key, "/v1/jobs/j_1/artifacts/a", 1700000000, sig);
    uint8_t d[32];
    const char *msg = "/v1/jobs/j_1/artifacts/a\n1700000000";
    sha256_hmac(key, sizeof key, msg, strlen(msg), d);
    sha256_hex(d, hex);
    CHECK(!strcmp(sig, hex));
    const char *why;
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "1700000000", sig, 1700000000, &why) == 0 && !why);
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "1700000000", sig, 1700000001, &why) == -1 &&
          strstr(why, "expired"));
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/b", "1700000000", sig, 0, &why) == -1 &&
          strstr(why, "signature"));
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "1700000001", sig, 0, &why) == -1);
    CHECK(auth_link_check(other, "/v1/jobs/j_1/artifacts/a", "1700000000", sig, 0, &why) == -1);
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "17e8", sig, 0, &why) == -1);
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", NULL, sig, 0, &why) == -1);
    sig[63] = sig[63] == '0' ? '1' : '0';
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "1700000000", sig, 0, &why) == -1);
    /* a prefix of the right signature is not it */
    auth_link_sign(key, "/v1/jobs/j_1/artifacts/a", 1700000000, hex);
    hex[63] = '\0';
    CHECK(auth_link_check(key, "/v1/jobs/j_1/artifacts/a", "1700000000", hex, 0, &why) == -1);

    /* through the API: made with a token, used without one, for that artifact only */
    fixture f;
    fx_open(&f);
    char m[64], j[64], tok[AUTH_TOKEN_LEN + 1], url[512], bad[600];
    f.ctx.owner = "ci"; /* the owner of the token below */
    make_model(&f, "linked", m);
    make_job(&f, m, NULL, j);
    char dir[600], cmd[1400];
    snprintf(dir, sizeof dir, "%s/jobs/%s/artifacts", f.dir, j);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && echo hello > '%s/report.json'", dir, dir);
    CHECK(system(cmd) == 0);
    CHECK(store_artifact_add(f.st, j, "report.json", 6, "00") == STORE_OK);
    f.ctx.auth = 1;
    f.ctx.link_key = key;
    make_token(&f, "ci", 0, tok);
    api_response res;
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/report.json/link", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 401); /* making one needs a token */
    api_response_free(&res);
    f.token = tok;
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/report.json/link?expire_in=60", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 400); /* a misspelt option is no default */
    api_response_free(&res);
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/report.json/link?expires_in=0", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 400 && !strcmp(err_field(&res), "expires_in"));
    api_response_free(&res);
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/model.q/link", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 404); /* no such artifact */
    api_response_free(&res);
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/report.json/link?expires_in=60", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 200);
    char link[512];
    snprintf(link, sizeof link, "%s", str(res.body, "url"));
    long long now = (long long)time(NULL);
    long long exp = json_integer_value(json_object_get(res.body, "expires_in"));
    CHECK(exp == 60 && strlen(str(res.body, "expires_at")) == 20);
    api_response_free(&res);
    char want[200];
    snprintf(want, sizeof want, "/v1/jobs/%s/artifacts/report.json?expires=", j);
    CHECK_MSG(!strncmp(link, want, strlen(want)), "%s", link);
    long long e = atoll(link + strlen(want));
    CHECK(e >= now + 59 && e <= now + 61);
    f.token = NULL;
    CHECK(call(&f, &res, "GET", link, NULL, NULL, NULL) == 200 && res.fd >= 0 && res.length == 6);
    api_response_free(&res);
    CHECK(call(&f, &res, "GET", link, NULL, NULL, "Range", "bytes=0-1", NULL) == 206 && res.length == 2);
    api_response_free(&res);
    /* the same signature on another path, a changed one, and on a route that takes no links */
    snprintf(bad, sizeof bad, "/v1/jobs/%s/artifacts/model.q%s", j, strchr(link, '?'));
    CHECK(call(&f, &res, "GET", bad, NULL, NULL, NULL) == 401 && strstr(err_message(&res), "signature"));
    api_response_free(&res);
    snprintf(bad, sizeof bad, "%s", link);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    CHECK(call(&f, &res, "GET", bad, NULL, NULL, NULL) == 401 && strstr(err_message(&res), "link"));
    CHECK(strstr(header(&res, "WWW-Authenticate"), "invalid_token"));
    api_response_free(&res);
    snprintf(bad, sizeof bad, "/v1/jobs/%s%s", j, strchr(link, '?'));
    CHECK(call(&f, &res, "GET", bad, NULL, NULL, NULL) == 401);
    CHECK(strstr(err_message(&res), "needs a token")); /* links are not tokens elsewhere */
    api_response_free(&res);
    /* a bad token is not rescued by a good link: the header wins */
    CHECK(call(&f, &res, "GET", link, NULL, NULL, "Authorization", "Bearer nope", NULL) == 401);
    api_response_free(&res);
    /* another owner cannot make one for this job */
    char tok2[AUTH_TOKEN_LEN + 1];
    make_token(&f, "other", 0, tok2);
    f.token = tok2;
    snprintf(url, sizeof url, "/v1/jobs/%s/artifacts/report.json/link", j);
    CHECK(call(&f, &res, "POST", url, NULL, NULL, NULL) == 404);
    api_response_free(&res);
    f.token = NULL;
    /* another key (a restarted gplqd): the link is gone */
    f.ctx.link_key = other;
    CHECK(call(&f, &res, "GET", link, NULL, NULL, NULL) == 401);
    api_response_free(&res);
    fx_close(&f);
}

/* ---------------------------------------------------------------- building blocks */

TEST(range_parse_edges) {
    int64_t off, len;
    CHECK(range_parse(NULL, NULL, "\"e\"", 10, &off, &len) == RANGE_FULL && off == 0 && len == 10);
    CHECK(range_parse("bytes=0-0", NULL, "\"e\"", 10, &off, &len) == RANGE_PARTIAL && len == 1);
    CHECK(range_parse("bytes=-20", NULL, "\"e\"", 10, &off, &len) == RANGE_PARTIAL && off == 0 && len == 10);
    CHECK(range_parse("bytes=0-", NULL, "\"e\"", 0, &off, &len) == RANGE_UNSATISFIABLE);
    CHECK(range_parse("bytes=99999999999999999999-", NULL, "\"e\"", 10, &off, &len) == RANGE_FULL);
    CHECK(range_parse("bytes= 2 - 3 ", NULL, "\"e\"", 10, &off, &len) == RANGE_FULL);
    CHECK(range_parse("bytes=2-3", NULL, "\"e\"", 10, &off, &len) == RANGE_PARTIAL && off == 2 && len == 2);
    CHECK(range_etag_matches("*", "\"e\""));
    CHECK(range_etag_matches("\"a\",\"e\"", "\"e\""));
    CHECK(!range_etag_matches("\"a\"", "\"e\""));
    CHECK(!range_etag_matches("e", "\"e\""));
    CHECK(!range_etag_matches(NULL, "\"e\""));
}

TEST(inspect_run_contract) {
    fixture f;
    fx_open(&f);
    char path[600];
    snprintf(path, sizeof path, "%s/input", f.dir);
    const char *inputs[] = {"GOOD", "NOPE", "CRSH", "JUNK"};
    int expect[] = {INSPECT_OK, INSPECT_OK, INSPECT_EFAIL, INSPECT_EFAIL};
    for (int i = 0; i < 4; i++) {
        FILE *o = fopen(path, "w");
        fputs(inputs[i], o);
        fclose(o);
        const char *args[] = {"inspect-model", path, NULL};
        json_t *out = NULL;
        char err[256] = "";
        inspector in = {.bin = f.stub, .timeout_ms = 5000};
        int rc = inspect_run(&in, args, &out, err, sizeof err);
        CHECK_MSG(rc == expect[i], "%s: %d (%s)", inputs[i], rc, err);
        if (rc == INSPECT_OK) CHECK(json_is_boolean(json_object_get(out, "ok")));
        else CHECK(out == NULL && err[0]);
        json_decref(out);
    }
    const char *args[] = {"inspect-model", path, NULL};
    json_t *out = NULL;
    char err[256];
    inspector none = {.bin = "/nonexistent/gplq-worker", .timeout_ms = 1000};
    CHECK(inspect_run(&none, args, &out, err, sizeof err) == INSPECT_ESPAWN);
    /* a timeout kills the child: the call returns in about the timeout */
    FILE *o = fopen(path, "w");
    fputs("SLOW", o);
    fclose(o);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    inspector quick = {.bin = f.stub, .timeout_ms = 300};
    CHECK(inspect_run(&quick, args, &out, err, sizeof err) == INSPECT_EFAIL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK_MSG(s < 3, "took %.1f s", s);
    fx_close(&f);
}

/* One slow inspection on its own thread, holding the slot of a cap of one. */
typedef struct {
    inspector *in;
    const char *path;
    int rc;
} slow_run;

static void *run_slow(void *arg) {
    slow_run *r = arg;
    const char *args[] = {"inspect-model", r->path, NULL};
    json_t *out = NULL;
    char err[256];
    r->rc = inspect_run(r->in, args, &out, err, sizeof err);
    json_decref(out);
    return NULL;
}

TEST(inspect_run_caps_and_limits) {
    fixture f;
    fx_open(&f);
    char slow[600], good[600];
    snprintf(slow, sizeof slow, "%s/slow", f.dir);
    snprintf(good, sizeof good, "%s/good", f.dir);
    FILE *o = fopen(slow, "w");
    fputs("SLOW", o);
    fclose(o);
    o = fopen(good, "w");
    fputs("GOOD", o);
    fclose(o);
    /* the child is told its limits: the memory given, the timeout as CPU seconds */
    inspector in = {.bin = f.stub, .timeout_ms = 1500, .max_running = 1,
                    .memory_bytes = 123456789};
    const char *args[] = {"inspect-dataset", good, NULL};
    json_t *out = NULL;
    char err[256] = "", line[1024] = "";
    CHECK_MSG(inspect_run(&in, args, &out, err, sizeof err) == INSPECT_OK, "%s", err);
    json_decref(out);
    FILE *a = fopen(f.args_log, "r");
    CHECK(a && fgets(line, sizeof line, a));
    if (a) fclose(a);
    CHECK_MSG(strstr(line, "inspect-dataset ") && strstr(line, " --max-memory 123456789 "
              "--max-cpu-s 2"), "args: %s", line);
    /* a second inspection while one runs under a cap of one: refused at once, no child */
    slow_run r = {&in, slow, 99};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, run_slow, &r) == 0);
    for (int i = 0; i < 200 && atomic_load(&in.running) == 0; i++) usleep(5000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = inspect_run(&in, args, &out, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK_MSG(rc == INSPECT_EBUSY && !out && strstr(err, "the most it does at once"), "%d: %s",
              rc, err);
    CHECK_MSG(s < 0.2, "refusing took %.2f s", s);
    pthread_join(t, NULL);
    CHECK(r.rc == INSPECT_EFAIL); /* the slow one timed out */
    /* the slot is free again */
    CHECK(atomic_load(&in.running) == 0);
    CHECK_MSG(inspect_run(&in, args, &out, err, sizeof err) == INSPECT_OK, "%s", err);
    json_decref(out);
    fx_close(&f);
}
