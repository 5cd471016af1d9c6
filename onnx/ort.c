/*
 * ort.c: see ort.h.
 */
#include "onnx/ort.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifndef GPLQ_SRC_DIR
#define GPLQ_SRC_DIR "."
#endif

static int write_all(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const char *p = data;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        p += k, n -= (size_t)k;
    }
    return close(fd);
}

/* Runs argv, its stdout into out (up to n - 1 bytes, NUL-terminated), stderr's tail into tail.
 * The exit status, or -1 if it could not start (errno). */
static int run_capture(char *const argv[], char *out, size_t n, char *tail, size_t tn) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC)) return -1;
    if (pipe2(pe, O_CLOEXEC)) {
        close(po[0]), close(po[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc) {
        close(po[0]), close(pe[0]);
        errno = rc;
        return -1;
    }
    /* both pipes at once (poll), so that a chatty stderr (ORT's warnings) cannot fill its pipe
     * and stall the child while we wait on stdout */
    size_t got = 0, tg = 0;
    char buf[4096];
    struct pollfd pf[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents) continue;
            ssize_t k = read(pf[i].fd, buf, sizeof buf);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0) {
                size_t c = got + (size_t)k < n - 1 ? (size_t)k : n - 1 - got;
                memcpy(out + got, buf, c);
                got += c;
            } else {
                for (ssize_t j = 0; j < k; j++) { /* keep stderr's last tn - 1 bytes */
                    if (tg == tn - 1) memmove(tail, tail + 1, --tg);
                    tail[tg++] = buf[j];
                }
            }
        }
    }
    out[got] = 0;
    tail[tg] = 0;
    close(po[0]);
    close(pe[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int onnx_ort_top1(const char *model, const ds_set *test, int threads, const char *tmpdir,
                  onnx_ort_result *r, char *err, size_t errlen) {
    char script[4096], pkg[4200], node_dir[4096];
    const char *s = getenv("GPLQ_ORT_EVAL");
    snprintf(script, sizeof script, "%s", s && *s ? s : GPLQ_SRC_DIR "/tools/onnx/ort_eval.mjs");
    snprintf(node_dir, sizeof node_dir, "%s", script);
    char *slash = strrchr(node_dir, '/');
    if (slash) *slash = 0;
    else snprintf(node_dir, sizeof node_dir, ".");
    snprintf(pkg, sizeof pkg, "%s/node_modules/onnxruntime-node/package.json", node_dir);
    struct stat st;
    if (stat(script, &st) || stat(pkg, &st)) {
        snprintf(err, errlen, "ONNX Runtime is not installed here (%s, and onnxruntime-node beside "
                 "it: npm ci in tools/onnx, or set GPLQ_ORT_EVAL)", script);
        return 1;
    }
    char px[4200], lb[4200], shape[128], th[16];
    snprintf(px, sizeof px, "%s/ort-pixels.%d.u8", tmpdir, (int)getpid());
    snprintf(lb, sizeof lb, "%s/ort-labels.%d.i32", tmpdir, (int)getpid());
    size_t npix = (size_t)test->n * test->channels * test->height * test->width;
    if (write_all(px, test->pixels, npix) ||
        write_all(lb, test->labels, sizeof(int32_t) * (size_t)test->n)) {
        snprintf(err, errlen, "cannot write the test set for ONNX Runtime into %s: %s", tmpdir,
                 strerror(errno));
        unlink(px), unlink(lb);
        return -1;
    }
    snprintf(shape, sizeof shape, "%d,%d,%d,%d", test->n, test->channels, test->height, test->width);
    snprintf(th, sizeof th, "%d", threads > 0 ? threads : 1);
    const char *node = getenv("GPLQ_NODE");
    char *argv[] = {(char *)(node && *node ? node : "node"), script, (char *)model, "--raw", px,
                    "--raw-labels", lb, "--shape", shape, "--threads", th, NULL};
    char out[4096], tail[512];
    int rc = run_capture(argv, out, sizeof out, tail, sizeof tail);
    int e = errno;
    unlink(px);
    unlink(lb);
    if (rc < 0) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(e));
        return e == ENOENT ? 1 : -1;
    }
    if (rc) {
        snprintf(err, errlen, "ONNX Runtime failed on %s (exit %d): %s", model, rc, tail);
        return -1;
    }
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    json_t *t = j ? json_object_get(j, "top1") : NULL;
    if (!json_is_number(t)) {
        snprintf(err, errlen, "ONNX Runtime's evaluation printed no top-1: %.200s", out);
        json_decref(j);
        return -1;
    }
    r->top1 = json_number_value(t);
    r->images = (int)json_integer_value(json_object_get(j, "images"));
    r->images_per_s = json_number_value(json_object_get(j, "images_per_s"));
    const char *rt = json_string_value(json_object_get(j, "runtime"));
    snprintf(r->runtime, sizeof r->runtime, "%s", rt ? rt : "onnxruntime");
    json_decref(j);
    return 0;
}
