/*
 * openapi.h: the OpenAPI 3.1 description of gplqd's API, served at GET /v1/openapi.json.
 *
 * It is written by hand in api/openapi.json (the source, reviewed like code) and embedded in
 * the binary when api/openapi.c is compiled, so the daemon needs no file at run time. It is
 * kept in step with the handlers by tests/test_api.c: every route of api_routes[] is described
 * (path, method, operationId = the route's name, its path parameters, a 401 unless public) and
 * every described operation is a route; the test also checks that the embedded copy is the file
 * in the tree (a stale object file after an edit of the JSON: rebuild api/openapi.c).
 */
#ifndef GPLQ_OPENAPI_H
#define GPLQ_OPENAPI_H

#include <stddef.h>

/* The document's text, NUL-terminated; static. */
const char *openapi_json(void);
/* Its length in bytes (without the NUL). */
size_t openapi_json_len(void);

#endif
