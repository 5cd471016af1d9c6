/*
 * command.h: the prologue every `gplq` subcommand shares: option defaults, --help, parsing.
 */
#ifndef GPLQ_COMMAND_H
#define GPLQ_COMMAND_H

#include "config/options.h"

/* Sets specs to their defaults, then answers "--help" (usage and options on stdout) or parses
 * argv. Returns -1 to go on, else the exit code: 0 after --help, 2 on a bad option (the
 * message on stderr as "gplq NAME: ..."). */
int command_parse(const char *name, const char *usage_args, const opt_spec *specs, int n,
                  int argc, char **argv);

#endif
