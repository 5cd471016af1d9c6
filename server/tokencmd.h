/*
 * tokencmd.h: `gplqd token create|list|revoke`, the operator's commands for API tokens, and the
 * first token gplqd makes on its first start.
 *
 * They work on the data directory's database directly (--data-dir, or --config like gplqd), so
 * they run whether or not the daemon is up; a revoked token is refused from the next request
 * on, since the daemon looks every token up.
 */
#ifndef GPLQ_TOKENCMD_H
#define GPLQ_TOKENCMD_H

#include <stdio.h>

#include "storage/store.h"

/* `gplqd token ...`: argv[0] is "token". Prints to stdout/stderr; returns the exit status. */
int tokencmd_main(int argc, char **argv);

/* When the database has never had a token, creates an admin token named "admin" and prints
 * {"event":"token","id":..,"name":"admin","admin":true,"token":".."} on out (the daemon's
 * stdout, read by scripts and the test harness), and a log line without the secret saying so.
 * 0 (also when nothing was needed), or -1 with err. */
int tokencmd_bootstrap(store *st, FILE *out, char *err, size_t errlen);

#endif
