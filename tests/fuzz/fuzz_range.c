/*
 * fuzz_range.c: libFuzzer harness of the conditional and partial GET headers (api/range.h):
 * Range, If-Range and If-None-Match, as the artifact download handler reads them. The input
 * is the file size (8 bytes, little-endian, taken modulo 2^62: sizes are never negative)
 * followed by four lines: Range, If-Range, the file's ETag, If-None-Match. A missing line is
 * an absent header.
 *
 * The contract checked, which the handler relies on to seek and send: a partial range lies
 * inside the file and is not empty; the whole file is offset 0, length size.
 */
#include "api/range.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--) u = u << 8 | data[i];
    int64_t fsize = (int64_t)(u & ((1ull << 62) - 1));
    char *f[4];
    char *buf = fuzz_fields(data + 8, size - 8, f, 4);
    if (!buf) return 0;
    const char *etag = f[2] ? f[2] : "\"0123456789abcdef\"";
    int64_t off = -1, len = -1;
    range_kind k = range_parse(f[0], f[1], etag, fsize, &off, &len);
    switch (k) {
    case RANGE_FULL:
        if (off != 0 || len != fsize) abort();
        break;
    case RANGE_PARTIAL:
        if (off < 0 || len < 1 || off >= fsize || len > fsize - off) abort();
        break;
    case RANGE_UNSATISFIABLE:
        break;
    default:
        abort();
    }
    if (fuzz_verbose())
        fprintf(stderr, "fuzz: kind %d offset %lld length %lld, If-None-Match matches: %d\n", k,
                (long long)off, (long long)len, range_etag_matches(f[3], etag));
    if (range_etag_matches(f[3], etag) && !f[3]) abort();
    range_etag_matches(f[3], f[0]);
    free(buf);
    return 0;
}
