/*
 * sqlite_fault.h: SQLite write faults on demand, for the tests of what the store and the API
 * do when the disk fills up or fails (tests/test_store.c, tests/test_api.c), SQLite's own way:
 * a VFS that wraps the default one and, while sqlite_fault is set, fails every file write as
 * the unix VFS does on a full disk (SQLITE_FULL, its answer to ENOSPC) or on an I/O error
 * (SQLITE_IOERR_WRITE). Nothing else changes, so a commit fails exactly where a real full disk
 * would make it fail (writing the WAL), and succeeds again once the fault is cleared.
 *
 * sqlite_fault_install() makes it the default VFS; call it before opening the database.
 * Header-only (static): each test program that includes it has its own copy.
 */
#ifndef GPLQ_TEST_SQLITE_FAULT_H
#define GPLQ_TEST_SQLITE_FAULT_H

#include <sqlite3.h>

enum { SQLITE_FAULT_NONE, SQLITE_FAULT_FULL, SQLITE_FAULT_IOERR };

/* What the next file writes do: SQLITE_FAULT_NONE (the real write), _FULL or _IOERR. */
static int sqlite_fault;
/* Writes refused so far. */
static int sqlite_fault_hits;

static sqlite3_vfs sqlite_fault_vfs;
/* The wrapped files' own method tables (the unix VFS has one for the database, another, without
 * locks, for its WAL and journals) and a copy of each with xWrite replaced. */
#define SQLITE_FAULT_TABLES 8
static const sqlite3_io_methods *sqlite_fault_real_io[SQLITE_FAULT_TABLES];
static sqlite3_io_methods sqlite_fault_io[SQLITE_FAULT_TABLES];
static int sqlite_fault_ntables;

static int sqlite_fault_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
    if (sqlite_fault == SQLITE_FAULT_NONE) {
        const sqlite3_io_methods *real = sqlite_fault_real_io[f->pMethods - sqlite_fault_io];
        return real->xWrite(f, buf, n, off);
    }
    sqlite_fault_hits++;
    return sqlite_fault == SQLITE_FAULT_FULL ? SQLITE_FULL : SQLITE_IOERR_WRITE;
}

/* The real VFS opens the file into the same sqlite3_file; only its methods table is swapped,
 * and the real methods run on it unchanged (they see only their own struct). */
static int sqlite_fault_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                             int *out_flags) {
    sqlite3_vfs *real = vfs->pAppData;
    int rc = real->xOpen(real, name, f, flags, out_flags);
    if (rc != SQLITE_OK || !f->pMethods) return rc;
    int i = 0;
    while (i < sqlite_fault_ntables && sqlite_fault_real_io[i] != f->pMethods) i++;
    if (i == SQLITE_FAULT_TABLES) return rc; /* not wrapped: writes to it never fail */
    if (i == sqlite_fault_ntables) {
        sqlite_fault_real_io[i] = f->pMethods;
        sqlite_fault_io[i] = *f->pMethods;
        sqlite_fault_io[i].xWrite = sqlite_fault_write;
        sqlite_fault_ntables++;
    }
    f->pMethods = &sqlite_fault_io[i];
    return rc;
}

static void sqlite_fault_install(void) {
    if (sqlite_fault_vfs.zName) return;
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    sqlite_fault_vfs = *real;
    sqlite_fault_vfs.pNext = NULL;
    sqlite_fault_vfs.zName = "gplq-test-fault";
    sqlite_fault_vfs.pAppData = real;
    sqlite_fault_vfs.xOpen = sqlite_fault_open;
    sqlite3_vfs_register(&sqlite_fault_vfs, 1);
}

#endif
