/*
 * options.h: command-line options from a table, one line per option (name, type, where it goes,
 * default, bounds, help), in the redis manner. The same table parses `--name value`,
 * `--name=value`, a JSON config file of {"name": value} (with '-' or '_'), prints the help, and
 * dumps the resolved values as JSON for reports.
 */
#ifndef GPLQ_OPTIONS_H
#define GPLQ_OPTIONS_H

#include <jansson.h>
#include <stddef.h>

/* OPT_FLOAT_AUTO: a number, or the word "auto" for a value the program decides at run time
 * (stored as NAN: opt_is_auto; the resolved value belongs in the program's report). */
typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_FLOAT_AUTO } opt_type;

typedef struct {
    const char *name;      /* long option without the dashes, words joined by '-' */
    opt_type type;
    void *dest;            /* int *, float *, const char **, int * (flag), float * (auto) */
    const char *def;       /* default as text (NULL: none / unset) */
    double min, max;       /* bounds for numbers (inclusive) */
    const char *help;
} opt_spec;

/* Sets every option to its default. */
void opt_defaults(const opt_spec *specs, int n);
/* Parses argv[0..argc); unknown options and out-of-range values are errors naming the option.
 * "--config FILE" loads FILE (JSON) at that point. Positional arguments are not accepted. */
int opt_parse(const opt_spec *specs, int n, int argc, char **argv, char *err, size_t errlen);
/* Applies a JSON object of options. Keys listed in skip (NULL-terminated, or NULL) are left for
 * the caller. On an error, *field (if not NULL) names the offending key (borrowed from obj). */
int opt_apply_json(const opt_spec *specs, int n, json_t *obj, const char *const *skip,
                   const char **field, char *err, size_t errlen);
/* Prints usage lines for every option to f. */
void opt_print_help(const opt_spec *specs, int n, FILE *f);
/* The resolved values as a new JSON object (caller json_decref's). */
json_t *opt_to_json(const opt_spec *specs, int n);
/* The values as a JSON Schema object's "properties" (type, default, bounds, description): the
 * API's description of the same options. New reference (json_decref). */
json_t *opt_schema(const opt_spec *specs, int n);
/* 1 if an OPT_FLOAT_AUTO value is "auto". */
int opt_is_auto(float v);

/* A per-channel triple as people write it: "0.5" (one value for every channel) or
 * "0.485,0.456,0.406" (red, green, blue), each a finite number in [min, max]: the input mean
 * and std of a checkpoint that does not say them (`--mean`, `--std`, the upload's `mean` and
 * `std`). Fills out[3] (one value is copied to all three). 0, or -1 with a message that starts
 * with name ("std: '0,1' must be one number or three separated by commas"). */
int opt_parse_triple(const char *s, const char *name, double min, double max, float out[3],
                     char *err, size_t errlen);
/* The bounds every command and the API put on a given mean and std: pixels are in [0, 1]
 * before normalization, so a mean past them or a std of 0 or in 0..255 units is a mistake. */
#define OPT_MEAN_MIN (-10.0)
#define OPT_MEAN_MAX 10.0
#define OPT_STD_MIN 1e-3
#define OPT_STD_MAX 10.0

#endif
