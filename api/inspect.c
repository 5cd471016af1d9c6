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

static pid_t spawn_child(const char *bin, const char *const *args, int out_fd, char *err,
                         size_t errlen) {
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args && args[i] && n < 63; i++) argv[n++] = args[i];
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
    int rc = posix_spawn(&pid, bin, &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc) {
        snprintf(err, errlen, "cannot start the inspector %s: %s", bin, strerror(rc));
        return -1;
    }
    return pid;
}

int inspect_run(const char *bin, const char *const *args, int timeout_ms, json_t **out, char *err,
                size_t errlen) {
    *out = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return INSPECT_ESPAWN;
    }
    pid_t pid = spawn_child(bin, args, pfd[1], err, errlen);
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
