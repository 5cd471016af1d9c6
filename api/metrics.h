/*
 * metrics.h: the counters of a running gplqd that no table holds (HTTP requests by route and
 * status, upload bytes, webhook attempts by outcome, open event streams), process-wide and
 * lock-free (atomics), and the Prometheus text of GET /metrics, which adds to them what the
 * database says (jobs by state, queue depth, job and stage durations, the outbox) and what the
 * supervisor says (workers, restarts).
 *
 * Counters start at zero with the process, as Prometheus expects of counters (a restart is a
 * reset, which rate() handles); durations come from the database and so survive restarts.
 */
#ifndef GPLQ_METRICS_H
#define GPLQ_METRICS_H

#include <stdint.h>

#include <jansson.h>

#include "storage/store.h"

/* One answered request: route_index into api_routes (-1: none matched), its status. */
void metrics_http(int route_index, int status);
/* Body bytes received by an upload route. */
void metrics_upload_bytes(int is_model, int64_t n);
/* One webhook attempt's outcome: "delivered", "retry" or "failed". */
void metrics_webhook(const char *outcome);
/* An event stream opened (+1) or closed (-1). */
void metrics_streams(int delta);

/* The Prometheus text exposition (version 0.0.4) into a new string (free()), its length in
 * *len. st: a connection for the database-derived series (their errors leave them out and set
 * gplq_metrics_db_up 0); workers: the supervisor's array (borrowed, may be NULL). NULL when out
 * of memory. */
char *metrics_render(store *st, json_t *workers, size_t *len);

#endif
