/*
 * imgwalk.h: the walk over an uploaded image-folder archive, shared by imgf_inspect and
 * imgf_load. Every member is read once, in archive order, with libarchive (tar, tar.gz, zip,
 * ...); what one member breaks on its own is refused as soon as it is seen (absolute paths,
 * "..", links, devices, names that are not images', the image after max_images, content that
 * does not decode), hidden files and the metadata operating systems leave are skipped, and the
 * rest is collected: folder names, image names and, when loading, the transformed images. The
 * rules that need every name are imglayout's. imagefolder.h lists all the rules.
 */
#ifndef GPLQ_IMGWALK_H
#define GPLQ_IMGWALK_H

#include <stddef.h>
#include <stdint.h>

#include "io/imgdecode.h"

/* An image member. The walk sets name, path, rel (= path) and slot; imglayout sets rel, split
 * and label. */
typedef struct {
    char *name;         /* the member's name in the archive, for messages (owned) */
    char *path;         /* normalized: no "." or empty components (owned) */
    const char *rel;    /* path below the top-level folder, if there is one (into path) */
    int split;          /* 0 train, 1 val */
    int label;
    int64_t slot;       /* imgf_load: its decoded image in images */
} imgwalk_member;

/* The walk's state: what it collected and, for imgf_load, the decoded images. The caller sets
 * the first nine fields (zero the rest) and frees it with imgwalk_free, whatever
 * imgwalk_run returned. */
typedef struct {
    int64_t max_images;         /* refuse the image after the first max_images */
    int64_t max_pixels;         /* refuse an image with more pixels */
    int64_t max_members;        /* refuse the member after the first max_members, of any kind */
    int64_t max_name_bytes;     /* refuse a member whose name is longer */
    int64_t unpack_allowance;   /* refuse a member that would take the unpacked bytes past */
    int64_t unpack_ratio;       /* unpack_allowance + unpack_ratio x the archive's size */
    int decode;                 /* 0: headers only (inspect); 1: decode and transform (load) */
    int channels, size;         /* decode 1: each image becomes (channels, size, size) */
    imgwalk_member *files;
    int64_t nfiles, files_cap;
    char **dirs;                /* normalized directory paths (owned) */
    int64_t ndirs, dirs_cap;
    uint8_t *images;            /* (nfiles, channels, size, size) in walk order (owned; a
                                 * caller may take it and set it NULL) */
    int64_t images_cap;
    imgdecode *dec;             /* reused for every member (owned) */
    int64_t nmembers;           /* members seen, skipped ones included */
    int64_t declared;           /* bytes the members' headers declared, summed */
    int64_t max_unpacked;       /* the unpacked-bytes limit for this archive */
} imgwalk;

/* Reads every member of the archive at path into w, refusing what the rules forbid as soon as
 * it is seen. Runs in a C.UTF-8 locale of the calling thread's own (so libarchive can convert
 * UTF-8 names) and restores the thread's locale. Returns 0, or -1 with a message in err naming
 * the member. */
int imgwalk_run(const char *path, imgwalk *w, char *err, size_t errlen);

/* Frees what w owns and zeroes it. */
void imgwalk_free(imgwalk *w);

#endif
