/* kvz_file: read-only memory-mapped files and whole-file reads.
 * Checkpoints (GGUF, safetensors) are mapped, never copied; small text files
 * (JSON, YAML) are read into a NUL-terminated buffer. Also the atomic-write
 * helpers every output uses: a file is written to "<path>.tmp.<pid>",
 * fsynced and renamed; an output directory is built under the same kind of
 * name and swapped into place whole; temporaries of killed runs are removed
 * by the next run. */
#ifndef KVZ_FILE_H
#define KVZ_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "kvz_error.h"

typedef struct kvz_mapped_file {
    const unsigned char *data; /* [size] bytes, read-only; NULL when size == 0 */
    size_t size;
    char *path;                /* owned copy of the path, for messages */
} kvz_mapped_file;

int kvz_file_map(const char *path, kvz_mapped_file *out, kvz_error *err);
void kvz_file_unmap(kvz_mapped_file *f);

/* Reads the whole file into *out (malloc'ed, NUL-terminated; *len excludes the NUL). */
int kvz_file_read_all(const char *path, char **out, size_t *len, kvz_error *err);

/* Atomic output: kvz_atomic_open gives a FILE* on a temporary name beside
 * path; kvz_atomic_commit flushes, fsyncs, closes and renames it over path
 * (reporting a full disk or any write error); kvz_atomic_abort removes it. */
typedef struct kvz_atomic_file {
    FILE *fp;
    char *path;
    char *tmp_path;
} kvz_atomic_file;

int kvz_atomic_open(const char *path, kvz_atomic_file *out, kvz_error *err);
int kvz_atomic_commit(kvz_atomic_file *f, kvz_error *err);
void kvz_atomic_abort(kvz_atomic_file *f);

/* Output directories (the training output, the report, kvpress exports) are
 * complete as a whole or absent: kvz_outdir_begin creates an empty
 * "<path>.tmp.<pid>" beside path (removing stale temporaries first, see
 * kvz_clean_stale_temps), the caller writes into d->tmp_path, and
 * kvz_outdir_commit fsyncs its directories and moves it over path in one
 * step (renameat2 RENAME_EXCHANGE, then the old tree is removed; where the
 * file system lacks it, the old tree is renamed to "<path>.old.<pid>" first,
 * so a kill between the two renames leaves path absent, never mixed).
 * kvz_outdir_abort removes the temporary tree. path may end in '/'. */
typedef struct kvz_outdir {
    char *path;     /* final path, without trailing '/' */
    char *tmp_path; /* "<path>.tmp.<pid>" */
} kvz_outdir;

int kvz_outdir_begin(const char *path, kvz_outdir *d, kvz_error *err);
int kvz_outdir_commit(kvz_outdir *d, kvz_error *err);
void kvz_outdir_abort(kvz_outdir *d);

/* Removes "<path>.tmp.<pid>" and "<path>.old.<pid>" entries beside path
 * whose process is gone (no such pid on this machine, or our own pid: left
 * by an earlier process). A temporary of a live process is kept. Returns
 * how many were removed. Called by kvz_atomic_open and kvz_outdir_begin, so
 * every kvzap output cleans up after a SIGKILLed run of itself. */
int kvz_clean_stale_temps(const char *path);

/* Removes path and, if it is a directory, everything under it (no links
 * followed). 0, or -1 when something could not be removed. */
int kvz_remove_tree(const char *path);

/* Joins dir and name with one '/', malloc'ed (NULL on OOM). */
char *kvz_path_join(const char *dir, const char *name);
int kvz_path_is_dir(const char *path);
int kvz_path_exists(const char *path);

#endif
