/*
 * imagefolder.c: uploaded image-folder datasets (see imagefolder.h). The archive walk and the
 * rules an upload must follow, JPEG and PNG decoding straight from the archive stream, the
 * timm-style eval transform (with its slow reference), the seeded held-out split, and the
 * packed cache file.
 */
#include "io/imagefolder.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io/imgcache.h"
#include "io/imgdecode.h"
#include "io/imgmsg.h"
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

/* The walk's state: what it collected and, for imgf_load, the decoded images. */
typedef struct {
    char *name;         /* the member's name in the archive, for messages (owned) */
    char *path;         /* normalized: no "." or empty components (owned) */
    const char *rel;    /* path below the top-level folder, if there is one (into path) */
    int split;          /* 0 train, 1 val */
    int label;
    int64_t slot;       /* imgf_load: its decoded image in images */
} imgf_member;

typedef struct {
    const imgf_limits *lim;
    int decode;                 /* 0: headers only (inspect); 1: decode and transform (load) */
    int channels, size;
    imgf_member *files;
    int64_t nfiles, files_cap;
    char **dirs;                /* normalized directory paths (owned) */
    int64_t ndirs, dirs_cap;
    uint8_t *images;            /* (nfiles, channels, size, size) in walk order */
    int64_t images_cap;
    imgdecode *dec;             /* reused for every member (owned) */
} imgf_walk;

/* ---------------------------------------------------------------------------------------- */
/* The archive walk. */

/* The member name with "." and empty components dropped (new string), or NULL with *why set:
 * 1 absolute, 2 a ".." component, 3 out of memory. */
static char *normalize_path(const char *name, int *why) {
    if (name[0] == '/') {
        *why = 1;
        return NULL;
    }
    size_t n = strlen(name);
    char *out = malloc(n + 1);
    if (!out) {
        *why = 3;
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && name[j] != '/') j++;
        size_t len = j - i;
        if (len == 2 && name[i] == '.' && name[i + 1] == '.') {
            free(out);
            *why = 2;
            return NULL;
        }
        if (len && !(len == 1 && name[i] == '.')) {
            if (o) out[o++] = '/';
            memcpy(out + o, name + i, len);
            o += len;
        }
        i = j + 1;
    }
    out[o] = 0;
    return out;
}

/* Hidden files and folders and the metadata operating systems leave in folders they archive
 * (.DS_Store, ._* resource forks, __MACOSX/, Thumbs.db, desktop.ini) are skipped silently. */
static int is_skipped(const char *path) {
    for (const char *p = path; *p;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (p[0] == '.') return 1;
        if (len == 8 && !memcmp(p, "__MACOSX", 8)) return 1;
        if (!e && (!strcasecmp(p, "Thumbs.db") || !strcasecmp(p, "desktop.ini"))) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static int has_image_extension(const char *path) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

static const char *type_name(unsigned type) {
    switch (type) {
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a FIFO";
    case AE_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

static void walk_free(imgf_walk *w) {
    for (int64_t i = 0; i < w->nfiles; i++) {
        free(w->files[i].name);
        free(w->files[i].path);
    }
    for (int64_t i = 0; i < w->ndirs; i++) free(w->dirs[i]);
    free(w->files);
    free(w->dirs);
    free(w->images);
    imgdecode_free(w->dec);
    memset(w, 0, sizeof *w);
}

/* Decodes (or, inspecting, checks the header of) the image member a is positioned on, as file
 * number w->nfiles, and transforms it into its slot of w->images. Returns 0 or -1 with err
 * naming the member (shown). */
static int walk_image(imgf_walk *w, struct archive *a, const char *shown, char *err,
                      size_t errlen) {
    int width = 0, height = 0;
    if (imgdecode_member(w->dec, a, w->decode, w->channels, w->lim->max_pixels, &width,
                         &height)) {
        imgmsg_err(err, errlen, "member '%s': %s", shown, imgdecode_msg(w->dec));
        return -1;
    }
    if (!w->decode) return 0;
    if (resize_long_side(width, height, w->size) > RESIZE_MAX_LONG_SIDE) {
        imgmsg_err(err, errlen, "member '%s': %dx%d is too elongated to resize (its shorter side "
                   "to %d would make the longer one %lld pixels)", shown, width, height,
                   w->size * 8 / 7, (long long)resize_long_side(width, height, w->size));
        return -1;
    }
    size_t per = (size_t)w->channels * w->size * w->size;
    if (w->nfiles == w->images_cap) {
        int64_t cap = w->images_cap ? w->images_cap * 2 : 64;
        uint8_t *p = realloc(w->images, (size_t)cap * per);
        if (!p) {
            imgmsg_err(err, errlen, "member '%s': out of memory after %lld images", shown,
                       (long long)w->nfiles);
            return -1;
        }
        w->images = p;
        w->images_cap = cap;
    }
    if (resize_eval(imgdecode_pixels(w->dec), width, height, w->channels, w->size,
                    w->images + (size_t)w->nfiles * per)) {
        imgmsg_err(err, errlen, "member '%s': out of memory resizing it", shown);
        return -1;
    }
    return 0;
}

/* Reads every member of the archive at path, refusing what the rules forbid (see imgf_inspect)
 * as soon as it is seen; the layout rules, which need all names, are resolve()'s. */
static int walk_archive(const char *path, imgf_walk *w, char *err, size_t errlen) {
    char shown[IMGMSG_NAME_BUF];
    int rc = -1;
    /* libarchive converts member names to the current locale's character set, and a program
     * that never called setlocale is in the ASCII "C" locale, where a zip's or a pax header's
     * UTF-8 names cannot be converted and come back as nothing. So the walk runs in a UTF-8
     * locale of its own thread (uselocale), never touching the process's. */
    locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    locale_t prev = utf8 ? uselocale(utf8) : (locale_t)0;
    struct archive *a = archive_read_new();
    w->dec = imgdecode_new();
    if (!a || !w->dec) {
        imgmsg_err(err, errlen, "out of memory");
        goto out;
    }
    /* Every format and filter libarchive knows: tar and tar.gz are what we document, but a
     * zip or a tar.xz of the same folder is just as readable and follows the same rules. */
    /* the compressions libarchive decodes in-process; filter_all would also run outside
     * programs (lrzip, lzop, ...) on uploaded bytes when they are installed */
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_format_all(a);
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        /* libarchive's "unrecognized or invalid format" is EILSEQ on Linux (its
         * ARCHIVE_ERRNO_FILE_FORMAT, defined only inside libarchive) */
        if (archive_errno(a) == EILSEQ || archive_errno(a) == 0)
            imgmsg_err(err, errlen, "%s is not an archive of an image folder (tar, tar.gz, "
                       "tar.bz2, tar.xz, tar.zst or zip): %s", path,
                       archive_error_string(a) ? archive_error_string(a) : "unknown format");
        else
            imgmsg_err(err, errlen, "cannot open %s: %s", path,
                       archive_error_string(a) ? archive_error_string(a) : strerror(errno));
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            imgmsg_err(err, errlen, "not a readable tar archive%s: %s",
                       w->nfiles || w->ndirs ? " (after the first members)" : "",
                       archive_error_string(a) ? archive_error_string(a) : "unknown error");
            goto out;
        }
        const char *name = archive_entry_pathname_utf8(e);
        if (!name) name = archive_entry_pathname(e);
        if (!name) {
            imgmsg_err(err, errlen, "a member's name cannot be read (after %lld images): %s",
                       (long long)w->nfiles,
                       archive_error_string(a) ? archive_error_string(a) : "no name");
            goto out;
        }
        imgmsg_name(shown, sizeof shown, name);
        int why = 0;
        char *norm = normalize_path(name, &why);
        if (!norm) {
            if (why == 1)
                imgmsg_err(err, errlen, "member '%s': absolute paths are not allowed", shown);
            else if (why == 2)
                imgmsg_err(err, errlen, "member '%s': '..' is not allowed in paths", shown);
            else
                imgmsg_err(err, errlen, "out of memory");
            goto out;
        }
        if (!norm[0] || is_skipped(norm)) {
            free(norm);
            continue;
        }
        unsigned type = archive_entry_filetype(e);
        const char *refusal = NULL;
        if (archive_entry_hardlink(e)) refusal = "hard links are not allowed";
        else if (type == AE_IFLNK || archive_entry_symlink(e)) refusal = "symbolic links are not allowed";
        else if (type != AE_IFDIR && type != AE_IFREG) refusal = type_name(type);
        if (refusal) {
            imgmsg_err(err, errlen, "member '%s': %s%s", shown, refusal,
                       strncmp(refusal, "a ", 2) ? "" : ", only folders and images are allowed");
            free(norm);
            goto out;
        }
        if (type == AE_IFDIR) {
            if (w->ndirs == w->dirs_cap) {
                int64_t cap = w->dirs_cap ? w->dirs_cap * 2 : 64;
                char **p = realloc(w->dirs, (size_t)cap * sizeof *p);
                if (!p) {
                    free(norm);
                    imgmsg_err(err, errlen, "out of memory");
                    goto out;
                }
                w->dirs = p;
                w->dirs_cap = cap;
            }
            w->dirs[w->ndirs++] = norm;
            continue;
        }
        if (!has_image_extension(norm)) {
            imgmsg_err(err, errlen, "member '%s': not an image file name (only .jpg, .jpeg and "
                       ".png are allowed)", shown);
            free(norm);
            goto out;
        }
        if (w->nfiles >= w->lim->max_images) {
            imgmsg_err(err, errlen, "member '%s': the archive holds more than %lld images, the "
                       "limit", shown, (long long)w->lim->max_images);
            free(norm);
            goto out;
        }
        if (w->nfiles == w->files_cap) {
            int64_t cap = w->files_cap ? w->files_cap * 2 : 256;
            imgf_member *p = realloc(w->files, (size_t)cap * sizeof *p);
            if (!p) {
                free(norm);
                imgmsg_err(err, errlen, "out of memory");
                goto out;
            }
            w->files = p;
            w->files_cap = cap;
        }
        char *keep = strdup(name);
        if (!keep) {
            free(norm);
            imgmsg_err(err, errlen, "out of memory");
            goto out;
        }
        w->files[w->nfiles] = (imgf_member){.name = keep, .path = norm, .rel = norm,
                                            .slot = w->nfiles};
        if (walk_image(w, a, shown, err, errlen)) {
            free(keep);
            free(norm);
            goto out;
        }
        w->nfiles++;
    }
    rc = 0;
out:
    archive_read_free(a);
    if (utf8) {
        uselocale(prev);
        freelocale(utf8);
    }
    return rc;
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
    const imgf_member *x = a, *y = b;
    if (x->split != y->split) return x->split - y->split;
    if (x->label != y->label) return x->label - y->label;
    return strcmp(x->rel, y->rel);
}

/* Applies the layout rules to everything the walk found: strips the top-level folder, places
 * every image in train/ or val/ and a class, lists the classes, and sorts w->files by (split,
 * label, path). Returns 0 or -1 with err. */
static int resolve(imgf_walk *w, imgf_layout *l, char *err, size_t errlen) {
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
        imgf_member *m = &w->files[i];
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
        imgf_member *m = &w->files[i];
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
    imgf_walk w = {.lim = limits_or_default(lim, &defl)};
    imgf_layout l;
    *summary = NULL;
    if (walk_archive(path, &w, err, errlen) || resolve(&w, &l, err, errlen)) {
        walk_free(&w);
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
    walk_free(&w);
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
    imgf_walk w = {.lim = &lims, .decode = 1, .channels = channels, .size = size};
    imgf_layout l;
    if (walk_archive(path, &w, err, errlen) || resolve(&w, &l, err, errlen)) {
        walk_free(&w);
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
    walk_free(&w);
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
