/*
 * imgwalk.c: the walk over an uploaded image-folder archive (see imgwalk.h).
 */
#include "io/imgwalk.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "io/imgmsg.h"
#include "io/resize.h"

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

/* Decodes (or, inspecting, checks the header of) the image member a is positioned on, as file
 * number w->nfiles, and transforms it into its slot of w->images. Returns 0 or -1 with err
 * naming the member (shown). */
static int walk_image(imgwalk *w, struct archive *a, const char *shown, char *err,
                      size_t errlen) {
    int width = 0, height = 0;
    if (imgdecode_member(w->dec, a, w->decode, w->channels, w->max_pixels, &width,
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

/* Opens the archive at path with every format libarchive reads and the compressions it
 * decodes in-process. Returns it (new: archive_read_free), or NULL with err. */
static struct archive *walk_open(const char *path, char *err, size_t errlen) {
    struct archive *a = archive_read_new();
    if (!a) {
        imgmsg_err(err, errlen, "out of memory");
        return NULL;
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
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* Why a member of e's type is refused (links, devices, FIFOs, sockets), or NULL for a folder
 * or a regular file. */
static const char *type_refusal(struct archive_entry *e) {
    unsigned type = archive_entry_filetype(e);
    if (archive_entry_hardlink(e)) return "hard links are not allowed";
    if (type == AE_IFLNK || archive_entry_symlink(e)) return "symbolic links are not allowed";
    if (type != AE_IFDIR && type != AE_IFREG) return type_name(type);
    return NULL;
}

/* Records the folder norm (taken): the layout rules count folders too. Returns 0, or -1 with
 * err (norm freed). */
static int walk_dir(imgwalk *w, char *norm, char *err, size_t errlen) {
    if (w->ndirs == w->dirs_cap) {
        int64_t cap = w->dirs_cap ? w->dirs_cap * 2 : 64;
        char **p = realloc(w->dirs, (size_t)cap * sizeof *p);
        if (!p) {
            free(norm);
            imgmsg_err(err, errlen, "out of memory");
            return -1;
        }
        w->dirs = p;
        w->dirs_cap = cap;
    }
    w->dirs[w->ndirs++] = norm;
    return 0;
}

/* The file member a is positioned on, name as archived and norm (taken) as normalized: its
 * name must be an image's and the limit on images not reached; then it is recorded as file
 * number w->nfiles and decoded (walk_image). Returns 0, or -1 with err (norm freed). */
static int walk_file(imgwalk *w, struct archive *a, const char *name, char *norm,
                     const char *shown, char *err, size_t errlen) {
    if (!has_image_extension(norm)) {
        imgmsg_err(err, errlen, "member '%s': not an image file name (only .jpg, .jpeg and "
                   ".png are allowed)", shown);
        free(norm);
        return -1;
    }
    if (w->nfiles >= w->max_images) {
        imgmsg_err(err, errlen, "member '%s': the archive holds more than %lld images, the "
                   "limit", shown, (long long)w->max_images);
        free(norm);
        return -1;
    }
    if (w->nfiles == w->files_cap) {
        int64_t cap = w->files_cap ? w->files_cap * 2 : 256;
        imgwalk_member *p = realloc(w->files, (size_t)cap * sizeof *p);
        if (!p) {
            free(norm);
            imgmsg_err(err, errlen, "out of memory");
            return -1;
        }
        w->files = p;
        w->files_cap = cap;
    }
    char *keep = strdup(name);
    if (!keep) {
        free(norm);
        imgmsg_err(err, errlen, "out of memory");
        return -1;
    }
    w->files[w->nfiles] = (imgwalk_member){.name = keep, .path = norm, .rel = norm,
                                           .slot = w->nfiles};
    if (walk_image(w, a, shown, err, errlen)) {
        free(keep);
        free(norm);
        return -1;
    }
    w->nfiles++;
    return 0;
}

/* The limits on the walk itself, checked on each member's header before its data is read or
 * skipped: how many members, how long a name, and the bytes the archive unpacks to with this
 * member. Those are what libarchive has produced so far (tar headers, skipped members and
 * all) plus what this member's header declares; for a zip, whose members libarchive seeks
 * past, the declared sizes summed. A declared size is exact in a tar (the reader skips just
 * that much), so a bomb is refused before it is inflated. Returns 0, or -1 with err. */
static int walk_limits(imgwalk *w, struct archive *a, struct archive_entry *e, const char *name,
                       const char *shown, char *err, size_t errlen) {
    if (++w->nmembers > w->max_members) {
        imgmsg_err(err, errlen, "member '%s': the archive holds more than %lld members (files "
                   "and folders, skipped ones included), the limit", shown,
                   (long long)w->max_members);
        return -1;
    }
    size_t len = strlen(name);
    if ((int64_t)len > w->max_name_bytes) {
        imgmsg_err(err, errlen, "member '%s': its name is %zu bytes, longer than the limit of "
                   "%lld bytes", shown, len, (long long)w->max_name_bytes);
        return -1;
    }
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (size < 0) size = 0;
    int64_t produced = archive_filter_bytes(a, 0), left = INT64_MAX - size;
    w->declared = w->declared < left ? w->declared + size : INT64_MAX;
    int64_t unpacked = produced < left ? produced + size : INT64_MAX;
    if (w->declared > unpacked) unpacked = w->declared;
    if (unpacked > w->max_unpacked) {
        imgmsg_err(err, errlen, "member '%s': the archive unpacks to more than %lld bytes with "
                   "it, the limit for this archive (%lld MiB, plus %lld times the archive's "
                   "size): a decompression bomb?", shown, (long long)w->max_unpacked,
                   (long long)(w->unpack_allowance >> 20), (long long)w->unpack_ratio);
        return -1;
    }
    return 0;
}

/* One member, e: the walk's limits, then its name read and normalized (absolute paths and ".."
 * refused), hidden files and metadata skipped, links and devices refused; then a folder is
 * recorded and a file is walk_file's. Returns 0, or -1 with err. */
static int walk_member(imgwalk *w, struct archive *a, struct archive_entry *e, char *err,
                       size_t errlen) {
    char shown[IMGMSG_NAME_BUF];
    const char *name = archive_entry_pathname_utf8(e);
    if (!name) name = archive_entry_pathname(e);
    if (!name) {
        imgmsg_err(err, errlen, "a member's name cannot be read (after %lld images): %s",
                   (long long)w->nfiles,
                   archive_error_string(a) ? archive_error_string(a) : "no name");
        return -1;
    }
    imgmsg_name(shown, sizeof shown, name);
    if (walk_limits(w, a, e, name, shown, err, errlen)) return -1;
    int why = 0;
    char *norm = normalize_path(name, &why);
    if (!norm) {
        if (why == 1)
            imgmsg_err(err, errlen, "member '%s': absolute paths are not allowed", shown);
        else if (why == 2)
            imgmsg_err(err, errlen, "member '%s': '..' is not allowed in paths", shown);
        else
            imgmsg_err(err, errlen, "out of memory");
        return -1;
    }
    if (!norm[0] || is_skipped(norm)) {
        free(norm);
        return 0;
    }
    const char *refusal = type_refusal(e);
    if (refusal) {
        imgmsg_err(err, errlen, "member '%s': %s%s", shown, refusal,
                   strncmp(refusal, "a ", 2) ? "" : ", only folders and images are allowed");
        free(norm);
        return -1;
    }
    if (archive_entry_filetype(e) == AE_IFDIR) return walk_dir(w, norm, err, errlen);
    return walk_file(w, a, name, norm, shown, err, errlen);
}

int imgwalk_run(const char *path, imgwalk *w, char *err, size_t errlen) {
    int rc = -1;
    /* libarchive converts member names to the current locale's character set, and a program
     * that never called setlocale is in the ASCII "C" locale, where a zip's or a pax header's
     * UTF-8 names cannot be converted and come back as nothing. So the walk runs in a UTF-8
     * locale of its own thread (uselocale), never touching the process's. */
    locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    locale_t prev = utf8 ? uselocale(utf8) : (locale_t)0;
    struct archive *a = NULL;
    if (!(w->dec = imgdecode_new())) {
        imgmsg_err(err, errlen, "out of memory");
        goto out;
    }
    if (!(a = walk_open(path, err, errlen))) goto out;
    /* the unpacked-bytes limit of this archive: unpack_allowance + unpack_ratio x its size */
    struct stat st;
    int64_t size = stat(path, &st) ? 0 : (int64_t)st.st_size;
    w->max_unpacked = w->unpack_ratio > 0 && size > (INT64_MAX - w->unpack_allowance) /
                      w->unpack_ratio ? INT64_MAX : w->unpack_allowance + w->unpack_ratio * size;
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
        if (walk_member(w, a, e, err, errlen)) goto out;
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

void imgwalk_free(imgwalk *w) {
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
