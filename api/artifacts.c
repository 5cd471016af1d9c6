/*
 * artifacts.c: the routes of a job's artifacts, the files its worker exported: the list, the
 * download (ETag, If-None-Match and one byte range; the glue sends the descriptor without
 * copying) and signed links that download without a token for a while (api/auth.h).
 */
#include "api/api_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/auth.h"
#include "api/range.h"
#include "config/layout.h"
#include "util/clock.h"
#include "util/jlog.h"

/* ---------------------------------------------------------------- artifacts */

/* Artifact names: [A-Za-z0-9._-]+, not starting with '.' (so never "." or ".."). */
static int artifact_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 128 || s[0] == '.') return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return 0;
    return 1;
}

void api__artifact_list(api_ctx *ctx, const api_request *req, const api_params *p,
                        api_response *res) {
    json_t *job = NULL, *arr = NULL;
    int rc = store_job_get(ctx->st, ctx->owner, p->v[0], &job);
    json_decref(job);
    if (rc == STORE_OK) rc = store_artifact_list(ctx->st, ctx->owner, p->v[0], &arr);
    if (rc) {
        json_decref(arr);
        api__store_error(ctx, req, res, rc, "job", p->v[0]);
        return;
    }
    api_json(res, 200, json_pack("{s:o}", "artifacts", arr));
}

static const char *content_type_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".json")) return "application/json";
    if (dot && !strcmp(dot, ".txt")) return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

/* The artifact's record (*art, new) as ctx's owner sees it; 0, or 1 with res set (a 404 that
 * says whether the job or the artifact is missing). */
static int artifact_find(api_ctx *ctx, const api_request *req, api_response *res,
                         const char *id, const char *name, json_t **art) {
    *art = NULL;
    int rc = api__id_ok(id) && artifact_name_ok(name)
                 ? store_artifact_get(ctx->st, ctx->owner, id, name, art)
                 : STORE_ENOTFOUND;
    if (rc == STORE_ENOTFOUND) {
        json_t *job = NULL;
        int jrc = api__id_ok(id) ? store_job_get(ctx->st, ctx->owner, id, &job) : STORE_ENOTFOUND;
        json_decref(job);
        if (jrc == STORE_OK) api_error(res, 404, "not_found", NULL, "job '%s' has no artifact '%s'", id, name);
        else api__store_error(ctx, req, res, jrc, "job", id);
        return 1;
    }
    if (rc) {
        api__store_error(ctx, req, res, rc, "artifact", name);
        return 1;
    }
    return 0;
}

/* GET /v1/jobs/{id}/artifacts/{name}: the file, with ETag (its SHA-256), If-None-Match and a
 * single byte range. The descriptor goes to the glue, which sends it without copying. */
void api__artifact_get(api_ctx *ctx, const api_request *req, const api_params *p,
                       api_response *res) {
    const char *id = p->v[0], *name = p->v[1];
    json_t *art;
    if (artifact_find(ctx, req, res, id, name, &art)) return;
    const char *sha = json_string_value(json_object_get(art, "sha256"));
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s\"", sha ? sha : "");
    json_decref(art);

    char path[4096];
    if (layout_artifact(path, sizeof path, ctx->data_dir, id, name)) {
        api__internal(req, res, "the path of artifact %s of job %s is too long", name, id);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fd >= 0) close(fd);
        if (e == ENOENT) {
            jlog("warn", req->request_id, "artifact %s is recorded but its file is gone", path);
            api_error(res, 404, "not_found", NULL, "the file of artifact '%s' is gone", name);
        } else {
            api__internal(req, res, "opening %s: %s", path, strerror(e));
        }
        return;
    }
    api_response_header(res, "ETag", "%s", etag);
    api_response_header(res, "Accept-Ranges", "bytes");
    api_response_header(res, "Content-Disposition", "attachment; filename=\"%s\"", name);
    if (range_etag_matches(api_header(req, "If-None-Match"), etag)) {
        close(fd);
        api_json(res, 304, NULL);
        return;
    }
    int64_t size = st.st_size, off, len;
    range_kind k = range_parse(api_header(req, "Range"), api_header(req, "If-Range"), etag, size,
                               &off, &len);
    if (k == RANGE_UNSATISFIABLE) {
        close(fd);
        api_response_header(res, "Content-Range", "bytes */%lld", (long long)size);
        api_error(res, 416, "range_not_satisfiable", "Range",
                  "the range is outside the file's %lld bytes", (long long)size);
        return;
    }
    if (k == RANGE_PARTIAL)
        api_response_header(res, "Content-Range", "bytes %lld-%lld/%lld", (long long)off,
                            (long long)(off + len - 1), (long long)size);
    api_json(res, k == RANGE_PARTIAL ? 206 : 200, NULL);
    res->fd = fd;
    res->offset = off;
    res->length = len;
    res->content_type = content_type_of(name);
}

/* POST /v1/jobs/{id}/artifacts/{name}/link?expires_in=S: a link that downloads the artifact
 * without a token for S seconds (api/auth.h). The dashboard's Download button uses one, so the
 * browser writes the file to disk as it arrives instead of holding it in memory first. */
void api__artifact_link(api_ctx *ctx, const api_request *req, const api_params *p,
                        api_response *res) {
    const char *id = p->v[0], *name = p->v[1];
    json_t *art;
    static const char *const keys[] = {"expires_in", NULL};
    long ttl;
    if (api__query_known(req, res, keys) ||
        api__query_int(req, res, "expires_in", 1, 86400, 300, &ttl))
        return;
    if (artifact_find(ctx, req, res, id, name, &art)) return;
    json_decref(art);
    if (!ctx->link_key) {
        api_error(res, 503, "unavailable", NULL, "this server makes no download links");
        return;
    }
    char path[2 * API_PARAM_MAX + 40], sig[65];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifacts/%s", id, name); /* both checked: URL-safe */
    long long expires = (long long)time(NULL) + ttl;
    auth_link_sign(ctx->link_key, path, expires, sig);
    char at[CLOCK_ISO_MAX];
    clock_iso_s(expires, at);
    char url[sizeof path + 120];
    snprintf(url, sizeof url, "%s?expires=%lld&sig=%s", path, expires, sig);
    api_json(res, 200, json_pack("{s:s, s:s, s:I}", "url", url, "expires_at", at, "expires_in",
                                 (json_int_t)ttl));
}
