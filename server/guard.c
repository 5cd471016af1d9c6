/*
 * guard.c: see guard.h.
 *
 * Everything is under one mutex: the counts and two lists. The waiting list holds the
 * connections whose request head is awaited, in the order their wait began (so its head is the
 * one waited for longest); the reading list, those whose request body is being read. A
 * connection is in at most one of them. A connection the guard has shut down is "doomed": out
 * of the lists, still counted until libmicrohttpd closes it, and not counted as a live slot
 * meanwhile.
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

enum { IN_NONE, IN_WAITING, IN_READING }; /* which list a connection is in */

struct guard_conn {
    int fd;
    double deadline_ms;        /* monotonic: its head, or the next step of its body, by then */
    int in;                    /* IN_*: the list it is in */
    int doomed;                /* shut down by the guard */
    int64_t mark;              /* body bytes when its deadline was last set (reading) */
    guard_conn *prev, *next;
};

/* A list of connections, oldest first. */
typedef struct {
    guard_conn *head, *tail;
} conn_list;

struct guard {
    guard_options o;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* the sweeper's sleep, and guard_free's wake-up */
    pthread_t thread;
    int stop;
    conn_list waiting;         /* heads awaited */
    conn_list reading;         /* bodies being read */
    int n;                     /* open connections */
    int ndoomed;               /* of them, shut down by the guard and not yet closed */
    /* since the last log line */
    int late, slow, shed, refused;
    double logged_ms;          /* monotonic: the last log line, or the start */
};

static conn_list *list_of(guard *g, int in) {
    return in == IN_WAITING ? &g->waiting : &g->reading;
}

static void unlink_conn(guard *g, guard_conn *c) {
    if (c->in == IN_NONE) return;
    conn_list *l = list_of(g, c->in);
    if (c->prev) c->prev->next = c->next;
    else l->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else l->tail = c->prev;
    c->prev = c->next = NULL;
    c->in = IN_NONE;
}

/* Moves c to the end of list in (IN_WAITING or IN_READING) with the deadline given. */
static void append_conn(guard *g, guard_conn *c, int in, double deadline_ms) {
    unlink_conn(g, c);
    conn_list *l = list_of(g, in);
    c->deadline_ms = deadline_ms;
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail) l->tail->next = c;
    else l->head = c;
    l->tail = c;
    c->in = in;
}

/* Closes c's connection (under mu). */
static void doom(guard *g, guard_conn *c) {
    unlink_conn(g, c);
    c->doomed = 1;
    g->ndoomed++;
    shutdown(c->fd, SHUT_RDWR);
}

static void log_summary(guard *g, double now) {
    if (now - g->logged_ms < GUARD_LOG_MS || !(g->late || g->slow || g->shed || g->refused))
        return;
    jlog("warn", NULL,
         "connections: %d closed for a request head later than %d s, %d for a request body "
         "slower than %d bytes in %d s, %d closed to give their slot (a head not yet in) to a "
         "newcomer, %d refused with all %d slots busy, in the last %.0f s",
         g->late, g->o.head_timeout_ms / 1000, g->slow, GUARD_BODY_STEP,
         g->o.body_timeout_ms / 1000, g->shed, g->refused, g->o.max_connections,
         (now - g->logged_ms) / 1000);
    g->late = g->slow = g->shed = g->refused = 0;
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
        /* The lists are in the order the waits began, not of the deadlines (a kept-alive
         * connection's is longer, a body's moves on): every entry is looked at. */
        for (int in = IN_WAITING; in <= IN_READING; in++)
            for (guard_conn *c = list_of(g, in)->head, *next; c; c = next) {
                next = c->next;
                if (now < c->deadline_ms) continue;
                doom(g, c);
                if (in == IN_WAITING) g->late++;
                else g->slow++;
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
        if (g->waiting.head && g->ndoomed < GUARD_SPARE / 2) {
            doom(g, g->waiting.head);
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
        append_conn(g, c, IN_WAITING, clock_mono_ms() + g->o.head_timeout_ms);
    }
    pthread_mutex_unlock(&g->mu);
    if (!c) shutdown(fd, SHUT_RDWR); /* a connection the guard cannot watch is not served */
    return c;
}

void guard_head_done(guard *g, guard_conn *c, int body) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (!body || c->doomed) {
        unlink_conn(g, c);
    } else {
        c->mark = 0;
        append_conn(g, c, IN_READING, clock_mono_ms() + g->o.body_timeout_ms);
    }
    pthread_mutex_unlock(&g->mu);
}

void guard_body(guard *g, guard_conn *c, int64_t received) {
    /* Only c's own thread writes mark, and the lock is taken once a step, not each chunk. */
    if (!c || received - c->mark < GUARD_BODY_STEP) return;
    pthread_mutex_lock(&g->mu);
    c->mark = received;
    if (c->in == IN_READING) c->deadline_ms = clock_mono_ms() + g->o.body_timeout_ms;
    pthread_mutex_unlock(&g->mu);
}

void guard_body_done(guard *g, guard_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->in == IN_READING) unlink_conn(g, c);
    pthread_mutex_unlock(&g->mu);
}

void guard_request_done(guard *g, guard_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    /* (Answered before its body was read whole, it is in the reading list: moved.) */
    if (!c->doomed && c->in != IN_WAITING)
        append_conn(g, c, IN_WAITING, clock_mono_ms() + g->o.idle_ms + g->o.head_timeout_ms);
    pthread_mutex_unlock(&g->mu);
}

void guard_closed(guard *g, guard_conn *c) {
    pthread_mutex_lock(&g->mu);
    g->n--;
    if (c) {
        unlink_conn(g, c);
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
