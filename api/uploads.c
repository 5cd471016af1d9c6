/*
 * uploads.c: the model and dataset routes (upload, list, get, delete). An upload's body arrives
 * streamed into a blob writer (api.h); the handler has a worker process inspect the file, then
 * the blob and its row are committed together, or the temp file is dropped. The per-owner
 * upload limit is checked here too, early (api_precheck, before the body) and again at commit.
 */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

#include "api/inspect.h"
#include "config/options.h"
#include "util/jlog.h"
#include "util/sha256.h"

/* ---------------------------------------------------------------- uploads (models, datasets) */

/* The query of an upload. Used both before the body (api_precheck) and by the handler. */
int api__upload_query(const api_request *req, int is_model, api__upload_opts *o,
                      api_response *res) {
    static const char *const model_keys[] = {"name", "num_heads", "img_size", "mean", "std", NULL};
    static const char *const dataset_keys[] = {"name", "val_fraction", NULL};
    if (api__query_known(req, res, is_model ? model_keys : dataset_keys)) return -1;
    const char *name = api_query(req, "name");
    if (!name) name = is_model ? "model" : "dataset";
    size_t n = strlen(name);
    json_t *valid = json_string(name); /* NULL unless UTF-8 */
    int ok = valid && n >= 1 && n < sizeof o->name;
    json_decref(valid);
    for (const char *p = name; ok && *p; p++) ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok) {
        api_error(res, 400, "bad_request", "name",
                  "name must be 1 to %zu characters of UTF-8 text without control characters",
                  sizeof o->name - 1);
        return -1;
    }
    memcpy(o->name, name, n + 1);
    o->num_heads = o->img_size = 0;
    o->have_norm = 0;
    o->val_fraction = 0.1;
    if (!is_model) return api__query_float(req, res, "val_fraction", 0, 0.9, 0.1, &o->val_fraction);
    if (api__query_int(req, res, "num_heads", 0, 64, 0, &o->num_heads) ||
        api__query_int(req, res, "img_size", 0, 4096, 0, &o->img_size))
        return -1;
    /* the input normalization, one value or three (config/options.h); the pair or nothing */
    const char *mean = api_query(req, "mean"), *std = api_query(req, "std");
    if (!mean != !std) {
        api_error(res, 400, "bad_request", mean ? "std" : "mean",
                  "mean and std go together: give %s too", mean ? "std" : "mean");
        return -1;
    }
    char err[256];
    if (mean && opt_parse_triple(mean, "mean", OPT_MEAN_MIN, OPT_MEAN_MAX, o->mean, err, sizeof err)) {
        api_error(res, 400, "bad_request", "mean", "%s", err);
        return -1;
    }
    if (std && opt_parse_triple(std, "std", OPT_STD_MIN, OPT_STD_MAX, o->std, err, sizeof err)) {
        api_error(res, 400, "bad_request", "std", "%s", err);
        return -1;
    }
    o->have_norm = mean != NULL;
    return 0;
}

json_t *api__model_input(json_t *config) {
    json_t *in = json_object();
    const char *arch = json_string_value(json_object_get(config, "arch"));
    const char *keys[] = {"img_size", "mean", "std", "num_heads"};
    /* a Swin's heads are per stage and come from its bias tables: nothing to carry */
    int nkeys = arch && !strcmp(arch, "swin") ? 3 : 4;
    for (int i = 0; i < nkeys; i++) {
        json_t *v = json_object_get(config, keys[i]);
        if (v) json_object_set_new(in, keys[i], json_deep_copy(v));
    }
    return in;
}

/* The inspector's command line for a model upload into args (from args[2]; room for 8 more
 * and the NULL), its numbers written into text. */
static void model_hint_args(const api__upload_opts *o, const char **args, char text[4][96]) {
    int n = 2;
    if (o->num_heads > 0) {
        snprintf(text[0], sizeof text[0], "%ld", o->num_heads);
        args[n++] = "--num-heads", args[n++] = text[0];
    }
    if (o->img_size > 0) {
        snprintf(text[1], sizeof text[1], "%ld", o->img_size);
        args[n++] = "--img-size", args[n++] = text[1];
    }
    if (o->have_norm) { /* %.9g: every float reads back to itself */
        snprintf(text[2], sizeof text[2], "%.9g,%.9g,%.9g", o->mean[0], o->mean[1], o->mean[2]);
        snprintf(text[3], sizeof text[3], "%.9g,%.9g,%.9g", o->std[0], o->std[1], o->std[2]);
        args[n++] = "--mean", args[n++] = text[2];
        args[n++] = "--std", args[n++] = text[3];
    }
    args[n] = NULL;
}

/* The 413 of an upload of incoming bytes that held bytes already there would push past the
 * per-owner limit. */
static void quota_exceeded(api_ctx *ctx, api_response *res, int64_t held, int64_t incoming) {
    api_error(res, 413, "quota_exceeded", NULL,
              "owner '%s' holds %lld bytes of models and datasets; %lld more would pass the limit "
              "of %lld bytes per owner (delete some first)",
              ctx->owner, (long long)held, (long long)incoming,
              (long long)ctx->limits.max_owner_upload_bytes);
}

/* See api_int.h. */
void api__inspect_busy(api_response *res, const char *msg) {
    api_response_header(res, "Retry-After", "%d", INSPECT_RETRY_AFTER_S);
    api_error(res, 503, "busy", NULL, "%s", msg);
}

/* The per-owner upload limit, checked early: 413 when owner's models and datasets plus
 * incoming bytes would pass it. Admins (owner NULL) are exempt. With held_too 0 only incoming
 * is compared (before the body: bytes that may turn out to be a model the owner already has,
 * which costs nothing, are refused only when they could never fit). These checks only refuse
 * early, before the body or the inspection; the one that counts is store_upload_commit's, in
 * the transaction that records the row. Returns 1 with res set, 0 to go on. */
int api__upload_quota(api_ctx *ctx, const api_request *req, int64_t incoming, int held_too,
                      api_response *res) {
    int64_t limit = ctx->limits.max_owner_upload_bytes;
    if (limit <= 0 || !ctx->owner || incoming < 0) return 0;
    if (!held_too || !ctx->st) {
        if (incoming <= limit) return 0;
        api_error(res, 413, "quota_exceeded", NULL,
                  "this upload is %lld bytes, more than the %lld bytes one owner may hold",
                  (long long)incoming, (long long)limit);
        return 1;
    }
    int64_t held = 0;
    if (store_owner_upload_bytes(ctx->st, ctx->owner, &held)) {
        /* The limit protects the disk; a database that cannot say is not a reason to refuse. */
        jlog("warn", req->request_id, "upload quota: %s", store_errmsg(ctx->st));
        return 0;
    }
    if (held + incoming <= limit) return 0;
    quota_exceeded(ctx, res, held, incoming);
    return 1;
}

/* POST /v1/models and /v1/datasets: the body is already in req->upload (a temp file and its
 * hash). Inspect it in a child, then either commit the blob and record the row, or refuse and
 * drop the temp file. */
static void upload_create(api_ctx *ctx, const api_request *req, api_response *res, int is_model) {
    const char *what = is_model ? "model" : "dataset";
    blob_writer *w = req->upload;
    if (!w) {
        api_error(res, 400, "bad_request", NULL, "the body must be the %s file", what);
        return;
    }
    api__upload_opts o;
    if (api__upload_query(req, is_model, &o, res)) {
        blob_abort(w);
        return;
    }
    if (w->bytes == 0) {
        blob_abort(w);
        api_error(res, 400, "bad_request", NULL,
                  "the body is empty: send the %s file as the request body "
                  "(curl --data-binary @FILE)", what);
        return;
    }

    /* The same bytes as a model the owner has are that model again, and hold nothing new. */
    int again = 0;
    if (is_model && ctx->owner && ctx->limits.max_owner_upload_bytes > 0) {
        sha256_ctx copy = w->sha;
        uint8_t d[32];
        char hex[65];
        sha256_final(&copy, d);
        sha256_hex(d, hex);
        json_t *m = NULL;
        again = store_model_by_sha256(ctx->st, api__creator(ctx), hex, &m) == STORE_OK;
        json_decref(m);
    }
    if (!again && api__upload_quota(ctx, req, w->bytes, 1, res)) {
        blob_abort(w);
        return;
    }

    char hint_text[4][96];
    const char *args[12] = {is_model ? "inspect-model" : "inspect-dataset", w->tmp_path};
    if (is_model) model_hint_args(&o, args, hint_text);
    json_t *answer = NULL;
    char err[1024] = "";
    int rc = ctx->inspect ? ctx->inspect(ctx->inspect_arg, args, &answer, err, sizeof err)
                          : (snprintf(err, sizeof err, "no inspector configured"), INSPECT_ESPAWN);
    const char *code = is_model ? "invalid_model" : "invalid_dataset";
    if (rc == INSPECT_ESPAWN) {
        blob_abort(w);
        api__internal(req, res, "inspecting a %s upload: %s", what, err);
        return;
    }
    if (rc == INSPECT_EBUSY) { /* the slots filled up while the body came in */
        blob_abort(w);
        api__inspect_busy(res, err);
        return;
    }
    if (rc != INSPECT_OK) {
        blob_abort(w);
        api_error(res, 422, code, NULL, "%s", err);
        return;
    }
    if (!json_is_true(json_object_get(answer, "ok"))) {
        const char *why = json_string_value(json_object_get(answer, "error"));
        blob_abort(w);
        api_error(res, 422, code, NULL, "%s", why ? why : "rejected by the inspector");
        json_decref(answer);
        return;
    }
    json_t *info = json_object_get(answer, is_model ? "config" : "summary");
    if (!json_is_object(info)) {
        blob_abort(w);
        json_decref(answer);
        api__internal(req, res, "the inspector accepted a %s but sent no %s object", what,
                      is_model ? "config" : "summary");
        return;
    }
    /* What the inspector learned beside the config goes with it: the checkpoint's naming
     * convention for models; for datasets, the held-out share used at job time. */
    const char *conv = json_string_value(json_object_get(answer, "convention"));
    if (is_model && conv && !json_object_get(info, "convention"))
        json_object_set_new(info, "convention", json_string(conv));
    const char *desc = json_string_value(json_object_get(answer, "description"));
    if (is_model && desc && !json_object_get(info, "description"))
        json_object_set_new(info, "description", json_string(desc));
    /* kept for the comparison below: info goes with answer */
    json_t *input = is_model ? api__model_input(info) : NULL;
    if (!is_model) json_object_set_new(info, "val_fraction", json_real(o.val_fraction));

    /* The blob and its row together, the limit checked again against what other uploads
     * have committed meanwhile (the check above was before the inspection). */
    int64_t bytes = w->bytes, held = 0;
    store_upload up = {.owner = api__creator(ctx), .quota_owner = ctx->owner,
                       .max_owner_bytes = ctx->limits.max_owner_upload_bytes,
                       .is_model = is_model, .name = o.name, .info = info};
    json_t *row = NULL;
    rc = store_upload_commit(ctx->st, ctx->data_dir, w, &up, &row, &held);
    json_decref(answer);
    json_t *had = rc == STORE_EEXISTS && is_model
                      ? api__model_input(json_object_get(row, "config")) : NULL;
    int differs = had && !json_equal(had, input);
    json_decref(had);
    json_decref(input);
    if (differs) {
        /* The same bytes are the same model, but not if they were asked to load otherwise:
         * answering with the model as first uploaded would run jobs at the wrong size. */
        api_error(res, 409, "conflict", NULL, "this file is model %s already, uploaded with "
                  "other img_size, mean, std or num_heads (its config says how); delete it "
                  "first to upload it with these",
                  json_string_value(json_object_get(row, "id")));
        json_decref(row);
    } else if (rc == STORE_OK || rc == STORE_EEXISTS) {
        /* The same bytes again are the same resource: 200 with it, not a second copy. */
        api__set_location(res, is_model ? "models" : "datasets", row);
        api_json(res, rc == STORE_OK ? 201 : 200, row);
    } else if (rc == STORE_ELIMIT) {
        quota_exceeded(ctx, res, held, bytes);
    } else if (rc == STORE_EFULL || rc == STORE_EIO) {
        /* Nothing was kept (store.h): the same upload succeeds once the fault passes. */
        jlog("error", req->request_id, "storing a %s upload: %s", what, store_errmsg(ctx->st));
        api_storage_error(res, rc == STORE_EFULL, 1);
    } else {
        api__internal(req, res, "storing a %s upload: %s", what, store_errmsg(ctx->st));
    }
}

/* DELETE of a model or dataset: the row, then its blob if nothing else references it. */
static void upload_delete(api_ctx *ctx, const api_request *req, api_response *res, int is_model,
                          const char *id) {
    int rc = store_upload_delete(ctx->st, ctx->data_dir, is_model, ctx->owner, id);
    if (rc != STORE_OK) {
        api__store_error(ctx, req, res, rc, is_model ? "model" : "dataset", id);
        return;
    }
    api_json(res, 204, NULL);
}

void api__model_create(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res) {
    (void)p;
    upload_create(ctx, req, res, 1);
}

void api__dataset_create(api_ctx *ctx, const api_request *req, const api_params *p,
                         api_response *res) {
    (void)p;
    upload_create(ctx, req, res, 0);
}

static void list_response(api_ctx *ctx, const api_request *req, api_response *res, int rc,
                          const char *key, json_t *arr) {
    if (rc != STORE_OK) {
        json_decref(arr);
        api__internal(req, res, "listing %s: %s", key, store_errmsg(ctx->st));
        return;
    }
    api_json(res, 200, json_pack("{s:o}", key, arr));
}

void api__model_list(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res) {
    (void)p;
    json_t *arr = NULL;
    int rc = store_model_list(ctx->st, ctx->owner, &arr);
    list_response(ctx, req, res, rc, "models", arr);
}

void api__dataset_list(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res) {
    (void)p;
    json_t *arr = NULL;
    int rc = store_dataset_list(ctx->st, ctx->owner, &arr);
    list_response(ctx, req, res, rc, "datasets", arr);
}

void api__model_get(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res) {
    json_t *obj = NULL;
    int rc = store_model_get(ctx->st, ctx->owner, p->v[0], &obj);
    if (rc) api__store_error(ctx, req, res, rc, "model", p->v[0]);
    else api_json(res, 200, obj);
}

void api__dataset_get(api_ctx *ctx, const api_request *req, const api_params *p,
                      api_response *res) {
    json_t *obj = NULL;
    int rc = store_dataset_get(ctx->st, ctx->owner, p->v[0], &obj);
    if (rc) api__store_error(ctx, req, res, rc, "dataset", p->v[0]);
    else api_json(res, 200, obj);
}

void api__model_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res) {
    upload_delete(ctx, req, res, 1, p->v[0]);
}

void api__dataset_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                         api_response *res) {
    upload_delete(ctx, req, res, 0, p->v[0]);
}
