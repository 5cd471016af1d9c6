/*
 * main.c: gplqd, the service. The HTTP API runs on libmicrohttpd's threads (server/http.c);
 * the main thread runs one libuv loop for the workers (server/supervisor.c), the lease timer and
 * the signals. With no flags it serves 127.0.0.1:8080 with its state under ./var.
 *
 * Shutdown (SIGTERM or SIGINT): stop accepting connections, SIGTERM the workers (they
 * checkpoint and give their jobs back to the queue), wait for them up to the grace period
 * (SIGKILL after), stop HTTP, exit 0. A second signal exits at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/inspect.h"
#include "config/layout.h"
#include "server/cfg.h"
#include "server/deliver.h"
#include "server/http.h"
#include "server/supervisor.h"
#include "server/tokencmd.h"
#include "storage/blob.h"
#include "storage/store.h"
#include "util/fs.h"
#include "util/jlog.h"
#include "util/secretbox.h"

#define GPLQD_VERSION "0.1.0"

typedef struct {
    cfg c;
    char db_path[4096];   /* the SQLite file under the data dir, or --db's URL */
    int cluster;          /* --db names a PostgreSQL database that other nodes share */
    char node[128];       /* this node's name in a cluster (--node-name) */
    inspector inspector;  /* the upload inspector, its limits and its count of running ones */
    uint8_t secret_key[SECRETBOX_KEY_BYTES]; /* webhook secrets are sealed under it */
    uv_loop_t *loop;
    store *st;            /* the loop thread's connection */
    sup *sup;
    http_server *http;
    deliver *hooks;
    uv_signal_t sigterm, sigint;
    int stopping;
} gplqd;

static void usage(FILE *f) {
    fprintf(f,
            "gplqd " GPLQD_VERSION ": the gplq service, an HTTP API that quantizes Vision "
            "Transformers to 4 bits\n\n"
            "usage: gplqd [options]\n"
            "       gplqd token create|list|revoke ...   (API tokens: gplqd token --help)\n"
            "       gplqd migrate [--db URL | --data-dir DIR]   (the database to this build's "
            "schema)\n"
            "  With no options: serves http://127.0.0.1:8080 with its state under ./var and 2 "
            "workers.\n\n");
    cfg_print_help(f);
    fprintf(f, "  %-24s %s\n  %-24s %s\n", "--help", "this text", "--version", "the version");
}

static int run_inspector(void *arg, const char *const *args, json_t **out, char *err,
                         size_t errlen) {
    gplqd *g = arg;
    return inspect_run(&g->inspector, args, out, err, errlen);
}

static int inspector_busy(void *arg, char *err, size_t errlen) {
    gplqd *g = arg;
    return inspect_busy(&g->inspector, err, errlen);
}

/* Fashion-MNIST, which the workers read from the system's dataset package: registered at every
 * start (a no-op once there) so that a fresh install can run a job with no upload. */
static int register_builtins(store *st) {
    json_t *classes = json_pack("[s,s,s,s,s,s,s,s,s,s]", "T-shirt/top", "Trouser", "Pullover",
                                "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot");
    json_t *summary = json_pack("{s:s, s:o, s:i, s:i, s:i, s:{s:i, s:i, s:i}}", "format",
                                "fashion-mnist", "classes", classes, "train", 60000, "val", 0,
                                "test", 10000, "image", "channels", 1, "height", 28, "width", 28);
    json_t *row = NULL;
    int rc = store_dataset_insert(st, "", "fashion-mnist", "fashion-mnist", "builtin", "", 0,
                                  summary, &row);
    json_decref(summary);
    json_decref(row);
    return rc == STORE_OK || rc == STORE_EEXISTS ? 0 : -1;
}

static void on_closed(uv_handle_t *h) {
    (void)h;
}

static void on_workers_gone(void *arg) {
    gplqd *g = arg;
    jlog("info", NULL, "workers stopped; closing HTTP");
    http_stop(g->http, g->c.shutdown_grace_s);
    g->http = NULL;
    sup_close(g->sup);
    uv_close((uv_handle_t *)&g->sigterm, on_closed);
    uv_close((uv_handle_t *)&g->sigint, on_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
    gplqd *g = h->data;
    if (g->stopping) {
        jlog("warn", NULL, "second signal (%s): stopping now", strsignal(signum));
        sup_kill_all(g->sup);
        _exit(1);
    }
    g->stopping = 1;
    jlog("info", NULL, "%s: shutting down (workers get %d s to checkpoint)", strsignal(signum),
         g->c.shutdown_grace_s);
    http_quiesce(g->http);
    sup_shutdown(g->sup, on_workers_gone, g);
}

/* `gplqd migrate [--db URL | --data-dir DIR]`: the database to this build's schema version,
 * said on stdout as one JSON line. Nodes migrate at start too; this runs it on its own, before
 * the nodes of a cluster are upgraded one by one (a node refuses a newer schema than its own). */
static int migrate_main(int argc, char **argv) {
    cfg c;
    char err[1024], path[4096];
    if (cfg_load(&c, argc, argv, err, sizeof err)) {
        fprintf(stderr, "gplqd migrate: %s\n", err);
        return 2;
    }
    if (c.db) {
        snprintf(path, sizeof path, "%s", c.db);
    } else {
        if (fs_mkdirs(c.data_dir)) {
            fprintf(stderr, "gplqd migrate: cannot create %s: %s\n", c.data_dir, strerror(errno));
            return 1;
        }
        layout_db(path, sizeof path, c.data_dir);
    }
    int from = 0, to = 0;
    if (store_migrate(path, c.busy_ms, &from, &to, err, sizeof err)) {
        fprintf(stderr, "gplqd migrate: %s\n", err);
        return 1;
    }
    printf("{\"event\":\"migrated\",\"backend\":\"%s\",\"from\":%d,\"to\":%d}\n",
           store_is_url(path) ? "postgresql" : "sqlite", from, to);
    return 0;
}

/* The commands that are not the daemon: "gplqd token ...", "gplqd migrate", --help,
 * --version. Returns 1 with the exit code in *code when one of them ran, 0 to go on and
 * serve. */
static int other_command(int argc, char **argv, int *code) {
    if (argc > 1 && !strcmp(argv[1], "token")) {
        *code = tokencmd_main(argc - 1, argv + 1);
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "migrate")) {
        *code = migrate_main(argc - 2, argv + 2);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            *code = 0;
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("gplqd %s\n", GPLQD_VERSION);
            *code = 0;
            return 1;
        }
    }
    return 0;
}

/* The data directory, made if need be and locked for this daemon (the lock's descriptor into
 * *lock_fd). Returns -1 after saying why on stderr. */
static int open_data_dir(gplqd *g, int *lock_fd, char *err, size_t errlen) {
    if (fs_mkdirs(g->c.data_dir)) {
        fprintf(stderr, "gplqd: cannot create %s: %s\n", g->c.data_dir, strerror(errno));
        return -1;
    }
    /* Uploads, models and the database are the users' and nobody else's on this machine: the
     * folder is closed to others (a data dir made by an older gplqd was 0755). */
    if (chmod(g->c.data_dir, 0700))
        jlog("warn", NULL, "cannot make %s private (chmod 0700): %s", g->c.data_dir,
             strerror(errno));
    if (fs_mkdirs(g->c.blob_dir)) {
        fprintf(stderr, "gplqd: cannot create %s: %s\n", g->c.blob_dir, strerror(errno));
        return -1;
    }
    if (blob_init(g->c.blob_dir, err, errlen)) {
        fprintf(stderr, "gplqd: cannot use the blob directory %s: %s\n", g->c.blob_dir, err);
        return -1;
    }
    char path[4096];
    layout_jobs(path, sizeof path, g->c.blob_dir);
    fs_mkdirs(path);
    /* One daemon per data directory: two would each run a "w1" and expire each other's jobs.
     * The lock dies with the process (and is not inherited by the workers: O_CLOEXEC). */
    layout_lock(path, sizeof path, g->c.data_dir);
    *lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX | LOCK_NB)) {
        fprintf(stderr, "gplqd: %s is in use by another gplqd (%s)\n", g->c.data_dir,
                *lock_fd < 0 ? strerror(errno) : "locked");
        return -1;
    }
    return 0;
}

/* The database: opened, the built-in dataset registered, and on the first start the admin
 * token printed. Returns -1 after saying why on stderr. */
static int open_database(gplqd *g, char *err, size_t errlen) {
    if (g->c.db) snprintf(g->db_path, sizeof g->db_path, "%s", g->c.db);
    else layout_db(g->db_path, sizeof g->db_path, g->c.data_dir);
    g->cluster = store_is_url(g->db_path);
    if (g->c.db && !g->cluster) {
        fprintf(stderr, "gplqd: --db takes a postgresql:// URL (without it the database is "
                        "DATA/gplq.db)\n");
        return -1;
    }
    if (store_open(&g->st, g->db_path, g->c.busy_ms, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    /* In a cluster the key is every node's: on the shared blob dir by default, so that a
     * secret one node sealed another can open to deliver its webhook. */
    char key_path[4096];
    if (g->c.secret_key_file) snprintf(key_path, sizeof key_path, "%s", g->c.secret_key_file);
    else layout_secret_key(key_path, sizeof key_path, g->cluster ? g->c.blob_dir : g->c.data_dir);
    if (secretbox_key_load(key_path, 1, g->secret_key, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    store_set_secret_key(g->st, g->secret_key);
    int sealed = 0;
    if (store_seal_secrets(g->st, &sealed))
        jlog("error", NULL, "sealing the webhook secrets: %s", store_errmsg(g->st));
    else if (sealed)
        jlog("info", NULL, "sealed %d webhook secrets stored in the clear by an older gplqd",
             sealed);
    if (register_builtins(g->st))
        jlog("error", NULL, "registering the built-in dataset: %s", store_errmsg(g->st));
    /* Printed before the listening line, so whoever reads stdout for the URL has the token. */
    if (tokencmd_bootstrap(g->st, stdout, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    return 0;
}

/* Every HTTP connection is a descriptor: the soft limit (often 1024) goes up to the hard one,
 * so that --max-connections, not the shell gplqd was started from, decides how many are
 * served. Said in the log when even the hard limit is short of the connections allowed. */
static void raise_fd_limit(const gplqd *g) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* beside the connections: the database, workers' pipes, uploads, streams' files */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)g->c.max_connections + 64)
        jlog("warn", NULL, "at most %llu open files (RLIMIT_NOFILE), fewer than the %d "
             "connections allowed need: raise the limit or lower --max-connections",
             (unsigned long long)rl.rlim_cur, g->c.max_connections);
}

static void log_start(const gplqd *g, int swept) {
    json_t *conf = cfg_to_json(&g->c);
    if (g->c.db) { /* the log is no place for the database's password */
        char shown[4096];
        store_target_redact(shown, sizeof shown, g->c.db);
        json_object_set_new(conf, "db", json_string(shown));
    }
    json_t *l = json_pack("{s:s, s:s, s:o, s:i, s:s?}", "event", "start", "version", GPLQD_VERSION,
                          "config", conf, "swept_tmp", swept, "node",
                          g->cluster ? g->node : NULL);
    jlog_json("info", l);
    json_decref(l);
}

/* The worker processes, supervised from the loop. Returns -1 after saying why on stderr. */
static int start_workers(gplqd *g, char *err, size_t errlen) {
    sup_options so = {.worker_bin = g->c.worker_bin, .data_dir = g->c.blob_dir,
                      .db_path = g->db_path, .nworkers = g->c.workers,
                      .name_prefix = g->cluster ? g->node : NULL,
                      .threads = g->c.worker_threads, .lease_ms = g->c.lease_ms,
                      .grace_s = g->c.shutdown_grace_s, .mpi_launch = g->c.mpi_launch};
    if (sup_start(&g->sup, g->loop, &so, g->st, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    return 0;
}

/* The HTTP API on its own threads. Returns -1 after saying why on stderr. */
static int start_http(gplqd *g, char *err, size_t errlen) {
    g->inspector.bin = g->c.worker_bin;
    g->inspector.timeout_ms = g->c.inspect_timeout_s * 1000;
    g->inspector.max_running = g->c.max_inspections;
    g->inspector.memory_bytes = g->c.inspect_memory;
    http_options ho = {.listen = g->c.listen, .threads = g->c.http_threads,
                       .epoll = g->c.http_epoll, .max_connections = g->c.max_connections,
                       .timeout_s = g->c.connection_timeout_s, .db_path = g->db_path, .secret_key = g->secret_key,
                       .busy_ms = g->c.busy_ms, .max_streams = g->c.max_event_streams,
                       .head_timeout_s = g->c.head_timeout_s,
                       .body_timeout_s = g->c.body_timeout_s,
                       .max_per_ip = g->c.max_connections_per_ip,
                       .max_owner_streams = g->c.max_owner_event_streams,
                       .heartbeat_ms = g->c.event_heartbeat_s * 1000};
    ho.base = (api_ctx){.data_dir = g->c.blob_dir,
                        .limits = {.max_model_bytes = g->c.max_model_bytes,
                                   .max_dataset_bytes = g->c.max_dataset_bytes,
                                   .max_json_bytes = g->c.max_json_bytes,
                                   .max_attempts = g->c.max_attempts,
                                   .max_queued_jobs = g->c.max_queued_jobs,
                                   .max_owner_upload_bytes = g->c.max_owner_upload_bytes},
                        .auth = 1,
                        .version = GPLQD_VERSION,
                        .webhook_allow_hosts = g->c.webhook_allow_hosts,
                        .wake = sup_wake,
                        .wake_arg = g->sup,
                        .inspect = run_inspector,
                        .inspect_busy = inspector_busy,
                        .inspect_arg = g,
                        .workers = sup_workers_json,
                        .workers_arg = g->sup};
    /* Download links are signed with a key drawn now: a restart ends them (api/auth.h). In a
     * cluster a link one node signed must open on every node, so the key is the cluster's:
     * derived from the shared secret key (HMAC under it of a fixed label), the same on every
     * node and across restarts; links still end when they expire. */
    static unsigned char link_key[AUTH_LINK_KEY_LEN];
    static const char label[] = "gplqd download links v1";
    unsigned int klen = 0;
    if (g->cluster) {
        if (!HMAC(EVP_sha256(), g->secret_key, sizeof g->secret_key,
                  (const unsigned char *)label, sizeof label - 1, link_key, &klen) ||
            klen != AUTH_LINK_KEY_LEN) {
            fprintf(stderr, "gplqd: cannot derive the download-link key (libcrypto failed)\n");
            return -1;
        }
    } else if (auth_link_key_new(link_key)) {
        fprintf(stderr, "gplqd: no randomness for the download-link key: %s\n", strerror(errno));
        return -1;
    }
    ho.base.link_key = link_key;
    if (http_start(&g->http, &ho, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    return 0;
}

/* Webhook delivery, on its own thread. Returns -1 after saying why on stderr. */
static int start_webhooks(gplqd *g, char *err, size_t errlen) {
    deliver_options dopt = {.db_path = g->db_path, .busy_ms = g->c.busy_ms,
                            .secret_key = g->secret_key,
                            .allow_hosts = g->c.webhook_allow_hosts,
                            .max_attempts = g->c.webhook_max_attempts,
                            .backoff_ms = g->c.webhook_backoff_ms,
                            .timeout_ms = g->c.webhook_timeout_ms,
                            .concurrency = g->c.webhook_concurrency,
                            .user_agent = "gplqd-webhook/" GPLQD_VERSION};
    if (deliver_start(&g->hooks, &dopt, err, errlen)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return -1;
    }
    return 0;
}

static void announce_listening(const gplqd *g) {
    /* stdout carries this line (after the first start's token line), so a test or a script
     * that asked for port 0 learns the port; the log is on stderr. */
    printf("{\"event\":\"listening\",\"url\":\"%s\"}\n", http_url(g->http));
    fflush(stdout);
    jlog("info", NULL, "listening on %s", http_url(g->http));
}

/* SIGTERM and SIGINT start the shutdown (on_signal). */
static void watch_signals(gplqd *g) {
    uv_signal_init(g->loop, &g->sigterm);
    uv_signal_init(g->loop, &g->sigint);
    g->sigterm.data = g->sigint.data = g;
    uv_signal_start(&g->sigterm, on_signal, SIGTERM);
    uv_signal_start(&g->sigint, on_signal, SIGINT);
}

/* After the loop, which ends once the workers are gone and HTTP is stopped (on_workers_gone):
 * the rest, in the reverse order of the start. */
static void close_all(gplqd *g, int lock_fd) {
    uv_loop_close(g->loop);
    deliver_stop(g->hooks);
    sup_free(g->sup);
    store_close(g->st);
    jlog("info", NULL, "stopped");
    close(lock_fd);
    curl_global_cleanup();
}

int main(int argc, char **argv) {
    /* A worker's pipe or a client's socket closing under a write must be an error code, not
     * the end of the daemon. */
    signal(SIGPIPE, SIG_IGN);
    /* Every file and folder gplqd and its workers make (the database, blobs, checkpoints,
     * artifacts, keys) is its user's alone: 0600 and 0700. */
    umask(077);
    int code;
    if (other_command(argc, argv, &code)) return code;
    static gplqd g;
    char err[1024];
    /* Before any thread: libcurl's global set-up is not thread-safe. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cfg_load(&g.c, argc - 1, argv + 1, err, sizeof err)) {
        fprintf(stderr, "gplqd: %s\n", err);
        return 2;
    }

    int lock_fd;
    if (open_data_dir(&g, &lock_fd, err, sizeof err)) return 1;
    if (g.c.node_name) {
        snprintf(g.node, sizeof g.node, "%s", g.c.node_name);
    } else {
        char host[64] = "node";
        gethostname(host, sizeof host - 1);
        snprintf(g.node, sizeof g.node, "%s.%d", host, (int)getpid());
    }
    /* Left-over upload files from a crash: swept unless the blob dir is shared (a cluster's),
     * where they may be another node's uploads in flight. */
    int swept = g.c.db ? 0 : blob_sweep_tmp(g.c.blob_dir);
    if (open_database(&g, err, sizeof err)) return 1;
    log_start(&g, swept);
    raise_fd_limit(&g);

    g.loop = uv_default_loop();
    if (start_workers(&g, err, sizeof err)) return 1;
    if (start_http(&g, err, sizeof err) || start_webhooks(&g, err, sizeof err)) {
        sup_kill_all(g.sup);
        return 1;
    }
    announce_listening(&g);
    watch_signals(&g);

    uv_run(g.loop, UV_RUN_DEFAULT);

    close_all(&g, lock_fd);
    return 0;
}
