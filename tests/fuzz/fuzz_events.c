/*
 * fuzz_events.c: libFuzzer harness of where an event stream starts: the Last-Event-ID header
 * (what a browser's EventSource sends when it reconnects) and the ?after= query of GET
 * /v1/jobs/{id}/events, read by the API's handler, and the Server-Sent Events stream (api/sse.h)
 * that follows from that point, read from the fixture's database (fixture.h).
 *
 * The input is three lines: the Last-Event-ID value (absent when the line is missing), the
 * after value (absent when missing or empty), and the job id (the finished job @J when
 * missing or empty; placeholders are replaced). The contract checked: a 200 is a stream that starts
 * where the request said, and the stream's events come in increasing id order, each after it.
 */
#include "api/sse.h"
#include "tests/fuzz/fixture.h"
#include "tests/fuzz/fuzz.h"

static fuzz_fx fx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_fx_init(&fx);
    return 0;
}

static void stream(const api_response *res) {
    sse_stream s;
    if (sse_init(&s, res->stream_job, res->stream_after, 1000)) return;
    int64_t last = s.last_id;
    for (int i = 0; i < 4 && !s.ended; i++) {
        if (sse_fill(&s, fx.st) < 0) break;
        if (s.last_id < last) abort(); /* a stream never goes back */
        last = s.last_id;
    }
    /* every "id: N" line is after the starting point, in increasing order (buf is bytes, not
     * a string: a NUL-terminated copy to scan) */
    char *text = strndup(s.buf ? s.buf + s.off : "", sse_pending(&s));
    int64_t prev = res->stream_after;
    for (const char *p = text; p && (p = strstr(p, "\nid: ")); p++) {
        long long id = strtoll(p + 5, NULL, 10);
        if (id <= prev) abort();
        prev = id;
    }
    free(text);
    sse_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    size_t len;
    char *text = fuzz_fx_expand(&fx, (const char *)data, size, &len);
    if (!text) return 0;
    char *f[3];
    char *buf = fuzz_fields((const uint8_t *)text, len, f, 3);
    free(text);
    if (!buf) return 0;
    char path[600], bearer[100];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", f[2] && *f[2] ? f[2] : fx.job_id);
    snprintf(bearer, sizeof bearer, "Bearer %s", fx.token);
    api_kv headers[2] = {{"Authorization", bearer}, {"Last-Event-ID", f[0]}};
    api_kv query[1] = {{"after", f[1]}};
    api_request req = {.method = "GET", .path = path, .headers = headers,
                       .nheaders = f[0] ? 2 : 1, .query = query,
                       .nquery = f[1] && *f[1] ? 1 : 0, .request_id = "fuzz"};
    if (fuzz_fx_begin(&fx) == 0) {
        api_response res;
        api_dispatch(&fx.ctx, &req, &res);
        if (fuzz_verbose())
            fprintf(stderr, "fuzz: %d after %lld\n", res.status, (long long)res.stream_after);
        if (res.status == 200) {
            if (!res.stream || res.stream_after < 0) abort();
            stream(&res);
        }
        api_response_free(&res);
        fuzz_fx_end(&fx);
    }
    free(buf);
    return 0;
}
