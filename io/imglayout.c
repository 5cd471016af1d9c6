/*
 * imglayout.c: the layout rules of an uploaded image folder (see imglayout.h).
 */
#include "io/imglayout.h"

#include <stdlib.h>
#include <string.h>

#include "io/imgmsg.h"
#include "util/utf8.h"

void imglayout_free(imglayout *l) {
    for (int i = 0; i < l->nclasses; i++) free(l->classes[i]);
    free(l->classes);
    free(l->count[0]);
    free(l->count[1]);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits rel into its first component, the class (second) and the rest: returns the number of
 * components (as many as slashes + 1); *cls and *clslen give the second one, if any. */
static int split_rel(const char *rel, const char **cls, size_t *clslen) {
    int n = 1;
    *cls = NULL;
    *clslen = 0;
    for (const char *p = rel; *p; p++) {
        if (*p != '/') continue;
        n++;
        if (n == 2) {
            *cls = p + 1;
            const char *e = strchr(p + 1, '/');
            *clslen = e ? (size_t)(e - p - 1) : strlen(p + 1);
        }
    }
    return n;
}

static int split_of(const char *rel) {
    if (!strncmp(rel, "train", 5) && (rel[5] == '/' || !rel[5])) return 0;
    if (!strncmp(rel, "val", 3) && (rel[3] == '/' || !rel[3])) return 1;
    return -1;
}

/* A class name list under construction (unsorted, with duplicates until finished). */
typedef struct { char **v; int n, cap; } name_list;

static int names_add(name_list *s, const char *p, size_t len) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        char **q = realloc(s->v, (size_t)cap * sizeof *q);
        if (!q) return -1;
        s->v = q;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strndup(p, len))) return -1;
    s->n++;
    return 0;
}

/* Sorts and removes duplicates. */
static void names_finish(name_list *s) {
    if (!s->n) return;
    qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_str);
    int o = 1;
    for (int i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[o - 1])) s->v[o++] = s->v[i];
        else free(s->v[i]);
    }
    s->n = o;
}

static void names_free(name_list *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int find_class(const imglayout *l, const char *p, size_t len) {
    int lo = 0, hi = l->nclasses - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strncmp(l->classes[mid], p, len);
        if (!c && l->classes[mid][len]) c = 1;
        if (!c) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Orders members by split, label, then path (file name within a class). */
static int cmp_member(const void *a, const void *b) {
    const imgwalk_member *x = a, *y = b;
    if (x->split != y->split) return x->split - y->split;
    if (x->label != y->label) return x->label - y->label;
    return strcmp(x->rel, y->rel);
}

void imglayout_sort(imgwalk_member *files, int64_t n) {
    if (n) qsort(files, (size_t)n, sizeof *files, cmp_member);
}

int imglayout_resolve(imgwalk *w, imglayout *l, char *err, size_t errlen) {
    char shown[IMGMSG_NAME_BUF];
    memset(l, 0, sizeof *l);
    /* One common top-level folder (mydata/train/..., the way people archive a folder) is
     * dropped, unless it is itself train or val. */
    size_t plen = 0;
    if (w->nfiles) {
        const char *first = w->files[0].path, *slash = strchr(first, '/');
        if (slash) plen = (size_t)(slash - first) + 1;
        if (plen && split_of(first) >= 0) plen = 0;
        for (int64_t i = 0; plen && i < w->nfiles; i++)
            if (strncmp(w->files[i].path, first, plen)) plen = 0;
    }
    for (int64_t i = 0; i < w->nfiles; i++) w->files[i].rel = w->files[i].path + plen;

    /* Directories count for class folders (to find empty ones) and for train/ existing. */
    name_list names[2] = {{0}};
    int rc = -1, have_train = 0;
    for (int64_t i = 0; i < w->ndirs; i++) {
        const char *d = w->dirs[i];
        if (plen && (strncmp(d, w->files[0].path, plen - 1) || (d[plen - 1] && d[plen - 1] != '/')))
            continue; /* outside the top-level folder: holds no files, or plen would be 0 */
        const char *rel = plen ? (d[plen - 1] ? d + plen : "") : d;
        int sp = split_of(rel);
        if (sp < 0) continue;
        have_train |= sp == 0;
        const char *cls;
        size_t clen;
        if (split_rel(rel, &cls, &clen) >= 2 && names_add(&names[sp], cls, clen)) goto oom;
    }
    for (int64_t i = 0; i < w->nfiles; i++)
        if (split_of(w->files[i].rel) == 0) have_train = 1;
    if (!w->nfiles) {
        imgmsg_err(err, errlen,
                   "the archive holds no images: expected train/<class>/<image> (.jpg, .jpeg or "
                   ".png), optionally val/<class>/<image>, optionally inside one top-level folder");
        goto out;
    }
    if (!have_train && !plen) {
        /* one/train/... next to something else: name what breaks the single top folder */
        const char *first = w->files[0].path, *slash = strchr(first, '/');
        if (slash && split_of(slash + 1) >= 0) {
            size_t tlen = (size_t)(slash - first) + 1;
            for (int64_t i = 1; i < w->nfiles; i++)
                if (strncmp(w->files[i].path, first, tlen)) {
                    imgmsg_name(shown, sizeof shown, w->files[i].name);
                    imgmsg_err(err, errlen, "member '%s' is outside %.*s, the top-level folder "
                               "that holds train/ or val/", shown, (int)tlen, first);
                    goto out;
                }
        }
    }
    if (!have_train) {
        imgmsg_err(err, errlen,
                   "the archive has no train/ folder: expected train/<class>/<image> (.jpg, .jpeg "
                   "or .png), optionally val/<class>/<image>, optionally inside one top-level "
                   "folder");
        goto out;
    }
    for (int64_t i = 0; i < w->nfiles; i++) {
        imgwalk_member *m = &w->files[i];
        int sp = split_of(m->rel);
        const char *cls;
        size_t clen;
        int depth = split_rel(m->rel, &cls, &clen);
        imgmsg_name(shown, sizeof shown, m->name);
        if (sp < 0) {
            imgmsg_err(err, errlen, "member '%s' is outside train/ and val/", shown);
            goto out;
        }
        const char *sn = sp ? "val" : "train";
        if (depth == 2) {
            imgmsg_err(err, errlen, "member '%s' is directly in %s/: images go in %s/<class>/",
                       shown, sn, sn);
            goto out;
        }
        if (depth > 3) {
            imgmsg_err(err, errlen, "member '%s' is nested too deep: expected %s/<class>/<image>",
                       shown, sn);
            goto out;
        }
        m->split = sp;
        if (names_add(&names[sp], cls, clen)) goto oom;
    }
    names_finish(&names[0]);
    names_finish(&names[1]);
    if (!names[0].n) {
        imgmsg_err(err, errlen, "train/ has no class folders: expected train/<class>/<image>");
        goto out;
    }
    for (int i = 0; i < names[0].n; i++)
        if (!utf8_valid(names[0].v[i])) {
            imgmsg_name(shown, sizeof shown, names[0].v[i]);
            imgmsg_err(err, errlen, "class folder 'train/%s/': the name is not valid UTF-8", shown);
            goto out;
        }
    /* The layout takes train's names. */
    l->classes = names[0].v;
    l->nclasses = names[0].n;
    names[0] = (name_list){0};
    for (int i = 0; i < names[1].n; i++)
        if (find_class(l, names[1].v[i], strlen(names[1].v[i])) < 0) {
            imgmsg_name(shown, sizeof shown, names[1].v[i]);
            imgmsg_err(err, errlen, "folder 'val/%s/': train/ has no class '%s'", shown, shown);
            goto out;
        }
    l->count[0] = calloc((size_t)l->nclasses, sizeof(int64_t));
    l->count[1] = calloc((size_t)l->nclasses, sizeof(int64_t));
    if (!l->count[0] || !l->count[1]) goto oom;
    for (int64_t i = 0; i < w->nfiles; i++) {
        imgwalk_member *m = &w->files[i];
        const char *cls;
        size_t clen;
        split_rel(m->rel, &cls, &clen);
        m->label = find_class(l, cls, clen);
        l->count[m->split][m->label]++;
        l->n[m->split]++;
    }
    for (int i = 0; i < l->nclasses; i++)
        if (!l->count[0][i]) {
            imgmsg_name(shown, sizeof shown, l->classes[i]);
            imgmsg_err(err, errlen, "class folder 'train/%s/' has no images", shown);
            goto out;
        }
    imglayout_sort(w->files, w->nfiles);
    for (int64_t i = 1; i < w->nfiles; i++)
        if (!strcmp(w->files[i].rel, w->files[i - 1].rel)) {
            imgmsg_name(shown, sizeof shown, w->files[i].name);
            imgmsg_err(err, errlen, "member '%s' appears twice in the archive", shown);
            goto out;
        }
    rc = 0;
    goto out;
oom:
    imgmsg_err(err, errlen, "out of memory");
out:
    names_free(&names[0]);
    names_free(&names[1]);
    if (rc) imglayout_free(l);
    return rc;
}
