/*
 * command.c: see command.h.
 */
#include "cli/command.h"

#include <stdio.h>
#include <string.h>

int command_parse(const char *name, const char *usage_args, const opt_spec *specs, int n,
                  int argc, char **argv) {
    char err[1024];
    opt_defaults(specs, n);
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: gplq %s %s\n", name, usage_args);
        opt_print_help(specs, n, stdout);
        return 0;
    }
    if (opt_parse(specs, n, argc, argv, err, sizeof err)) {
        fprintf(stderr, "gplq %s: %s\n", name, err);
        return 2;
    }
    return -1;
}
