/*
 * stream.c: see stream.h.
 *
 * Who touches what: a stream's sse_stream is used by its reader (an HTTP thread) while the
 * connection runs, and by the poller (a heartbeat comment) only while it is suspended; the
 * `suspended` flag, changed under the hub's mutex together with the suspend or resume call, is
 * the hand-over. A stream is freed only by libmicrohttpd's free callback, which runs when its
 * response is destroyed, never while it is suspended (a suspended connection cannot complete).
 */
#include "server/stream.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/metrics.h"
#include "api/sse.h"
#include "util/clock.h"
#include "util/jlog.h"

#define STREAM_RETRY_MS 2000 /* a browser's wait before it reconnects */

typedef struct ev_stream {
    struct stream_hub *hub;
    struct MHD_Connection *conn;
    sse_stream s;
    double last_write_ms;      /* monotonic: when bytes last went out */
    int64_t seen_max;          /* the newest event id of the database when last woken (mu) */
    int suspended;             /* (mu) */
    int closing;               /* (mu) the daemon is stopping: end after what is buffered */
    char owner[72];            /* whose stream, for the per-owner limit ("": not counted) */
    struct ev_stream *prev, *next;
} ev_stream;

struct stream_hub {
    stream_options o;
    store *st;                 /* the poller's */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* the poller's sleep, and stream_hub_stop's wait */
    ev_stream *head;
    int n;
    int stop;
};

/* ---------------------------------------------------------------- the reader */

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    ev_stream *e = cls;
    stream_hub *hub = e->hub;
    pthread_mutex_lock(&hub->mu);
    int closing = e->closing;
    pthread_mutex_unlock(&hub->mu);
    if (!sse_pending(&e->s) && !e->s.ended && !closing) {
        store *st = hub->o.thread_store(hub->o.thread_store_arg);
        if (!st || sse_fill(&e->s, st) < 0) {
            jlog("error", NULL, "events of job %s: %s", e->s.job_id,
                 st ? store_errmsg(st) : "no database connection");
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = sse_pending(&e->s);
    if (n) {
        if (n > max) n = max;
        memcpy(buf, e->s.buf + e->s.off, n);
        e->s.off += n;
        e->last_write_ms = clock_mono_ms();
        return (ssize_t)n;
    }
    if (e->s.ended || closing) return MHD_CONTENT_READER_END_OF_STREAM;
    /* Nothing yet: park the connection until the poller sees something. */
    pthread_mutex_lock(&hub->mu);
    if (e->closing) {
        pthread_mutex_unlock(&hub->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    e->suspended = 1;
    MHD_suspend_connection(e->conn);
    pthread_mutex_unlock(&hub->mu);
    return 0;
}

/* Takes e out of the hub (under mu). */
static void unlink_stream(stream_hub *hub, ev_stream *e) {
    if (e->prev) e->prev->next = e->next;
    else hub->head = e->next;
    if (e->next) e->next->prev = e->prev;
    hub->n--;
    pthread_cond_broadcast(&hub->cv);
}

static void on_free(void *cls) {
    ev_stream *e = cls;
    stream_hub *hub = e->hub;
    pthread_mutex_lock(&hub->mu);
    unlink_stream(hub, e);
    pthread_mutex_unlock(&hub->mu);
    metrics_streams(-1);
    sse_free(&e->s);
    free(e);
}

/* ---------------------------------------------------------------- the poller */

static void *poller(void *arg) {
    stream_hub *hub = arg;
    int warned = 0;
    pthread_mutex_lock(&hub->mu);
    int fd = store_wait_fd(hub->st);
    while (!hub->stop) {
        if (fd >= 0) {
            /* PostgreSQL: the database notifies every node of each event as it commits, so a
             * stream of a job that runs on another node wakes at once; the poll_ms timeout is
             * the fallback (and how soon a stop is seen). */
            pthread_mutex_unlock(&hub->mu);
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (store_drain(hub->st) == 0 && poll(&pfd, 1, hub->o.poll_ms) > 0)
                store_drain(hub->st);
            fd = store_wait_fd(hub->st); /* a reconnection may have changed it */
            pthread_mutex_lock(&hub->mu);
        } else {
            struct timespec until;
            clock_deadline(&until, hub->o.poll_ms);
            while (!hub->stop &&
                   pthread_cond_timedwait(&hub->cv, &hub->mu, &until) != ETIMEDOUT) {
            }
        }
        if (hub->stop) break;
        int any = 0;
        for (ev_stream *e = hub->head; e && !any; e = e->next) any = e->suspended;
        if (!any) continue;
        pthread_mutex_unlock(&hub->mu);
        /* Read without the lock: readers must not wait on the database for us. */
        int64_t newest = -1;
        if (store_event_max_id(hub->st, &newest)) {
            if (!warned++) jlog("error", NULL, "event streams: %s", store_errmsg(hub->st));
            newest = -1; /* heartbeats still go */
        }
        double now = clock_mono_ms();
        pthread_mutex_lock(&hub->mu);
        for (ev_stream *e = hub->head; e; e = e->next) {
            if (!e->suspended) continue;
            int wake = newest > e->seen_max;
            if (wake) e->seen_max = newest;
            if (now - e->last_write_ms >= hub->o.heartbeat_ms) {
                sse_append_comment(&e->s, "keep-alive");
                wake = 1;
            }
            if (wake) {
                e->suspended = 0;
                MHD_resume_connection(e->conn);
            }
        }
    }
    pthread_mutex_unlock(&hub->mu);
    return NULL;
}

/* ---------------------------------------------------------------- public */

int stream_hub_start(stream_hub **out, const stream_options *o, char *err, size_t errlen) {
    *out = NULL;
    stream_hub *hub = calloc(1, sizeof *hub);
    if (!hub) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    hub->o = *o;
    if (hub->o.poll_ms <= 0) hub->o.poll_ms = 250;
    if (hub->o.heartbeat_ms <= 0) hub->o.heartbeat_ms = 15000;
    if (store_open(&hub->st, o->db_path, o->busy_ms, err, errlen)) {
        free(hub);
        return -1;
    }
    /* A cluster's events (no-op with SQLite, where the poller polls) */
    if (store_listen(hub->st, STORE_CHANNEL_EVENTS))
        jlog("warn", NULL, "event streams: cannot listen for events (polling instead): %s",
             store_errmsg(hub->st));
    pthread_mutex_init(&hub->mu, NULL);
    pthread_cond_init(&hub->cv, NULL);
    if (pthread_create(&hub->thread, NULL, poller, hub)) {
        snprintf(err, errlen, "cannot start the event stream thread");
        store_close(hub->st);
        pthread_mutex_destroy(&hub->mu);
        pthread_cond_destroy(&hub->cv);
        free(hub);
        return -1;
    }
    hub->thread_started = 1;
    *out = hub;
    return 0;
}

/* owner's streams (under mu). */
static int owner_streams(const stream_hub *hub, const char *owner) {
    int n = 0;
    for (const ev_stream *e = hub->head; e; e = e->next) n += !strcmp(e->owner, owner);
    return n;
}

struct MHD_Response *stream_response(stream_hub *hub, struct MHD_Connection *c,
                                     const char *job_id, int64_t after_id, const char *owner,
                                     int *busy) {
    *busy = 0;
    ev_stream *e = calloc(1, sizeof *e);
    if (!e || sse_init(&e->s, job_id, after_id, STREAM_RETRY_MS)) {
        if (e) sse_free(&e->s);
        free(e);
        return NULL;
    }
    e->hub = hub;
    e->conn = c;
    e->last_write_ms = clock_mono_ms();
    snprintf(e->owner, sizeof e->owner, "%s", owner && *owner ? owner : "");
    /* The place is taken in the list now, under the lock that counts: two streams of one owner
     * opening at once cannot both pass the owner's limit. Until its response is queued the
     * stream is not suspended, so the poller leaves it alone. */
    pthread_mutex_lock(&hub->mu);
    if (hub->n >= hub->o.max_streams || hub->stop) {
        *busy = STREAM_BUSY;
    } else if (e->owner[0] && hub->o.max_per_owner > 0 &&
               owner_streams(hub, e->owner) >= hub->o.max_per_owner) {
        *busy = STREAM_OWNER_BUSY;
    } else {
        hub->n++;
        e->next = hub->head;
        if (hub->head) hub->head->prev = e;
        hub->head = e;
    }
    pthread_mutex_unlock(&hub->mu);
    struct MHD_Response *r = NULL;
    if (!*busy) r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, reader, e, on_free);
    if (!r) {
        if (!*busy) {
            pthread_mutex_lock(&hub->mu);
            unlink_stream(hub, e);
            pthread_mutex_unlock(&hub->mu);
        }
        sse_free(&e->s);
        free(e);
        return NULL;
    }
    metrics_streams(1);
    return r;
}

int stream_count(stream_hub *hub) {
    if (!hub) return 0;
    pthread_mutex_lock(&hub->mu);
    int n = hub->n;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

void stream_hub_stop(stream_hub *hub, int wait_ms) {
    if (!hub) return;
    pthread_mutex_lock(&hub->mu);
    hub->stop = 1;
    pthread_cond_broadcast(&hub->cv);
    pthread_mutex_unlock(&hub->mu);
    if (hub->thread_started) pthread_join(hub->thread, NULL);
    hub->thread_started = 0;
    pthread_mutex_lock(&hub->mu);
    for (ev_stream *e = hub->head; e; e = e->next) {
        e->closing = 1;
        if (e->suspended) {
            e->suspended = 0;
            MHD_resume_connection(e->conn);
        }
    }
    struct timespec until;
    clock_deadline(&until, wait_ms);
    while (hub->n > 0 && pthread_cond_timedwait(&hub->cv, &hub->mu, &until) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&hub->mu);
}

void stream_hub_free(stream_hub *hub) {
    if (!hub) return;
    if (hub->thread_started) stream_hub_stop(hub, 0);
    store_close(hub->st);
    pthread_mutex_destroy(&hub->mu);
    pthread_cond_destroy(&hub->cv);
    free(hub);
}
