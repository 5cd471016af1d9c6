/*
 * api_int.h: what the files of the REST handlers share with each other and with nobody else.
 * Internal: only api/'s handler files include it; the HTTP glue and the tests include
 * api/api.h, the one interface of the API.
 *
 * It declares the response and request helpers the handlers share (defined in api.c), the
 * upload checks that api_precheck runs before the body arrives (uploads.c), and one handler per
 * route of api_routes, the table in api.c that names them all.
 *
 * Naming: every name here starts with api__ (two underscores, libuv's uv__ habit), so that an
 * internal helper is never mistaken for part of api.h's contract. They are ordinary (not
 * static) functions: one definition, linked into each file that calls them.
 *
 * The files: api.c (the route table, dispatch, auth, the shared helpers), uploads.c (models and
 * datasets), jobs.c (jobs, their events and webhook deliveries), artifacts.c (a job's files and
 * their signed download links), public.c (the routes that need no token: health, /metrics, the
 * OpenAPI document, the dashboard).
 */
#ifndef GPLQ_API_INT_H
#define GPLQ_API_INT_H

#include <stdint.h>

#include <jansson.h>

#include "api/api.h"

/* ---- responses (api.c) ---- */

/* A 500: the details (printf-style) go to the log under the request id, the client gets only
 * the id. */
void api__internal(const api_request *req, api_response *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The response to a failed store call (rc) about the resource what ("model") with id: 404,
 * 409, 400 with the store's message, a 503 for a full disk or an I/O error
 * (api_storage_error), or a 500. */
void api__store_error(api_ctx *ctx, const api_request *req, api_response *res, int rc,
                      const char *what, const char *id);
/* The owner recorded on what this request creates (borrowed from ctx). */
const char *api__creator(const api_ctx *ctx);
/* A Location header /v1/<collection>/<id> for obj's "id", if it has one. */
void api__set_location(api_response *res, const char *collection, json_t *obj);

/* ---- requests (api.c); each returns 0, or -1 with res set to a 400 ---- */

/* Refuses query arguments not in known (NULL-terminated). */
int api__query_known(const api_request *req, api_response *res, const char *const *known);
/* The query argument key as a number in [min, max] into *out; def when it is absent. */
int api__query_int(const api_request *req, api_response *res, const char *key, long min,
                   long max, long def, long *out);
int api__query_float(const api_request *req, api_response *res, const char *key, double min,
                     double max, double def, double *out);
/* 1 if s is an id that may go into a file path (letters, digits, '_', '-'; 1 to 64), else 0. */
int api__id_ok(const char *s);
/* The body of a JSON route as an object (new reference), or NULL with res set. */
json_t *api__body_object(const api_request *req, api_response *res);

/* ---- uploads (uploads.c) ---- */

/* An upload's query options. */
typedef struct {
    char name[129];
    long num_heads;       /* models: 0 = as the checkpoint says */
    long img_size;        /* models: 0 = as the checkpoint says */
    int have_norm;        /* models: mean and std below were given */
    float mean[3], std[3];
    double val_fraction;  /* datasets: share held out when the archive has no val/ */
} api__upload_opts;

/* What of a model's stored config a worker needs to load the file as the inspector did (the
 * values the upload's query supplied, or the defaults the inspector chose): img_size, mean,
 * std and, for a ViT, num_heads; those config has. New object (json_decref). */
json_t *api__model_input(json_t *config);

/* The query of an upload into *o; 0, or -1 with res set. Used both before the body
 * (api_precheck) and by the handler. */
int api__upload_query(const api_request *req, int is_model, api__upload_opts *o,
                      api_response *res);
/* The per-owner upload limit against incoming bytes (and, with held_too, the bytes the owner
 * holds already): 1 with res set to a 413, 0 to go on. */
int api__upload_quota(api_ctx *ctx, const api_request *req, int64_t incoming, int held_too,
                      api_response *res);
/* res = the 503 of an upload refused for want of an inspection slot (INSPECT_EBUSY), with the
 * inspector's message: the server's capacity, not the upload, as for event streams. */
void api__inspect_busy(api_response *res, const char *msg);

/* ---- the handlers, one per route of api_routes (api.c) ---- */

/* uploads.c */
void api__model_create(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res);
void api__model_list(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res);
void api__model_get(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res);
void api__model_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res);
void api__dataset_create(api_ctx *ctx, const api_request *req, const api_params *p,
                         api_response *res);
void api__dataset_list(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res);
void api__dataset_get(api_ctx *ctx, const api_request *req, const api_params *p,
                      api_response *res);
void api__dataset_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                         api_response *res);

/* jobs.c */
void api__job_create(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res);
void api__job_list(api_ctx *ctx, const api_request *req, const api_params *p,
                   api_response *res);
void api__job_get(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res);
void api__job_delete(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res);
void api__job_cancel(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res);
void api__job_events(api_ctx *ctx, const api_request *req, const api_params *p,
                     api_response *res);
void api__job_webhooks(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res);

/* artifacts.c */
void api__artifact_list(api_ctx *ctx, const api_request *req, const api_params *p,
                        api_response *res);
void api__artifact_get(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res);
void api__artifact_link(api_ctx *ctx, const api_request *req, const api_params *p,
                        api_response *res);

/* public.c */
void api__health(api_ctx *ctx, const api_request *req, const api_params *p,
                 api_response *res);
void api__metrics(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res);
void api__openapi(api_ctx *ctx, const api_request *req, const api_params *p,
                  api_response *res);
void api__web_index(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res);
void api__web_asset(api_ctx *ctx, const api_request *req, const api_params *p,
                    api_response *res);

#endif
