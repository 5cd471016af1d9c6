/*
 * imglayout.h: the layout rules of an uploaded image folder, the ones that need every name the
 * walk (imgwalk.h) collected: one top-level folder common to every image is dropped, every
 * image must be in train/<class>/ or val/<class>/, the classes are train/'s folder names
 * sorted with strcmp (label i is the i-th), and refused are no images, no train/, files
 * outside train/ and val/ or at the wrong depth, an empty train/ class, a val/ class that
 * train/ lacks, a class name that is not UTF-8, and the same path twice.
 */
#ifndef GPLQ_IMGLAYOUT_H
#define GPLQ_IMGLAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "io/imgwalk.h"

/* The layout of a walked archive: its classes and where each image belongs. */
typedef struct {
    char **classes;         /* (nclasses) sorted with strcmp, owned */
    int nclasses;
    int64_t *count[2];      /* (nclasses) images per class in train/ and val/ */
    int64_t n[2];           /* images in train/ and val/ */
} imglayout;

/* Applies the layout rules to everything the walk found: strips the top-level folder, places
 * every image in train/ or val/ and a class (setting each member's rel, split and label),
 * lists the classes into l (new: imglayout_free; zeroed on failure), and sorts w->files as
 * imglayout_sort does. Returns 0, or -1 with a message in err naming the member. */
int imglayout_resolve(imgwalk *w, imglayout *l, char *err, size_t errlen);

/* Orders files (n of them) by split, label, then path below the top-level folder. */
void imglayout_sort(imgwalk_member *files, int64_t n);

/* Frees what l owns and zeroes it. */
void imglayout_free(imglayout *l);

#endif
