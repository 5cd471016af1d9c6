/*
 * inspect.c: see inspect.h.
 */
#include "api/inspect.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/clock.h"

extern char **environ;

/* The answer is one line of JSON; a model config or a dataset summary is a few kilobytes. More
 * than this is a broken child, and reading it all would let it fill our memory. */
#define INSPECT_MAX_OUTPUT (1 << 20)

/* Starts in->bin with args and then the limits the child applies to itself (inspect.h says
 * why it is the child), stdout on out_fd. Returns its pid, or -1 with err. */
static pid_t spawn_child(const inspector *in, const char *const *args, int out_fd, char *err,
                         size_t errlen) {
    const char *argv[64];
    char mem[32], cpu[32];
    int n = 0;
    argv[n++] = in->bin;
    for (int i = 0; args && args[i] && n < 59; i++) argv[n++] = args[i];
    if (in->memory_bytes > 0) {
        snprintf(mem, sizeof mem, "%lld", (long long)in->memory_bytes);
        argv[n++] = "--max-memory", argv[n++] = mem;
    }
    /* the CPU limit is the wall-clock one: a child that outlives gplqd (which would have
     * killed it at the deadline) stops by itself */
    snprintf(cpu, sizeof cpu, "%d", (in->timeout_ms + 999) / 1000);
    argv[n++] = "--max-cpu-s", argv[n++] = cpu;
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawnattr_init(&at);
    /* gplqd ignores SIGPIPE and libuv handles SIGCHLD; the child starts clean. */
    sigset_t def, none;
    sigemptyset(&def);
    int sigs[] = {SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&def, sigs[i]);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, in->bin, &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc) {
        snprintf(err, errlen, "cannot start the inspector %s: %s", in->bin, strerror(rc));
        return -1;
    }
    return pid;
}

/* Runs one inspection once a slot is held: spawn, read the answer, reap. */
static int run_child(const inspector *in, const char *const *args, json_t **out, char *err,
                     size_t errlen) {
    int timeout_ms = in->timeout_ms;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return INSPECT_ESPAWN;
    }
    pid_t pid = spawn_child(in, args, pfd[1], err, errlen);
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        return INSPECT_ESPAWN;
    }

    char *buf = malloc(INSPECT_MAX_OUTPUT);
    size_t len = 0;
    int timed_out = 0;
    double deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - clock_mono_ms());
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            timed_out = r == 0;
            break;
        }
        char chunk[4096];
        ssize_t got = read(pfd[0], chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* EOF: the child closed its stdout, normally by exiting */
        /* Past the cap the child keeps being drained (so it never blocks on a full pipe) but
         * its output is dropped. */
        size_t keep = buf && len < INSPECT_MAX_OUTPUT ? INSPECT_MAX_OUTPUT - len : 0;
        if ((size_t)got < keep) keep = (size_t)got;
        if (keep) memcpy(buf + len, chunk, keep), len += keep;
    }
    close(pfd[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }

    int rc = INSPECT_EFAIL;
    if (timed_out) {
        snprintf(err, errlen, "the inspection did not finish within %d s", timeout_ms / 1000);
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU) {
        snprintf(err, errlen, "the inspection used more than %d s of CPU time, the limit",
                 (timeout_ms + 999) / 1000);
    } else if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "the inspector crashed on this file (signal %d, %s)",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else {
        /* The answer is the first line; anything after it is not part of the contract. */
        size_t line = 0;
        while (buf && line < len && buf[line] != '\n') line++;
        json_error_t je;
        json_t *obj = buf && line ? json_loadb(buf, line, 0, &je) : NULL;
        if (json_is_object(obj) && json_is_boolean(json_object_get(obj, "ok"))) {
            *out = obj;
            rc = INSPECT_OK;
        } else {
            json_decref(obj);
            snprintf(err, errlen, "the inspector gave no JSON answer (exit status %d)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
    }
    free(buf);
    return rc;
}

/* 1 with the refusal's message if `now` running inspections take every slot. */
static int full(const inspector *in, int now, char *err, size_t errlen) {
    if (in->max_running <= 0 || now < in->max_running) return 0;
    snprintf(err, errlen, "the server is inspecting %d uploads, the most it does at once; send "
             "this one again in %d s", in->max_running, INSPECT_RETRY_AFTER_S);
    return 1;
}

int inspect_busy(inspector *in, char *err, size_t errlen) {
    return full(in, atomic_load(&in->running), err, errlen);
}

int inspect_run(inspector *in, const char *const *args, json_t **out, char *err, size_t errlen) {
    *out = NULL;
    /* A slot is taken by a compare-and-swap of the count: no lock, never more than
     * max_running children, and no refusal while a slot is free. */
    int now = atomic_load(&in->running);
    do {
        if (full(in, now, err, errlen)) return INSPECT_EBUSY;
    } while (!atomic_compare_exchange_weak(&in->running, &now, now + 1));
    int rc = run_child(in, args, out, err, errlen);
    atomic_fetch_sub(&in->running, 1);
    return rc;
}
