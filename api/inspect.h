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
 *
 * Bounds (issue 15: bombs ran the inspector to gigabytes, and six at once ran six): at most
 * max_running inspections at once per inspector, the next one refused at once (INSPECT_EBUSY)
 * rather than queued, since each holds an HTTP thread and up to memory_bytes; and the child is
 * told its limits on its command line (--max-memory, --max-cpu-s, appended to args), which it
 * applies with setrlimit before it opens the upload. Why the child sets them and gplqd does
 * not (prlimit after posix_spawn): the child is running by the time posix_spawn returns, so
 * a limit set from outside lands at a moment nobody chose, possibly during its libraries'
 * start-up (OpenBLAS retries a failed 128 MB buffer forever); set by the child, it is in
 * force before the first byte of the upload is read, and measured from what the program
 * already holds, which varies with the machine's cores.
 */
#ifndef GPLQ_INSPECT_H
#define GPLQ_INSPECT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum {
    INSPECT_OK = 0,      /* the child answered; *out holds its object, ok true or false */
    INSPECT_EFAIL = -1,  /* the child crashed, timed out or printed no JSON: err says how */
    INSPECT_ESPAWN = -2, /* the program could not be started (a server problem, not the upload's) */
    INSPECT_EBUSY = -3,  /* max_running inspections are running: try again later (a 503) */
};

/* The Retry-After of an INSPECT_EBUSY answer, in seconds: about what a typical upload's
 * inspection takes, so that a client retrying then finds a free slot more often than not. */
#define INSPECT_RETRY_AFTER_S 10

/* An inspector: the program, its limits and the count of inspections running. The caller
 * fills the first four fields and zeroes running; one inspector is shared by every thread. */
typedef struct {
    const char *bin;         /* gplq-worker (borrowed, lives as long as the inspector) */
    int timeout_ms;          /* wall clock; also the child's CPU-time limit, rounded up to s */
    int max_running;         /* inspections at once; past it INSPECT_EBUSY (0: no cap) */
    int64_t memory_bytes;    /* the child's RLIMIT_AS beyond what its program holds (0: none) */
    atomic_int running;      /* inspections running now (inspect_run's own) */
} inspector;

/* 1, with the refusal's message in err, if an inspection asked for now would get INSPECT_EBUSY;
 * else 0. For refusing an upload at its headers rather than after its body: only a hint, since
 * a slot may free up or be taken while the body arrives (inspect_run decides). */
int inspect_busy(inspector *in, char *err, size_t errlen);

/* Runs in->bin with args (a NULL-terminated list, not including argv[0]; at most 58) and then
 * the limits, for at most in->timeout_ms. stdin is /dev/null, stderr is inherited (the child's
 * diagnostics join the daemon's log). On INSPECT_OK *out is a new object (json_decref);
 * otherwise *out is NULL and err holds the reason. */
int inspect_run(inspector *in, const char *const *args, json_t **out, char *err, size_t errlen);

#endif
