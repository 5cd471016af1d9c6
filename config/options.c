/*
 * options.c: see options.h.
 */
#include <stdio.h>

#include "config/options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* "batch_size" and "batch-size" name the same option. */
static int same_name(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

/* The JSON name of an option: its words joined by '_' (the CLI's are joined by '-'). */
static void json_name(char *key, size_t n, const char *name) {
    snprintf(key, n, "%s", name);
    for (char *p = key; *p; p++) if (*p == '-') *p = '_';
}

static const opt_spec *find(const opt_spec *specs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (same_name(specs[i].name, name)) return &specs[i];
    return NULL;
}

/* Sets o from its text form. Messages name the option as `dash` + name: "--lr" on the command
 * line, "lr" in JSON (where the API reports them to users who never typed dashes). */
static int set_value(const opt_spec *o, const char *v, const char *dash, char *err,
                     size_t errlen) {
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_STR:
        *(const char **)o->dest = v;
        return 0;
    case OPT_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)o->dest = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)o->dest = 0;
        else break;
        return 0;
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno) break;
        if (x < o->min || x > o->max) {
            snprintf(err, errlen, "%s%s %ld is out of range [%g, %g]", dash, o->name, x, o->min, o->max);
            return -1;
        }
        *(int *)o->dest = (int)x;
        return 0;
    }
    case OPT_FLOAT_AUTO:
    case OPT_FLOAT: {
        if (o->type == OPT_FLOAT_AUTO && !strcmp(v, "auto")) {
            *(float *)o->dest = NAN;
            return 0;
        }
        double x = strtod(v, &end);
        /* ERANGE on underflow (1e-320) is still a number JSON accepts: the bounds judge it */
        if (end == v || *end || (errno && fabs(x) > 1) || !isfinite(x)) break;
        if (x < o->min || x > o->max) {
            snprintf(err, errlen, "%s%s %g is out of range [%g, %g]", dash, o->name, x, o->min, o->max);
            return -1;
        }
        *(float *)o->dest = (float)x;
        return 0;
    }
    }
    snprintf(err, errlen, "%s%s: '%s' is not a valid %s", dash, o->name, v,
             o->type == OPT_INT ? "integer" : o->type == OPT_FLOAT ? "number"
             : o->type == OPT_FLOAT_AUTO ? "number or \"auto\"" : "true/false");
    return -1;
}

int opt_is_auto(float v) { return isnan(v); }

int opt_parse_triple(const char *s, const char *name, double min, double max, float out[3],
                     char *err, size_t errlen) {
    double v[3];
    int n = 0;
    const char *p = s ? s : "";
    for (;;) {
        char *end;
        errno = 0;
        /* strtod skips leading blanks and takes "nan", "inf" and hex: only decimals here */
        if (n == 3 || !*p || !strchr("+-.0123456789", *p)) break;
        double x = strtod(p, &end);
        if (end == p || (errno && fabs(x) > 1) || !isfinite(x) ||
            memchr(p, 'x', (size_t)(end - p)) || memchr(p, 'X', (size_t)(end - p)))
            break;
        if (x < min || x > max) {
            snprintf(err, errlen, "%s %g is out of range [%g, %g]", name, x, min, max);
            return -1;
        }
        v[n++] = x;
        if (*end == '\0') {
            if (n == 2) break;
            for (int i = 0; i < 3; i++) out[i] = (float)v[n == 1 ? 0 : i];
            return 0;
        }
        if (*end != ',') break;
        p = end + 1;
    }
    snprintf(err, errlen, "%s: '%.64s' must be one number or three separated by commas "
             "(e.g. 0.5 or 0.485,0.456,0.406)", name, s ? s : "");
    return -1;
}

void opt_defaults(const opt_spec *specs, int n) {
    char err[256];
    for (int i = 0; i < n; i++) {
        const opt_spec *o = &specs[i];
        if (o->type == OPT_STR) *(const char **)o->dest = o->def;
        else if (o->type == OPT_FLAG) *(int *)o->dest = o->def && !strcmp(o->def, "1");
        else set_value(o, o->def ? o->def : "0", "", err, sizeof err);
    }
}

static int listed(const char *const *skip, const char *key) {
    for (; skip && *skip; skip++)
        if (!strcmp(*skip, key)) return 1;
    return 0;
}

int opt_apply_json(const opt_spec *specs, int n, json_t *obj, const char *const *skip,
                   const char **field, char *err, size_t errlen) {
    if (field) *field = NULL;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "config must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (listed(skip, key)) continue;
        if (field) *field = key;
        const opt_spec *o = find(specs, n, key);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s'", key);
            return -1;
        }
        char buf[64];
        const char *text = NULL;
        if (json_is_string(v) && o->type == OPT_STR) {
            /* the JSON value dies with obj: keep a copy for the life of the program */
            *(const char **)o->dest = strdup(json_string_value(v));
            continue;
        } else if (json_is_integer(v) && o->type != OPT_STR) {
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
            text = buf;
        } else if (json_is_real(v) && (o->type == OPT_FLOAT || o->type == OPT_FLOAT_AUTO)) {
            snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
            text = buf;
        } else if (json_is_boolean(v) && o->type == OPT_FLAG) {
            text = json_is_true(v) ? "1" : "0";
        } else if (json_is_string(v) && o->type == OPT_FLOAT_AUTO &&
                   !strcmp(json_string_value(v), "auto")) {
            text = "auto";
        } else {
            snprintf(err, errlen, "'%s' must be %s", key,
                     o->type == OPT_STR ? "a string" : o->type == OPT_INT ? "an integer"
                     : o->type == OPT_FLOAT ? "a number"
                     : o->type == OPT_FLOAT_AUTO ? "a number or \"auto\"" : "true or false");
            return -1;
        }
        if (set_value(o, text, "", err, errlen)) return -1;
    }
    if (field) *field = NULL;
    return 0;
}

int opt_parse(const opt_spec *specs, int n, int argc, char **argv, char *err, size_t errlen) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) {
            snprintf(err, errlen, "unexpected argument '%s'", a);
            return -1;
        }
        char name[128];
        const char *eq = strchr(a + 2, '='), *val = NULL;
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
        if (eq) val = eq + 1;
        if (!strcmp(name, "config")) {
            if (!val && i + 1 < argc) val = argv[++i];
            json_error_t je;
            json_t *obj = val ? json_load_file(val, 0, &je) : NULL;
            if (!obj) {
                snprintf(err, errlen, "--config %s: %s (line %d)", val ? val : "(missing)",
                         val ? je.text : "needs a file", val ? je.line : 0);
                return -1;
            }
            int rc = opt_apply_json(specs, n, obj, NULL, NULL, err, errlen);
            json_decref(obj);
            if (rc) return -1;
            continue;
        }
        const opt_spec *o = find(specs, n, name);
        if (!o && !strncmp(name, "no-", 3) && (o = find(specs, n, name + 3)) && o->type == OPT_FLAG) {
            *(int *)o->dest = 0;
            continue;
        }
        if (!o) {
            snprintf(err, errlen, "unknown option --%s (see --help)", name);
            return -1;
        }
        if (o->type == OPT_FLAG && !val) {
            *(int *)o->dest = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return -1;
            }
            val = argv[++i];
        }
        if (set_value(o, val, "--", err, errlen)) return -1;
    }
    return 0;
}

void opt_print_help(const opt_spec *specs, int n, FILE *f) {
    for (int i = 0; i < n; i++) {
        const opt_spec *o = &specs[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s", o->name,
                 o->type == OPT_FLAG ? "" : o->type == OPT_STR ? " S" : o->type == OPT_INT ? " N"
                 : o->type == OPT_FLOAT_AUTO ? " X|auto" : " X");
        fprintf(f, "  %-24s %s", left, o->help);
        if (o->def && o->type != OPT_FLAG) fprintf(f, " (default %s)", o->def);
        fputc('\n', f);
    }
}

/* A float as the shortest decimal that reads back to it (1e-4, not 9.9999997473787516e-05):
 * specs and reports are read by people. */
static json_t *json_float(float x) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtof(buf, NULL) == x) break;
    }
    return json_real(strtod(buf, NULL));
}

json_t *opt_to_json(const opt_spec *specs, int n) {
    json_t *obj = json_object();
    for (int i = 0; i < n; i++) {
        const opt_spec *o = &specs[i];
        char key[128];
        json_name(key, sizeof key, o->name);
        json_t *v;
        switch (o->type) {
        case OPT_INT: v = json_integer(*(int *)o->dest); break;
        case OPT_FLOAT: v = json_float(*(float *)o->dest); break;
        case OPT_FLOAT_AUTO:
            v = opt_is_auto(*(float *)o->dest) ? json_string("auto") : json_float(*(float *)o->dest);
            break;
        case OPT_FLAG: v = json_boolean(*(int *)o->dest); break;
        default: v = *(const char **)o->dest ? json_string(*(const char **)o->dest) : json_null();
        }
        json_object_set_new(obj, key, v);
    }
    return obj;
}


json_t *opt_schema(const opt_spec *specs, int n) {
    json_t *props = json_object();
    for (int i = 0; i < n; i++) {
        const opt_spec *o = &specs[i];
        char key[128];
        json_name(key, sizeof key, o->name);
        json_t *p = json_object(), *num = NULL;
        switch (o->type) {
        case OPT_INT: json_object_set_new(p, "type", json_string("integer")); num = p; break;
        case OPT_FLOAT: json_object_set_new(p, "type", json_string("number")); num = p; break;
        case OPT_FLAG: json_object_set_new(p, "type", json_string("boolean")); break;
        case OPT_STR: json_object_set_new(p, "type", json_string("string")); break;
        case OPT_FLOAT_AUTO:
            /* {"oneOf": [{"type": "number", bounds}, {"const": "auto"}]} */
            num = json_pack("{s:s}", "type", "number");
            json_object_set_new(p, "oneOf", json_pack("[o,{s:s}]", num, "const", "auto"));
            break;
        }
        if (num) {
            json_object_set_new(num, "minimum", json_real(o->min));
            json_object_set_new(num, "maximum", json_real(o->max));
        }
        if (o->def) {
            json_t *d;
            if (o->type == OPT_INT) d = json_integer(strtoll(o->def, NULL, 10));
            else if (o->type == OPT_FLOAT) d = json_float(strtof(o->def, NULL));
            else if (o->type == OPT_FLAG) d = json_boolean(!strcmp(o->def, "1"));
            else if (o->type == OPT_FLOAT_AUTO && strcmp(o->def, "auto"))
                d = json_float(strtof(o->def, NULL));
            else d = json_string(o->def);
            json_object_set_new(p, "default", d);
        }
        json_object_set_new(p, "description", json_string(o->help));
        json_object_set_new(props, key, p);
    }
    return props;
}
