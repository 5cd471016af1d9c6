/*
 * webhook.h: the rules of gplqd's outgoing webhooks that need no network: which URLs a job may
 * name (the SSRF guard), which addresses a delivery may connect to, the signature, the retry
 * delays. server/deliver.c sends them; the job handler checks URLs with the same code.
 *
 * The guard: only http and https, no credentials in the URL, and
 *   - with an allowlist (config webhook_allow_hosts, "hooks.example.com,*.corp.example,10.0.0.7"),
 *     only the hosts on it, whatever address they have (the operator vouched for them);
 *   - without one, any host whose address is public: an IP literal or "localhost" that is not
 *     is refused when the job is submitted, and a name is checked on each address it resolves
 *     to at connect time (so a name that resolves to 127.0.0.1 or 169.254.169.254, the cloud
 *     metadata service, is refused too, and re-resolving later cannot sneak past it).
 * Deliveries follow no redirects and have connect and total timeouts (server/deliver.c).
 *
 * Signature, the scheme of Stripe and GitHub: X-GPLQ-Signature: t=<unix seconds>,v1=<hex of
 * HMAC-SHA256(secret, "<t>.<body>")>. A receiver recomputes it over the raw body, compares in
 * constant time, and refuses a t too far from its clock (a replay).
 */
#ifndef GPLQ_WEBHOOK_H
#define GPLQ_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WEBHOOK_URL_MAX 2048
#define WEBHOOK_SECRET_MIN 16
#define WEBHOOK_SECRET_MAX 256

/* Checks url against the policy above (allow_hosts NULL or "" = no allowlist). 0, or -1 with
 * err saying why, in words a user can act on. */
int webhook_url_check(const char *url, const char *allow_hosts, char *err, size_t errlen);

/* 1 if a delivery must not connect to sa without an allowlist: loopback, private, link-local,
 * carrier-grade NAT, multicast, reserved or unspecified (IPv4, IPv6, and IPv4 mapped in IPv6). */
int webhook_addr_private(const struct sockaddr *sa);

/* "t=<t>,v1=<64 hex>" for body (n bytes) into out (at least 100 bytes). */
void webhook_sign(const char *secret, long long t, const char *body, size_t n, char *out,
                  size_t outlen);

/* The wait before attempt number attempt + 1 after attempt failed (attempt >= 1): base_ms
 * doubled per attempt, at most an hour, times a jitter factor 0.5 + r (r in [0, 1)) so that
 * receivers that came back are not hit by every sender at the same instant. */
int64_t webhook_backoff_ms(int64_t base_ms, int attempt, double r);

#endif
