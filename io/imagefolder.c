/*
 * imagefolder.c: uploaded image-folder datasets (see imagefolder.h). The archive walk and the
 * rules an upload must follow, JPEG and PNG decoding straight from the archive stream, the
 * timm-style eval transform (with its slow reference), the seeded held-out split, and the
 * packed cache file.
 */
#include "io/imagefolder.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/imgcache.h"
#include "io/imgmsg.h"
#include "io/imgwalk.h"
#include "io/resize.h"
#include "util/utf8.h"

void imgf_limits_default(imgf_limits *l) {
    l->max_images = 2000000;
    l->max_pixels = 50000000;
}

/* imagefolder.h's names for io/resize's eval transform. */
void imgf_eval_geometry(int w, int h, int size, int *rw, int *rh, int *left, int *top) {
    resize_eval_geometry(w, h, size, rw, rh, left, top);
}

int imgf_transform(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    return resize_eval(src, w, h, c, size, dst);
}

int imgf_transform_ref(const uint8_t *src, int w, int h, int c, int size, uint8_t *dst) {
    return resize_eval_ref(src, w, h, c, size, dst);
}

/* The layout of a walked archive: its classes and where each image belongs. */
typedef struct {
    char **classes;         /* (nclasses) sorted with strcmp, owned */
    int nclasses;
    int64_t *count[2];      /* (nclasses) images per class in train/ and val/ */
    int64_t n[2];           /* images in train/ and val/ */
} imgf_layout;

static void layout_free(imgf_layout *l) {
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
typedef struct { char **v; int n, cap; } imgf_names;

static int names_add(imgf_names *s, const char *p, size_t len) {
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
static void names_finish(imgf_names *s) {
    if (!s->n) return;
    qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_str);
    int o = 1;
    for (int i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[o - 1])) s->v[o++] = s->v[i];
        else free(s->v[i]);
    }
    s->n = o;
}

static void names_free(imgf_names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int find_class(const imgf_layout *l, const char *p, size_t len) {
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

/* Applies the layout rules to everything the walk found: strips the top-level folder, places
 * every image in train/ or val/ and a class, lists the classes, and sorts w->files by (split,
 * label, path). Returns 0 or -1 with err. */
static int resolve(imgwalk *w, imgf_layout *l, char *err, size_t errlen) {
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
    imgf_names names[2] = {{0}};
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
    names[0] = (imgf_names){0};
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
    if (w->nfiles) qsort(w->files, (size_t)w->nfiles, sizeof *w->files, cmp_member);
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
    if (rc) layout_free(l);
    return rc;
}

static const imgf_limits *limits_or_default(const imgf_limits *lim, imgf_limits *buf) {
    if (lim) return lim;
    imgf_limits_default(buf);
    return buf;
}

int imgf_inspect(const char *path, const imgf_limits *lim, json_t **summary, char *err,
                 size_t errlen) {
    imgf_limits defl;
    const imgf_limits *lims = limits_or_default(lim, &defl);
    imgwalk w = {.max_images = lims->max_images, .max_pixels = lims->max_pixels};
    imgf_layout l;
    *summary = NULL;
    if (imgwalk_run(path, &w, err, errlen) || resolve(&w, &l, err, errlen)) {
        imgwalk_free(&w);
        return -1;
    }
    /* Class names were checked to be UTF-8, so json_string cannot refuse them. */
    json_t *s = json_object(), *classes = json_array(), *per = json_object();
    json_t *tr = json_array(), *va = json_array();
    for (int i = 0; i < l.nclasses; i++) {
        json_array_append_new(classes, json_string(l.classes[i]));
        json_array_append_new(tr, json_integer(l.count[0][i]));
        json_array_append_new(va, json_integer(l.count[1][i]));
    }
    json_object_set_new(s, "format", json_string("imagefolder"));
    json_object_set_new(s, "classes", classes);
    json_object_set_new(s, "train", json_integer(l.n[0]));
    json_object_set_new(s, "val", json_integer(l.n[1]));
    json_object_set_new(per, "train", tr);
    json_object_set_new(per, "val", va);
    json_object_set_new(s, "per_class", per);
    int complete = json_array_size(json_object_get(s, "classes")) == (size_t)l.nclasses &&
                   json_array_size(json_object_get(per, "val")) == (size_t)l.nclasses &&
                   json_object_size(s) == 5 && json_object_size(per) == 2;
    layout_free(&l);
    imgwalk_free(&w);
    if (!complete) {
        json_decref(s);
        imgmsg_err(err, errlen, "out of memory");
        return -1;
    }
    *summary = s;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading. */

/* Number of a class's n images held out for val: round(fraction * n), at least 1 when n >= 2,
 * and never all of them (a class must keep a training image). */
static int64_t held_out(double fraction, int64_t n) {
    if (fraction <= 0 || n < 2) return 0;
    int64_t k = llround(fraction * (double)n);
    if (k < 1) k = 1;
    if (k > n - 1) k = n - 1;
    return k;
}

int imgf_load(const char *path, const imgf_limits *lim, int channels, int size,
              double val_fraction, uint64_t seed, ds_set *train, ds_set *val, char *err,
              size_t errlen) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (channels != 1 && channels != 3) {
        imgmsg_err(err, errlen, "channels must be 1 or 3, not %d", channels);
        return -1;
    }
    if (size < 1 || size > IMGF_MAX_SIZE) {
        imgmsg_err(err, errlen, "image size must be in [1, %d], not %d", IMGF_MAX_SIZE, size);
        return -1;
    }
    if (!(val_fraction >= 0 && val_fraction < 1)) {
        imgmsg_err(err, errlen, "val_fraction must be in [0, 1), not %g", val_fraction);
        return -1;
    }
    imgf_limits defl, lims = *limits_or_default(lim, &defl);
    if (lims.max_images > INT_MAX) lims.max_images = INT_MAX; /* ds_set counts in int */
    imgwalk w = {.max_images = lims.max_images, .max_pixels = lims.max_pixels, .decode = 1,
                 .channels = channels, .size = size};
    imgf_layout l;
    if (imgwalk_run(path, &w, err, errlen) || resolve(&w, &l, err, errlen)) {
        imgwalk_free(&w);
        return -1;
    }
    int rc = -1;
    int64_t n = w.nfiles, *src_of = NULL;
    int *perm = NULL;
    uint8_t *tmp = NULL;
    size_t per = (size_t)channels * size * size;
    if (!l.n[1]) {
        /* No val/: hold out part of each class. Classes in label order, each image list in
         * path order, one generator: the split depends on the seed and the names only. */
        rng_t rng;
        rng_seed(&rng, seed);
        int64_t maxc = 0;
        for (int c = 0; c < l.nclasses; c++) maxc = l.count[0][c] > maxc ? l.count[0][c] : maxc;
        if (!(perm = malloc((size_t)maxc * sizeof *perm))) goto oom;
        for (int64_t start = 0; start < n;) {
            int c = w.files[start].label;
            int64_t nc = l.count[0][c], k = held_out(val_fraction, nc);
            ds_shuffle(perm, (int)nc, &rng);
            for (int64_t j = 0; j < k; j++) w.files[start + perm[j]].split = 1;
            l.count[0][c] -= k;
            l.count[1][c] += k;
            l.n[0] -= k;
            l.n[1] += k;
            start += nc;
        }
        qsort(w.files, (size_t)n, sizeof *w.files, cmp_member);
    }
    /* Put the decoded images in that order, in place (cycle by cycle, one image of scratch),
     * so that a big dataset does not need two copies. */
    src_of = malloc((size_t)n * sizeof *src_of);
    tmp = malloc(per);
    if (!src_of || !tmp) goto oom;
    for (int64_t d = 0; d < n; d++) src_of[d] = w.files[d].slot;
    for (int64_t start = 0; start < n; start++) {
        if (src_of[start] < 0 || src_of[start] == start) continue;
        memcpy(tmp, w.images + (size_t)start * per, per);
        int64_t cur = start;
        for (;;) {
            int64_t next = src_of[cur];
            src_of[cur] = -1;
            if (next == start) {
                memcpy(w.images + (size_t)cur * per, tmp, per);
                break;
            }
            memcpy(w.images + (size_t)cur * per, w.images + (size_t)next * per, per);
            cur = next;
        }
    }
    ds_set *sets[2] = {train, val};
    for (int sp = 0; sp < 2; sp++) {
        ds_set *d = sets[sp];
        *d = (ds_set){.n = (int)l.n[sp], .channels = channels, .height = size, .width = size,
                      .num_classes = l.nclasses};
        if (!d->n) continue;
        if (!(d->labels = malloc((size_t)d->n * sizeof *d->labels))) goto oom;
        int64_t off = sp ? l.n[0] : 0;
        for (int i = 0; i < d->n; i++) d->labels[i] = w.files[off + i].label;
    }
    if (val->n) {
        if (!(val->pixels = malloc((size_t)val->n * per))) goto oom;
        memcpy(val->pixels, w.images + (size_t)l.n[0] * per, (size_t)val->n * per);
    }
    /* train keeps the walk's buffer, shrunk to its images */
    uint8_t *p = realloc(w.images, (size_t)train->n * per);
    train->pixels = p ? p : w.images;
    w.images = NULL;
    rc = 0;
    goto out;
oom:
    imgmsg_err(err, errlen, "out of memory loading %lld images of %dx%dx%d", (long long)n, channels,
               size, size);
out:
    if (rc) {
        ds_free(train);
        ds_free(val);
    }
    free(perm);
    free(src_of);
    free(tmp);
    layout_free(&l);
    imgwalk_free(&w);
    return rc;
}

/* The cache is io/imgcache's; these are imagefolder.h's names for it. */
int imgf_cache_write(const char *path, const ds_set *train, const ds_set *val, char *err,
                     size_t errlen) {
    return imgcache_write(path, train, val, err, errlen);
}

int imgf_cache_read(const char *path, ds_set *train, ds_set *val, char *err, size_t errlen) {
    return imgcache_read(path, train, val, err, errlen);
}
