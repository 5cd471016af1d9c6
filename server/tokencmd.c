/*
 * tokencmd.c: see tokencmd.h.
 */
#include "server/tokencmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "config/layout.h"
#include "server/cfg.h"
#include "util/fs.h"
#include "util/jlog.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: gplqd token create --name NAME [--admin] [--json] [--data-dir DIR]\n"
            "       gplqd token list [--data-dir DIR]\n"
            "       gplqd token revoke ID|TOKEN [--data-dir DIR]\n\n"
            "  create   makes a token and prints it once (only its SHA-256 is kept). NAME owns\n"
            "           what the token's requests create; tokens of one NAME share it (rotate by\n"
            "           creating a new one, then revoking the old). --admin sees every owner's.\n"
            "  list     every token, revoked ones too (never the secrets), as JSON\n"
            "  revoke   refuses the token from the next request on; ID is \"t_...\", the id that\n"
            "           create and list show (a whole token works too)\n"
            "  --data-dir and --config are gplqd's own (default ./var).\n");
}

static void print_json(json_t *v) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s) printf("%s\n", s);
    free(s);
}

/* Mints and records a token; *row is the new row. first: only if the database has no token
 * (returns 1, nothing made, when it has). */
static int create(store *st, const char *name, int admin, int first, char *token, json_t **row,
                  char *err, size_t errlen) {
    char id[AUTH_ID_LEN + 1], hash[65];
    if (auth_token_new(token, id, hash)) {
        snprintf(err, errlen, "the system gave no random bytes (getrandom): no token made");
        return -1;
    }
    int rc = first ? store_token_insert_first(st, id, name, admin, hash, row)
                   : store_token_insert(st, id, name, admin, hash, row);
    if (rc == STORE_EEXISTS && first) return 1;
    if (rc) {
        snprintf(err, errlen, "%s", store_errmsg(st));
        return -1;
    }
    return 0;
}

int tokencmd_bootstrap(store *st, FILE *out, char *err, size_t errlen) {
    int64_t n = 0;
    if (store_token_count(st, &n)) {
        snprintf(err, errlen, "counting tokens: %s", store_errmsg(st));
        return -1;
    }
    /* Only a database that never had one: revoking every token is an operator's choice that a
     * restart must not undo. */
    if (n > 0) return 0;
    char token[AUTH_TOKEN_LEN + 1];
    json_t *row = NULL;
    /* Checked again under the write lock: another node of a cluster may be starting too. */
    int made = create(st, "admin", 1, 1, token, &row, err, errlen);
    if (made) return made < 0 ? -1 : 0;
    json_t *line = json_pack("{s:s, s:O, s:s, s:b, s:s}", "event", "token", "id",
                             json_object_get(row, "id"), "name", "admin", "admin", 1, "token",
                             token);
    char *s = json_dumps(line, JSON_COMPACT);
    if (s) fprintf(out, "%s\n", s);
    fflush(out);
    free(s);
    json_decref(line);
    jlog("warn", NULL,
         "first start: created the admin token %s (owner \"admin\"); the token itself is printed "
         "once, on stdout ({\"event\":\"token\",...}); send it as \"Authorization: Bearer TOKEN\"; "
         "make more with: gplqd token create --name NAME",
         json_string_value(json_object_get(row, "id")));
    json_decref(row);
    return 0;
}

int tokencmd_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "create") && strcmp(verb, "list") && strcmp(verb, "revoke")) {
        fprintf(stderr, "gplqd token: unknown command '%s'\n\n", verb);
        usage(stderr);
        return 2;
    }
    /* Our own flags out, the rest (--data-dir, --config, ...) to gplqd's configuration. */
    const char *name = NULL, *target = NULL;
    int admin = 0, as_json = 0, nrest = 0;
    char **rest = calloc((size_t)argc, sizeof *rest);
    if (!rest) return 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--name") && i + 1 < argc) name = argv[++i];
        else if (!strncmp(a, "--name=", 7)) name = a + 7;
        else if (!strcmp(a, "--admin")) admin = 1;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (a[0] != '-' && !target && !strcmp(verb, "revoke")) target = a;
        else {
            rest[nrest++] = argv[i];
            /* a flag's value goes with it */
            if (a[0] == '-' && !strchr(a, '=') && i + 1 < argc && argv[i + 1][0] != '-')
                rest[nrest++] = argv[++i];
        }
    }
    int status = 1;
    store *st = NULL;
    json_t *row = NULL;
    cfg c;
    char err[1024], path[4096];
    if (cfg_load(&c, nrest, rest, err, sizeof err)) {
        fprintf(stderr, "gplqd token: %s\n", err);
        status = 2;
        goto out;
    }
    if (!strcmp(verb, "create") && !auth_name_ok(name)) {
        fprintf(stderr, "gplqd token create: --name must be 1 to %d characters of letters, digits, "
                        "'.', '_' and '-', starting with a letter or digit\n", AUTH_NAME_MAX);
        status = 2;
        goto out;
    }
    if (!strcmp(verb, "revoke") && !target) {
        fprintf(stderr, "gplqd token revoke: which token? (its id, t_...)\n");
        status = 2;
        goto out;
    }
    if (fs_mkdirs(c.data_dir)) {
        fprintf(stderr, "gplqd token: cannot create %s: %s\n", c.data_dir, strerror(errno));
        goto out;
    }
    if (c.db) snprintf(path, sizeof path, "%s", c.db);
    else layout_db(path, sizeof path, c.data_dir);
    if (store_open(&st, path, c.busy_ms, err, sizeof err)) {
        fprintf(stderr, "gplqd token: %s\n", err);
        goto out;
    }
    if (!strcmp(verb, "create")) {
        char token[AUTH_TOKEN_LEN + 1];
        if (create(st, name, admin, 0, token, &row, err, sizeof err)) {
            fprintf(stderr, "gplqd token create: %s\n", err);
            goto out;
        }
        if (as_json) {
            json_object_set_new(row, "token", json_string(token));
            print_json(row);
        } else {
            /* stdout holds the token alone, for TOKEN=$(gplqd token create ...) */
            printf("%s\n", token);
            fprintf(stderr, "gplqd: token %s for owner '%s'%s; it is shown only now\n",
                    json_string_value(json_object_get(row, "id")), name, admin ? " (admin)" : "");
        }
        status = 0;
    } else if (!strcmp(verb, "list")) {
        if (store_token_list(st, &row)) {
            fprintf(stderr, "gplqd token list: %s\n", store_errmsg(st));
            goto out;
        }
        print_json(row);
        status = 0;
    } else {
        char id[AUTH_ID_LEN + 1], hash[65];
        if (!auth_token_parse(target, id, hash)) target = id; /* a whole token names its id */
        int rc = store_token_revoke(st, target, &row);
        if (rc) {
            fprintf(stderr, "gplqd token revoke: %s\n", store_errmsg(st));
            status = rc == STORE_ENOTFOUND ? 1 : rc == STORE_ECONFLICT ? 0 : 1;
            goto out;
        }
        print_json(row);
        status = 0;
    }
out:
    json_decref(row);
    store_close(st);
    free(rest);
    return status;
}
