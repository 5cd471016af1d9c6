/*
 * openapi.h: the OpenAPI 3.1 description of gplqd's API, served at GET /v1/openapi.json.
 *
 * It is written by hand in api/openapi.json (the source, reviewed like code) and embedded in
 * the binary when api/openapi.c is compiled, so the daemon needs no file at run time. The job
 * options are not in that file: the served document adds them to the JobCreate and JobSpec
 * schemas from the option table (config/jobspec.c), the one place an option is defined. It is
 * kept in step with the handlers by tests/test_api.c: every route of api_routes[] is described
 * (path, method, operationId = the route's name, its path parameters, a 401 unless public) and
 * every described operation is a route; the test also checks that the embedded source is the
 * file in the tree (a stale object file after an edit of the JSON: rebuild api/openapi.c).
 */
#ifndef GPLQ_OPENAPI_H
#define GPLQ_OPENAPI_H

#include <stddef.h>

/* The served document's text, NUL-terminated, built on the first call (thread-safe); static,
 * never freed. NULL only if the embedded source is not JSON (a test holds it to be). */
const char *openapi_json(void);
/* Its length in bytes (without the NUL). */
size_t openapi_json_len(void);
/* The embedded source, api/openapi.json as compiled in (static; *len its length). */
const char *openapi_source(size_t *len);

#endif
