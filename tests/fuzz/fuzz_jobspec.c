/*
 * fuzz_jobspec.c: libFuzzer harness of the job options (config/jobspec.h, config/options.h):
 * the JSON body of POST /v1/jobs as the handler reads it (json_loadb with duplicate keys
 * refused, then jobspec_apply_json skipping the service's own keys), and the same options as
 * `gplq quantize` flags (opt_parse on "--name=value" arguments made from the body's members).
 *
 * The contract checked: a refused body has a message; an accepted one resolves to a spec whose
 * JSON (what the job row stores and a worker reads back) is accepted again and resolves to
 * the same JSON.
 */
#include "config/jobspec.h"
#include "tests/fuzz/fuzz.h"

static const char *const service_keys[] = {"model_id", "dataset_id", "max_attempts", "webhook",
                                           NULL};

static int is_service_key(const char *key) {
    for (const char *const *k = service_keys; *k; k++)
        if (!strcmp(*k, key)) return 1;
    return 0;
}

/* The body's members as command-line flags; "config" is left out (it would read a file). */
static void as_flags(json_t *body) {
    size_t n = json_object_size(body);
    int argc = 0;
    char **argv = calloc(n ? n : 1, sizeof *argv);
    if (!argv) return;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        if (!strcmp(key, "config") || is_service_key(key)) continue;
        char *text = json_is_string(v) ? strdup(json_string_value(v))
                                       : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!text) continue;
        if (asprintf(&argv[argc], "--%s=%s", key, text) >= 0) argc++;
        free(text);
    }
    jobspec js;
    jobspec_defaults(&js);
    opt_spec t[JOBSPEC_NOPTS];
    jobspec_table(&js, t);
    char err[256] = "";
    if (opt_parse(t, JOBSPEC_NOPTS, argc, argv, err, sizeof err)) fuzz_check_err(err, sizeof err);
    for (int i = 0; i < argc; i++) free(argv[i]);
    free(argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t je;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (!body) return 0;
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    jobspec js;
    jobspec_defaults(&js);
    const char *field = NULL;
    char err[256] = "";
    if (jobspec_apply_json(&js, body, service_keys, &field, err, sizeof err) == 0) {
        json_t *spec = jobspec_to_json(&js);
        if (fuzz_verbose()) {
            char *s = json_dumps(spec, JSON_COMPACT);
            fuzz_say("accepted", s);
            free(s);
        }
        jobspec again;
        jobspec_defaults(&again);
        err[0] = '\0';
        if (jobspec_apply_json(&again, spec, jobspec_refs, NULL, err, sizeof err)) {
            fprintf(stderr, "fuzz: the resolved spec is refused: %s\n", err);
            abort();
        }
        json_t *spec2 = jobspec_to_json(&again);
        if (!json_equal(spec, spec2)) {
            char *a = json_dumps(spec, JSON_SORT_KEYS), *b = json_dumps(spec2, JSON_SORT_KEYS);
            fprintf(stderr, "fuzz: the spec does not read back the same:\n%s\n%s\n", a, b);
            abort();
        }
        json_decref(spec2);
        json_decref(spec);
    } else {
        fuzz_check_err(err, sizeof err);
        fuzz_say("refused", err);
        if (!field) abort(); /* a refused option is named (the API's "field") */
    }
    as_flags(body);
    json_decref(body);
    return 0;
}
