/*
 * cfg.h: gplqd's settings, one table line per setting (name, type, default, bounds, help) in the
 * redis manner, on config/options.h's parser: the same names work as flags (--lease-ms 5000),
 * as keys of the --config JSON file ("lease_ms": 5000), and in `gplqd --help`.
 *
 * Byte sizes (max_model_bytes, max_dataset_bytes, ...) are 64-bit and take a suffix ("512M", "4G");
 * options.h stores numbers as int, so they go through the table as text and are parsed here.
 */
#ifndef GPLQ_CFG_H
#define GPLQ_CFG_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

typedef struct {
    const char *listen;          /* ADDR:PORT; port 0 picks a free one */
    const char *data_dir;        /* gplq.db, blobs/, tmp/, jobs/ */
    int workers;                 /* gplq-worker processes; 0 = API only */
    const char *worker_bin;      /* NULL: gplq-worker beside the gplqd binary */
    const char *secret_key_file; /* NULL: DATA/secret.key (config/layout.h) */
    int worker_threads;          /* 0: max(1, cores / workers) */
    int http_threads;            /* 0: max(2, cores) */
    int http_epoll;              /* libmicrohttpd's epoll instead of poll */
    int max_connections;
    int connection_timeout_s;    /* idle time before a connection is closed */
    int head_timeout_s;          /* accept to the end of a request's headers */
    int body_timeout_s;          /* for each GUARD_BODY_STEP bytes of a request's body */
    int max_connections_per_ip;  /* 0: no limit */
    const char *max_model_text, *max_dataset_text;
    int64_t max_model_bytes, max_dataset_bytes;
    int max_json_bytes;
    int lease_ms;
    int max_attempts;
    int shutdown_grace_s;
    int inspect_timeout_s;       /* wall clock, and the inspector's CPU-time limit */
    int max_inspections;         /* upload inspections at once; past it a 503 */
    const char *inspect_memory_text;
    int64_t inspect_memory;      /* the inspector's RLIMIT_AS beyond its program; 0: none */
    int busy_ms;                 /* the write lock wait: SQLite busy timeout, PG lock_timeout */
    int max_queued_jobs;         /* per owner; 0: no limit */
    const char *max_owner_upload_text;
    int64_t max_owner_upload_bytes; /* per owner; 0: no limit */
    int max_event_streams;       /* SSE streams open at once */
    int max_owner_event_streams; /* per owner; 0: no limit */
    int event_heartbeat_s;       /* keep-alive comment on a silent stream */
    const char *webhook_allow_hosts; /* "" = any public address */
    int webhook_max_attempts;
    int webhook_backoff_ms;
    int webhook_timeout_ms;
    int webhook_concurrency;
    const char *db;              /* NULL: DATA/gplq.db (SQLite); a postgresql:// URL: a cluster */
    const char *blob_dir;        /* blobs/, tmp/, jobs/; set to data_dir when not given */
    const char *node_name;       /* NULL: HOSTNAME.PID (used with --db only) */
    const char *mpi_launch;      /* "": jobs asking for "mpi" fail; else the launcher command */
} cfg;

/* Defaults, then args (argv without the program name) in order, --config FILE applied where
 * it appears. Fills the derived fields (sizes, worker_bin, thread counts). 0, or -1 with err
 * naming the option. Strings in c are borrowed from args or live for the program. */
int cfg_load(cfg *c, int argc, char **argv, char *err, size_t errlen);
/* Usage of every option. */
void cfg_print_help(FILE *f);
/* The resolved settings as a new object (json_decref), for the start-up log line. */
json_t *cfg_to_json(const cfg *c);

#endif
