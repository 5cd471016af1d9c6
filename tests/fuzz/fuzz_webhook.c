/*
 * fuzz_webhook.c: libFuzzer harness of the webhook URL checker, the SSRF guard
 * (api/webhook.h): webhook_url_check on the URL a job names, with or without an allowlist, and
 * webhook_addr_private on raw addresses. The input is two lines, the URL and the allowlist
 * ("" or missing: none); its first 17 bytes also make an address (the first byte picks IPv4 or
 * IPv6).
 *
 * The contract checked beyond "no crash": without an allowlist, an accepted URL's host, when
 * it is a numeric address (in any form the C library's resolver reads as one: "127.1",
 * "0x7f000001", "[::ffff:127.0.0.1]"), is not a private address. getaddrinfo with
 * AI_NUMERICHOST parses without asking DNS, so this stays offline.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>

#include "api/webhook.h"
#include "tests/fuzz/fuzz.h"

/* The URL's host as libcurl parses it (the delivery connects to it), without IPv6 brackets. */
static int url_host(const char *url, char *host, size_t n) {
    CURLU *u = curl_url();
    char *h = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h;
    if (ok) {
        size_t l = strlen(h);
        if (l >= 2 && h[0] == '[' && h[l - 1] == ']')
            snprintf(host, n, "%.*s", (int)(l - 2), h + 1);
        else
            snprintf(host, n, "%s", h);
    }
    curl_free(h);
    curl_url_cleanup(u);
    return ok;
}

static void check_accepted(const char *url) {
    char host[512];
    if (!url_host(url, host, sizeof host)) abort(); /* accepted, so curl parsed it */
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res)) return; /* a name: checked at connect time */
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (webhook_addr_private(a->ai_addr)) {
            fprintf(stderr, "fuzz: %s was accepted; its host %s is a private address\n", url,
                    host);
            abort();
        }
    freeaddrinfo(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *f[2];
    char *buf = fuzz_fields(data, size, f, 2);
    if (!buf) return 0;
    char err[512] = "";
    if (webhook_url_check(f[0], f[1], err, sizeof err) == 0) {
        fuzz_say("accepted", f[0]);
        if (!f[1] || !f[1][strspn(f[1], " \t\n\v\f\r,")]) check_accepted(f[0]);
    } else {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
    }
    free(buf);

    if (size >= 17) {
        struct sockaddr_in v4 = {.sin_family = AF_INET};
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
        if (data[0] & 1) {
            memcpy(&v4.sin_addr, data + 1, 4);
            webhook_addr_private((const struct sockaddr *)&v4);
        } else {
            memcpy(&v6.sin6_addr, data + 1, 16);
            webhook_addr_private((const struct sockaddr *)&v6);
        }
    }
    return 0;
}
