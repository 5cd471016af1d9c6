/*
 * cfg.c: see cfg.h.
 */
#include "server/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/options.h"
#include "server/guard.h"

_Static_assert(GUARD_BODY_STEP == 16 * 1024, "body-timeout-s's help below says 16 KB");

#define CFG_NOPTS 37

static void table(cfg *c, opt_spec t[CFG_NOPTS]) {
    const opt_spec specs[CFG_NOPTS] = {
        {"listen", OPT_STR, &c->listen, "127.0.0.1:8080", 0, 0, "address and port to serve (port 0: any free port)"},
        {"data-dir", OPT_STR, &c->data_dir, "./var", 0, 0, "state: gplq.db, blobs/, tmp/, jobs/"},
        {"workers", OPT_INT, &c->workers, "2", 0, 64, "gplq-worker processes (0: API only)"},
        {"secret-key-file", OPT_STR, &c->secret_key_file, NULL, 0, 0, "the key webhook secrets are sealed under in the database (created 0600 if missing; default DATA/secret.key; keep it out of the database's backups to keep the secrets out of them)"},
        {"worker-bin", OPT_STR, &c->worker_bin, NULL, 0, 0, "the gplq-worker program (default: beside gplqd)"},
        {"worker-threads", OPT_INT, &c->worker_threads, "0", 0, 256, "threads per worker (0: cores / workers)"},
        {"http-threads", OPT_INT, &c->http_threads, "0", 0, 64, "HTTP threads (0: cores, at least 2)"},
        {"http-epoll", OPT_FLAG, &c->http_epoll, "0", 0, 0, "epoll instead of poll (faster; sees a client's close mid-upload only at the idle timeout)"},
        {"max-connections", OPT_INT, &c->max_connections, "512", 1, 65536, "open HTTP connections"},
        {"connection-timeout-s", OPT_INT, &c->connection_timeout_s, "120", 1, 86400, "idle seconds before a connection is closed"},
        {"head-timeout-s", OPT_INT, &c->head_timeout_s, "10", 1, 3600, "seconds from a connection's accept to the end of its request's headers (a kept-alive one's next request: this plus the idle seconds from the last answer); past it the connection is closed"},
        {"body-timeout-s", OPT_INT, &c->body_timeout_s, "20", 1, 3600, "seconds a request's body may take for each 16 KB of it, from the end of its headers; past it the connection is closed (a body trickled in to hold a connection)"},
        {"max-connections-per-ip", OPT_INT, &c->max_connections_per_ip, "128", 0, 65536, "open HTTP connections from one address; past it a new one is closed at once (0: no limit; behind a proxy every client has the proxy's address)"},
        {"max-model-bytes", OPT_STR, &c->max_model_text, "2G", 0, 0, "model upload limit (bytes, or K, M, G)"},
        {"max-dataset-bytes", OPT_STR, &c->max_dataset_text, "8G", 0, 0, "dataset upload limit (bytes, or K, M, G)"},
        {"max-json-bytes", OPT_INT, &c->max_json_bytes, "1048576", 64, 1 << 30, "JSON request body limit"},
        {"lease-ms", OPT_INT, &c->lease_ms, "30000", 1000, 86400000, "a worker's lease on its job; a silent worker loses it after this"},
        {"max-attempts", OPT_INT, &c->max_attempts, "3", 1, 100, "attempts of a job when its spec does not say"},
        {"shutdown-grace-s", OPT_INT, &c->shutdown_grace_s, "30", 0, 3600, "seconds workers get to checkpoint on SIGTERM before SIGKILL"},
        {"inspect-timeout-s", OPT_INT, &c->inspect_timeout_s, "300", 1, 86400, "seconds the upload inspector may take (wall clock, and its CPU-time limit)"},
        {"max-inspections", OPT_INT, &c->max_inspections, "2", 1, 256, "uploads inspected at once; past it a 503 with Retry-After"},
        {"inspect-memory", OPT_STR, &c->inspect_memory_text, "2G", 0, 0, "memory one upload inspection may use beyond its program and a model's mapped file (RLIMIT_AS; bytes, or K, M, G; 0: no limit)"},
        {"busy-ms", OPT_INT, &c->busy_ms, "10000", 0, 600000, "wait for the database's write lock held by another connection (SQLite's busy timeout, PostgreSQL's lock_timeout)"},
        {"max-queued-jobs", OPT_INT, &c->max_queued_jobs, "100", 0, 1000000, "queued jobs per owner; past it a 429 (0: no limit; admin tokens are exempt)"},
        {"max-event-streams", OPT_INT, &c->max_event_streams, "64", 1, 100000, "live event streams (GET /v1/jobs/{id}/events) open at once; past it a 503"},
        {"max-owner-event-streams", OPT_INT, &c->max_owner_event_streams, "16", 0, 100000, "live event streams one owner may hold open; past it a 429 (0: no limit; admin tokens are exempt)"},
        {"event-heartbeat-s", OPT_INT, &c->event_heartbeat_s, "15", 1, 3600, "seconds of silence before an event stream gets a keep-alive comment"},
        {"webhook-allow-hosts", OPT_STR, &c->webhook_allow_hosts, "", 0, 0, "hosts job webhooks may call, comma-separated (\"*.example.com\" for a domain); empty: any host with a public address"},
        {"webhook-max-attempts", OPT_INT, &c->webhook_max_attempts, "8", 1, 100, "attempts to deliver one webhook event before giving up"},
        {"webhook-backoff-ms", OPT_INT, &c->webhook_backoff_ms, "2000", 1, 3600000, "wait before a webhook's first retry, doubled for each next one (with jitter, at most an hour)"},
        {"webhook-timeout-ms", OPT_INT, &c->webhook_timeout_ms, "10000", 100, 600000, "time a webhook receiver has to answer (half of it to connect)"},
        {"webhook-concurrency", OPT_INT, &c->webhook_concurrency, "8", 1, 256, "webhook deliveries in flight at once"},
        {"max-owner-upload-bytes", OPT_STR, &c->max_owner_upload_text, "0", 0, 0, "models and datasets one owner may hold (bytes, or K, M, G; 0: no limit; admin tokens are exempt)"},
        {"db", OPT_STR, &c->db, NULL, 0, 0, "the database: a postgresql:// URL that the nodes of a cluster share (default: DATA/gplq.db, SQLite, this machine only)"},
        {"blob-dir", OPT_STR, &c->blob_dir, NULL, 0, 0, "uploads, checkpoints and artifacts (blobs/, tmp/, jobs/); for a cluster a shared file system every node mounts (default: DATA)"},
        {"node-name", OPT_STR, &c->node_name, NULL, 0, 0, "this node's name in a cluster, which its workers' leases carry (default: HOSTNAME.PID)"},
        {"mpi-launch", OPT_STR, &c->mpi_launch, "", 0, 0, "launcher for jobs that ask for \"mpi\": the start of a command line the worker completes with the rank program, e.g. \"mpirun -np 4 --hostfile /etc/gplq/hosts\" (the data dir at the same path on every host; as root add --allow-run-as-root); empty: such jobs fail"},
    };
    memcpy(t, specs, sizeof specs);
}

/* "1048576", "512K", "100M", "2G" (powers of 1024) into bytes; -1 if malformed. */
static int64_t parse_size(const char *s) {
    if (!s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0) return -1;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: return -1;
    }
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v > (INT64_MAX >> shift)) return -1;
    return (int64_t)v << shift;
}

/* A --config file: JSON whose size keys may be numbers, which options.h would refuse for a
 * text option; they are turned into text first. */
static int apply_file(opt_spec *t, const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *obj = path ? json_load_file(path, 0, &je) : NULL;
    if (!obj) {
        snprintf(err, errlen, "--config %s: %s (line %d)", path ? path : "(missing)",
                 path ? je.text : "needs a file", path ? je.line : 0);
        return -1;
    }
    static const char *const sizes[] = {"max_model_bytes", "max-model-bytes", "max_dataset_bytes",
                                        "max-dataset-bytes", "max_owner_upload_bytes",
                                        "max-owner-upload-bytes", "inspect_memory",
                                        "inspect-memory"};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        json_t *v = json_object_get(obj, sizes[i]);
        if (json_is_integer(v)) {
            char buf[32];
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
            json_object_set_new(obj, sizes[i], json_string(buf));
        }
    }
    int rc = opt_apply_json(t, CFG_NOPTS, obj, NULL, NULL, err, errlen);
    json_decref(obj);
    if (rc) {
        /* name the file: the message alone would not say where the bad key is */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, errlen, "--config %s: %s", path, msg);
    }
    return rc;
}

static int ncores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cfg_load(cfg *c, int argc, char **argv, char *err, size_t errlen) {
    opt_spec t[CFG_NOPTS];
    memset(c, 0, sizeof *c);
    table(c, t);
    opt_defaults(t, CFG_NOPTS);
    /* The arguments between two --config are parsed as one run, so that a later flag overrides
     * the file and the file overrides earlier flags, in the order given. */
    int start = 0;
    for (int i = 0; i <= argc; i++) {
        int is_cfg = i < argc && (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9));
        if (i < argc && !is_cfg) continue;
        if (opt_parse(t, CFG_NOPTS, i - start, argv + start, err, errlen)) return -1;
        if (!is_cfg) break;
        const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
        if (apply_file(t, path, err, errlen)) return -1;
        start = i + 1;
    }
    if ((c->max_model_bytes = parse_size(c->max_model_text)) <= 0) {
        snprintf(err, errlen, "max-model-bytes: '%s' is not a size (bytes, or with K, M, G)",
                 c->max_model_text ? c->max_model_text : "");
        return -1;
    }
    if ((c->max_dataset_bytes = parse_size(c->max_dataset_text)) <= 0) {
        snprintf(err, errlen, "max-dataset-bytes: '%s' is not a size (bytes, or with K, M, G)",
                 c->max_dataset_text ? c->max_dataset_text : "");
        return -1;
    }
    if ((c->max_owner_upload_bytes = parse_size(c->max_owner_upload_text)) < 0) {
        snprintf(err, errlen, "max-owner-upload-bytes: '%s' is not a size (bytes, or with K, M, G)",
                 c->max_owner_upload_text ? c->max_owner_upload_text : "");
        return -1;
    }
    if ((c->inspect_memory = parse_size(c->inspect_memory_text)) < 0) {
        snprintf(err, errlen, "inspect-memory: '%s' is not a size (bytes, or with K, M, G)",
                 c->inspect_memory_text ? c->inspect_memory_text : "");
        return -1;
    }
    if (!c->blob_dir) c->blob_dir = c->data_dir;
    int cores = ncores();
    if (c->worker_threads == 0) c->worker_threads = c->workers > 0 && cores / c->workers > 1 ? cores / c->workers : 1;
    if (c->http_threads == 0) c->http_threads = cores < 2 ? 2 : cores;
    if (!c->worker_bin) {
        /* Beside the running gplqd: build/gplqd spawns build/gplq-worker, an installed one
         * its installed sibling, whatever the current directory. */
        static char bin[PATH_MAX];
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            snprintf(err, errlen, "cannot find gplqd's own path (/proc/self/exe); pass --worker-bin");
            return -1;
        }
        self[n] = '\0';
        snprintf(bin, sizeof bin, "%s/gplq-worker", dirname(self));
        c->worker_bin = bin;
    }
    return 0;
}

void cfg_print_help(FILE *f) {
    cfg c;
    opt_spec t[CFG_NOPTS];
    table(&c, t);
    opt_print_help(t, CFG_NOPTS, f);
    fprintf(f, "  %-24s %s\n", "--config FILE", "JSON object of the settings above ('-' or '_')");
}

json_t *cfg_to_json(const cfg *c) {
    cfg copy = *c; /* the table binds mutable fields; reading through a copy keeps c const */
    opt_spec t[CFG_NOPTS];
    table(&copy, t);
    json_t *obj = opt_to_json(t, CFG_NOPTS);
    json_object_set_new(obj, "max_model_bytes", json_integer(c->max_model_bytes));
    json_object_set_new(obj, "max_dataset_bytes", json_integer(c->max_dataset_bytes));
    json_object_set_new(obj, "max_owner_upload_bytes", json_integer(c->max_owner_upload_bytes));
    json_object_set_new(obj, "inspect_memory", json_integer(c->inspect_memory));
    return obj;
}
