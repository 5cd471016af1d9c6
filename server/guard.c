/*
 * guard.c: see guard.h.
 *
 * Everything is under one mutex: the counts, and the waiting list, the connections whose
 * request head is awaited, in the order their wait began (so its head is the one waited for
 * longest). A connection the guard has shut down is "doomed": out of the list, still counted
 * until libmicrohttpd closes it, and not counted as a live slot meanwhile.
 */
#include "server/guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "util/clock.h"
#include "util/jlog.h"

#define GUARD_LOG_MS 10000 /* at most one summary log line this often, so an attack cannot flood */

struct guard_conn {
    int fd;
    double deadline_ms;        /* monotonic: the head must be in by then */
    int waiting;               /* in the waiting list */
    int doomed;                /* shut down by the guard */
    guard_conn *prev, *next;
};

struct guard {
    guard_options o;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* the sweeper's sleep, and guard_free's wake-up */
    pthread_t thread;
    int stop;
    guard_conn *head, *tail;   /* the waiting list */
    int n;                     /* open connections */
    int ndoomed;               /* of them, shut down by the guard and not yet closed */
    /* since the last log line */
    int late, shed, refused;
    double logged_ms;          /* monotonic: the last log line, or the start */
};

static void unlink_waiting(guard *g, guard_conn *c) {
    if (!c->waiting) return;
    if (c->prev) c->prev->next = c->next;
    else g->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else g->tail = c->prev;
    c->prev = c->next = NULL;
    c->waiting = 0;
}

static void append_waiting(guard *g, guard_conn *c, double deadline_ms) {
    c->deadline_ms = deadline_ms;
    c->prev = g->tail;
    c->next = NULL;
    if (g->tail) g->tail->next = c;
    else g->head = c;
    g->tail = c;
    c->waiting = 1;
}

/* Closes c's connection (under mu). */
static void doom(guard *g, guard_conn *c) {
    unlink_waiting(g, c);
    c->doomed = 1;
    g->ndoomed++;
    shutdown(c->fd, SHUT_RDWR);
}

static void log_summary(guard *g, double now) {
    if (now - g->logged_ms < GUARD_LOG_MS || !(g->late || g->shed || g->refused)) return;
    jlog("warn", NULL,
         "connections: %d closed for a request head later than %d s, %d closed to give their "
         "slot (a head not yet in) to a newcomer, %d refused with all %d slots busy, in the "
         "last %.0f s",
         g->late, g->o.head_timeout_ms / 1000, g->shed, g->refused, g->o.max_connections,
         (now - g->logged_ms) / 1000);
    g->late = g->shed = g->refused = 0;
    g->logged_ms = now;
}

static void *sweeper(void *arg) {
    guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec until;
        clock_deadline(&until, g->o.sweep_ms);
        while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &until) != ETIMEDOUT) {
        }
        if (g->stop) break;
        double now = clock_mono_ms();
        /* The list is in the order the waits began, not of the deadlines (a kept-alive
         * connection's is longer): every entry is looked at. */
        for (guard_conn *c = g->head, *next; c; c = next) {
            next = c->next;
            if (now >= c->deadline_ms) {
                doom(g, c);
                g->late++;
            }
        }
        log_summary(g, now);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int guard_start(guard **out, const guard_options *o, char *err, size_t errlen) {
    *out = NULL;
    guard *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->o = *o;
    if (g->o.sweep_ms <= 0) g->o.sweep_ms = 250;
    g->logged_ms = clock_mono_ms();
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->thread, NULL, sweeper, g)) {
        snprintf(err, errlen, "cannot start the connection deadline thread");
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return -1;
    }
    *out = g;
    return 0;
}

int guard_admit(guard *g) {
    pthread_mutex_lock(&g->mu);
    int ok = 1;
    if (g->n - g->ndoomed >= g->o.max_connections) {
        /* Every slot is taken. The doomed are bounded so that libmicrohttpd's own cap (ours
         * plus GUARD_SPARE) is never reached while they close. */
        if (g->head && g->ndoomed < GUARD_SPARE / 2) {
            doom(g, g->head);
            g->shed++;
        } else {
            ok = 0;
            g->refused++;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return ok;
}

guard_conn *guard_opened(guard *g, int fd) {
    guard_conn *c = calloc(1, sizeof *c);
    pthread_mutex_lock(&g->mu);
    g->n++;
    if (c) {
        c->fd = fd;
        append_waiting(g, c, clock_mono_ms() + g->o.head_timeout_ms);
    }
    pthread_mutex_unlock(&g->mu);
    if (!c) shutdown(fd, SHUT_RDWR); /* a connection the guard cannot watch is not served */
    return c;
}

void guard_head_done(guard *g, guard_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    unlink_waiting(g, c);
    pthread_mutex_unlock(&g->mu);
}

void guard_request_done(guard *g, guard_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (!c->doomed && !c->waiting)
        append_waiting(g, c, clock_mono_ms() + g->o.idle_ms + g->o.head_timeout_ms);
    pthread_mutex_unlock(&g->mu);
}

void guard_closed(guard *g, guard_conn *c) {
    pthread_mutex_lock(&g->mu);
    g->n--;
    if (c) {
        unlink_waiting(g, c);
        if (c->doomed) g->ndoomed--;
    }
    pthread_mutex_unlock(&g->mu);
    free(c);
}

void guard_free(guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
