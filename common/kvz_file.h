/* kvz_file: read-only memory-mapped files and whole-file reads.
 * Checkpoints (GGUF, safetensors) are mapped, never copied; small text files
 * (JSON, YAML) are read into a NUL-terminated buffer. Also the atomic-write
 * helper every output uses: write to "<path>.tmp.<pid>", fsync, rename. */
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

/* Joins dir and name with one '/', malloc'ed (NULL on OOM). */
char *kvz_path_join(const char *dir, const char *name);
int kvz_path_is_dir(const char *path);
int kvz_path_exists(const char *path);

#endif
