/*
 * deliver.h: gplqd's webhook deliveries, from the outbox in the database (storage/store.h) to
 * the receivers, on a thread of their own, so no HTTP request ever waits on a receiver.
 *
 * The thread runs libcurl's multi interface: up to `concurrency` deliveries at once, each a
 * POST of the stored payload with the headers
 *     Content-Type: application/json
 *     X-GPLQ-Event: job.succeeded                   the event's type
 *     X-GPLQ-Delivery: evt_...                      the event's id, the same on every retry
 *     X-GPLQ-Attempt: 2
 *     X-GPLQ-Signature: t=<unix>,v1=<hex>           api/webhook.h
 * A 2xx answer delivers it; anything else (another status, a timeout, a refused address) is
 * recorded and retried after webhook_backoff_ms (doubling, with jitter), until max_attempts
 * have failed. No redirect is followed, only http and https are spoken, no proxy from the
 * environment is used, and without an allowlist no connection goes to a non-public address.
 *
 * Rows are leased while in flight (store_webhook_due), so after a crash or a restart the
 * pending ones, and those that were in flight once their lease ends, are picked up again: a
 * receiver may see an event twice (X-GPLQ-Delivery tells), never zero times.
 */
#ifndef GPLQ_DELIVER_H
#define GPLQ_DELIVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct deliver deliver;

typedef struct {
    const char *db_path;       /* the thread's own connection */
    const uint8_t *secret_key; /* what the secrets are sealed under; borrowed */
    int busy_ms;
    const char *allow_hosts;   /* api/webhook.h; "" = any public address */
    int max_attempts;
    int backoff_ms;            /* the first retry's wait (before jitter) */
    int timeout_ms;            /* a whole attempt; connecting gets at most half */
    int concurrency;           /* deliveries in flight at once */
    int poll_ms;               /* how often the outbox is read when idle */
    const char *user_agent;
} deliver_options;

/* Starts the thread. o's strings are borrowed and must outlive it. *out is new
 * (deliver_stop). 0, or -1 with err. */
int deliver_start(deliver **out, const deliver_options *o, char *err, size_t errlen);
/* Stops the thread (deliveries in flight are dropped; their rows come due again after their
 * lease) and frees d. */
void deliver_stop(deliver *d);

#endif
