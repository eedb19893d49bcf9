/* corpus_internal: what data/corpus.c (selection) and data/corpus_scan.c
 * (walking files, reading JSONL lines) share. Not a public API. */
#ifndef KVZ_CORPUS_INTERNAL_H
#define KVZ_CORPUS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/kvz_error.h"

/* One document as the scanner finds it; pointers valid during the callback. */
typedef struct kvz_corpus_found {
    const char *file;      /* path as listed (root joined with the relative path) */
    size_t file_index;     /* index into the sorted file list */
    size_t line;           /* 1-based JSONL line; 0 for a whole text file */
    uint64_t offset;       /* byte offset of the raw record in the file */
    size_t length;         /* raw record bytes (a JSONL line with its '\n') */
    uint64_t content_hash; /* kvz_corpus_fnv1a64 of the raw record */
    const char *text;      /* the document text, not stripped */
    size_t text_len;
    const char *subset;    /* subset label */
    int compressed;        /* 1: a .gz/.zst file; offset/length/content_hash then
                            * refer to the decompressed data, which cannot be
                            * re-read by seeking (corpus.c keeps such texts) */
} kvz_corpus_found;

typedef int (*kvz_corpus_found_fn)(void *ctx, const kvz_corpus_found *d, kvz_error *err);

typedef struct kvz_corpus_fields {
    const char *text_field;   /* never NULL */
    const char *subset_field; /* NULL = none */
} kvz_corpus_fields;

#define KVZ_FNV64_OFFSET 0xcbf29ce484222325ULL

/* FNV-1a 64 over p[0..n), continuing from h (start with KVZ_FNV64_OFFSET). */
uint64_t kvz_corpus_fnv1a64(const void *p, size_t n, uint64_t h);

/* Regular files under path (path itself when it is a file), hidden entries
 * and symlinked directories skipped, sorted by byte order of the path.
 * *files: malloc'ed array of malloc'ed strings. */
int kvz_corpus_list_files(const char *path, char ***files, size_t *n, kvz_error *err);
void kvz_corpus_free_files(char **files, size_t n);

/* Calls fn for every document of one file (a .jsonl file: every non-blank
 * line; any other file: the whole file). Stops at the first error. */
int kvz_corpus_scan_file(const char *path, size_t file_index, const kvz_corpus_fields *f,
                         kvz_corpus_found_fn fn, void *ctx, kvz_error *err);

/* Parses one JSONL line: *root (caller json_decref's it on success), the
 * text field's value and the subset label (subset_field's string, else
 * default_subset). Errors name path:line. */
int kvz_corpus_parse_line(const char *path, size_t line, const char *buf, size_t len,
                          const kvz_corpus_fields *f, const char *default_subset, json_t **root,
                          const char **text, size_t *text_len, const char **subset,
                          kvz_error *err);

/* A file's kind is told by its name alone: a ".gz" suffix means gzip (one
 * or more concatenated members), ".zst" zstd (one or more frames), anything
 * else uncompressed; what is left of the name after that suffix decides
 * JSONL (".jsonl") or one whole text document (anything else). */
enum { KVZ_CORPUS_PLAIN = 0, KVZ_CORPUS_GZIP = 1, KVZ_CORPUS_ZSTD = 2 };

/* KVZ_CORPUS_* of path; *suffix_len (when not NULL) = length of the
 * compression suffix (0, 3 for ".gz", 4 for ".zst"). */
int kvz_corpus_compression(const char *path, size_t *suffix_len);

/* 1 when path, less a compression suffix, ends in ".jsonl". */
int kvz_corpus_is_jsonl(const char *path);

#endif
