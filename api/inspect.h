/*
 * inspect.h: runs the upload inspector, `gplq-worker inspect-model PATH ...` or
 * `gplq-worker inspect-dataset PATH ...`, in a child process and reads its one JSON line.
 *
 * Why a child: an upload is untrusted bytes, and parsing it is the model and image code that
 * gplqd does not link (ARCHITECTURE.md). A malformed file that crashes or hangs the parser
 * kills or times out the child, never the daemon. The child's contract: print ONE line,
 * {"ok":true,...} (exit 0) or {"ok":false,"error":"..."} (exit 1).
 *
 * Safe to call from any thread: posix_spawn, a pipe with O_CLOEXEC, poll with a deadline,
 * waitpid on the child's own pid (never -1, so libuv's children are left alone).
 */
#ifndef GPLQ_INSPECT_H
#define GPLQ_INSPECT_H

#include <stddef.h>

#include <jansson.h>

enum {
    INSPECT_OK = 0,      /* the child answered; *out holds its object, ok true or false */
    INSPECT_EFAIL = -1,  /* the child crashed, timed out or printed no JSON: err says how */
    INSPECT_ESPAWN = -2, /* the program could not be started (a server problem, not the upload's) */
};

/* Runs bin with args (a NULL-terminated list, not including argv[0]) for at most timeout_ms.
 * stdin is /dev/null, stderr is inherited (the child's diagnostics join the daemon's log).
 * On INSPECT_OK *out is a new object (json_decref); otherwise *out is NULL and err holds the
 * reason. */
int inspect_run(const char *bin, const char *const *args, int timeout_ms, json_t **out, char *err,
                size_t errlen);

#endif
