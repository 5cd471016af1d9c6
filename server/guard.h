/*
 * guard.h: gplqd's connection guard, between slow or greedy clients and the connection slots
 * of libmicrohttpd. server/http.c calls it from MHD's accept policy and connection callbacks.
 *
 * Why: libmicrohttpd 0.9.75 has one global cap, and at the cap it stops accepting, so new
 * clients wait in the listen queue; and its idle timeout is reset by every byte. A few hundred
 * connections that each sent one header line every few seconds (slowloris) held every slot,
 * and /v1/health stopped answering. The guard:
 *   - gives every connection a deadline for its request head: head_timeout_ms from its accept,
 *     and for a kept-alive connection's next request idle_ms + head_timeout_ms from the last
 *     answer (a client may wait out the idle time, then take its head time). A thread closes
 *     the connections past it every sweep_ms;
 *   - gives a request body a deadline too: body_timeout_ms from the end of the head, moved on
 *     by body_timeout_ms each time another GUARD_BODY_STEP bytes of it arrive. A body that
 *     trickles in (a slowloris after the headers) is closed like a late head, while any real
 *     client, even on a slow link (16 KB in 20 s is 800 bytes/s), keeps its connection;
 *   - counts the connections itself and, with every slot taken, gives a newcomer the slot of
 *     the connection whose head has been awaited longest (a legitimate client's head comes
 *     with its first packet, so the one waited for longest is a slow one, or an idle
 *     kept-alive one), or refuses it at once when no connection awaits its head (every slot
 *     holds a request being read, handled or streamed).
 * libmicrohttpd's own cap must be max_connections + GUARD_SPARE: above ours, so that it never
 * stops accepting, with room for the connections being closed and for accepts racing on other
 * threads (the count is kept at the connection's start, after the accept decision, so up to
 * one per MHD thread more may get in at the cap). The per-address limit is libmicrohttpd's own
 * (MHD_OPTION_PER_IP_CONNECTION_LIMIT), which refuses at once too.
 *
 * A connection is closed by shutdown(2) on its socket: libmicrohttpd sees the end on its next
 * poll and closes it as a client that went away. The socket stays libmicrohttpd's: the guard
 * forgets a connection in guard_closed, which libmicrohttpd calls before it closes the
 * descriptor, so the guard never touches a closed (or reused) one.
 */
#ifndef GPLQ_GUARD_H
#define GPLQ_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define GUARD_SPARE 64 /* libmicrohttpd's cap above max_connections (see above) */
#define GUARD_BODY_STEP (16 * 1024) /* body bytes that move a body's deadline on */

typedef struct guard guard;
typedef struct guard_conn guard_conn;

typedef struct {
    int max_connections;   /* open connections; at it a newcomer takes a slow head's slot */
    int head_timeout_ms;   /* accept to the end of the request head */
    int body_timeout_ms;   /* the head's end to GUARD_BODY_STEP bytes of body, and each step on */
    int idle_ms;           /* a kept-alive connection's wait for its next request */
    int sweep_ms;          /* how often the deadlines are checked; 0: 250 */
} guard_options;

/* Starts the deadline thread. *out is new (guard_free). 0, or -1 with err. */
int guard_start(guard **out, const guard_options *o, char *err, size_t errlen);

/* The accept decision, before libmicrohttpd makes the connection: 1 to admit it (having closed
 * the slowest head's connection if every slot was taken), 0 to refuse it. Thread-safe. */
int guard_admit(guard *g);

/* A connection was made on socket fd and its head is awaited. Returns its record (new, owned
 * by the guard until guard_closed), or NULL when out of memory: the connection is then refused
 * (its socket shut down) and only counted. Thread-safe, as are the calls below. */
guard_conn *guard_opened(guard *g, int fd);
/* c's request head is in: its deadline no longer applies, and with body (a body is coming) the
 * body's begins. c may be NULL (as for the calls below). */
void guard_head_done(guard *g, guard_conn *c, int body);
/* received bytes of c's request body are in so far. Called by c's own thread only. */
void guard_body(guard *g, guard_conn *c, int64_t received);
/* c's request body is in whole: no deadline until its answer. Only after guard_head_done with
 * body 1 (a request without one does not pay for the lock). */
void guard_body_done(guard *g, guard_conn *c);
/* c's request was answered: the connection may wait for its next head, under a new deadline. */
void guard_request_done(guard *g, guard_conn *c);
/* The connection is closing (before its descriptor is): frees c (which may be NULL). */
void guard_closed(guard *g, guard_conn *c);

/* Stops the deadline thread and frees g. Call after MHD_stop_daemon (no callback is left). */
void guard_free(guard *g);

#endif
