/*
 * webhook.c: see webhook.h. URLs are parsed with libcurl's own parser (curl_url), the one the
 * delivery uses, so the host checked here is the host connected to there: two parsers that
 * disagree about "http://a@b/" or "http://a\\@b" are a classic way around an SSRF guard.
 */
#include "api/webhook.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "util/sha256.h"

/* host (lower case, IPv6 without brackets) against one allowlist entry. */
static int host_matches(const char *host, const char *entry, size_t n) {
    while (n && isspace((unsigned char)*entry)) entry++, n--;
    while (n && isspace((unsigned char)entry[n - 1])) n--;
    if (n >= 2 && entry[0] == '[' && entry[n - 1] == ']') entry++, n -= 2;
    if (!n) return 0;
    if (n > 2 && entry[0] == '*' && entry[1] == '.') {
        /* "*.example.com": any name under example.com, not example.com itself */
        size_t hl = strlen(host), sl = n - 1; /* ".example.com" */
        return hl > sl && !strncasecmp(host + hl - sl, entry + 1, sl);
    }
    return strlen(host) == n && !strncasecmp(host, entry, n);
}

static int on_allowlist(const char *host, const char *allow) {
    for (const char *p = allow; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (host_matches(host, p, n)) return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int allow_set(const char *allow) {
    for (const char *p = allow; p && *p; p++)
        if (!isspace((unsigned char)*p) && *p != ',') return 1;
    return 0;
}

int webhook_url_check(const char *url, const char *allow_hosts, char *err, size_t errlen) {
    if (!url || !*url) {
        snprintf(err, errlen, "webhook.url is empty");
        return -1;
    }
    if (strlen(url) > WEBHOOK_URL_MAX) {
        snprintf(err, errlen, "webhook.url is longer than %d characters", WEBHOOK_URL_MAX);
        return -1;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "webhook.url contains a space or a control character");
            return -1;
        }
    CURLU *u = curl_url();
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        snprintf(err, errlen, "webhook.url is not an absolute http(s) URL with a host");
        goto out;
    }
    if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")) {
        snprintf(err, errlen, "webhook.url must be http or https, not %.20s", scheme);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        snprintf(err, errlen, "webhook.url must not carry a user or password (the secret signs "
                              "each request instead)");
        goto out;
    }
    /* IPv6 literals come back in brackets */
    char bare[256];
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
        snprintf(bare, sizeof bare, "%.*s", (int)(hl - 2), host + 1);
    else
        snprintf(bare, sizeof bare, "%s", host);
    for (char *p = bare; *p; p++) *p = (char)tolower((unsigned char)*p);
    if (allow_set(allow_hosts)) {
        if (!on_allowlist(bare, allow_hosts)) {
            snprintf(err, errlen, "webhook.url's host %.100s is not on this server's webhook "
                                  "allowlist", bare);
            goto out;
        }
        rc = 0;
        goto out;
    }
    char *pct = strchr(bare, '%'); /* a zone id ("fe80::1%eth0") is link-local anyway */
    if (pct) *pct = '\0';
    /* A literal address in any form the resolver takes: inet_pton knows only dotted quads,
     * while "127.1", "0" or an octal "017700000001" reach the same hosts (AI_NUMERICHOST
     * parses them as the resolver would, and looks nothing up). */
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_family = AF_UNSPEC}, *lit = NULL;
    int private_literal = 0;
    if (getaddrinfo(bare, NULL, &hints, &lit) == 0)
        for (struct addrinfo *a = lit; a; a = a->ai_next)
            private_literal |= webhook_addr_private(a->ai_addr);
    if (lit) freeaddrinfo(lit);
    size_t bl = strlen(bare);
    if (bl > 1 && bare[bl - 1] == '.') bare[--bl] = '\0'; /* "localhost." is localhost */
    int local_name = !strcmp(bare, "localhost") ||
                     (bl > 10 && !strcmp(bare + bl - 10, ".localhost"));
    if (pct || local_name || private_literal) {
        snprintf(err, errlen, "webhook.url's host %.100s is a loopback, private or link-local "
                              "address; this server delivers only to public addresses unless "
                              "its webhook_allow_hosts lists the host", bare);
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_url_cleanup(u);
    return rc;
}

static int private4(uint32_t a) { /* host byte order */
    uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16), b2 = (uint8_t)(a >> 8);
    return b0 == 0 || b0 == 10 || b0 == 127 ||            /* this network, private, loopback */
           (b0 == 100 && (b1 & 0xc0) == 64) ||            /* 100.64/10 carrier-grade NAT */
           (b0 == 169 && b1 == 254) ||                    /* link-local, cloud metadata */
           (b0 == 172 && (b1 & 0xf0) == 16) ||            /* 172.16/12 */
           (b0 == 192 && b1 == 168) ||                    /* 192.168/16 */
           (b0 == 192 && b1 == 0 && b2 == 0) ||           /* 192.0.0/24 protocol assignments */
           (b0 == 198 && (b1 & 0xfe) == 18) ||            /* 198.18/15 benchmarking */
           b0 >= 224;                                     /* multicast, reserved, broadcast */
}

/* The IPv4 address in 4 bytes at b, in host byte order. */
static uint32_t v4_at(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* An IPv6 address is judged by the IPv4 address it reaches where it embeds one (the transition
 * forms: a relay or the kernel turns them into IPv4 traffic), and by its own range otherwise. */
int webhook_addr_private(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET)
        return private4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6) return 1;
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};     /* ::ffff:0:0/96 */
    static const uint8_t translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}; /* ::ffff:0:0:0/96 */
    static const uint8_t compat[12] = {0};              /* ::a.b.c.d (deprecated), :: and ::1 */
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0}; /* 64:ff9b::/96 */
    if (!memcmp(b, mapped, 12) || !memcmp(b, translated, 12) || !memcmp(b, compat, 12) ||
        !memcmp(b, nat64, 12))
        return private4(v4_at(b + 12));
    if (b[0] == 0x20 && b[1] == 0x02) return private4(v4_at(b + 2)); /* 2002::/16 6to4 */
    static const uint8_t discard[8] = {0x01, 0, 0, 0, 0, 0, 0, 0};    /* 100::/64 */
    return (b[0] & 0xfe) == 0xfc ||                       /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||     /* fe80::/10 link-local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||     /* fec0::/10 site-local (deprecated) */
           b[0] == 0xff ||                                /* multicast */
           (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 &&
            b[5] == 1) ||                                 /* 64:ff9b:1::/48 local-use NAT64 */
           (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) || /* 2001::/32 Teredo:
                                                             its IPv4 is obfuscated; refuse it */
           !memcmp(b, discard, 8);
}

void webhook_sign(const char *secret, long long t, const char *body, size_t n, char *out,
                  size_t outlen) {
    char ts[32];
    size_t tl = (size_t)snprintf(ts, sizeof ts, "%lld.", t);
    uint8_t mac[32];
    char *msg = malloc(tl + n);
    if (!msg) {
        snprintf(out, outlen, "t=%lld,v1=", t); /* unsigned: the receiver refuses it */
        return;
    }
    memcpy(msg, ts, tl);
    memcpy(msg + tl, body, n);
    sha256_hmac(secret, strlen(secret), msg, tl + n, mac);
    free(msg);
    char hex[65];
    sha256_hex(mac, hex);
    snprintf(out, outlen, "t=%lld,v1=%s", t, hex);
}

int64_t webhook_backoff_ms(int64_t base_ms, int attempt, double r) {
    const int64_t cap = 3600 * 1000;
    int64_t d = base_ms > 0 ? base_ms : 1;
    for (int i = 1; i < attempt && d < cap; i++) d *= 2;
    if (d > cap) d = cap;
    if (r < 0) r = 0;
    if (r >= 1) r = 0.999999;
    return (int64_t)((double)d * (0.5 + r));
}
