/* corpus_scan: the input side of corpus selection. Lists the regular files of
 * a corpus path (recursively, sorted by path, hidden entries skipped), and
 * reads each one as documents: a ".jsonl" file line by line (getline, so
 * lines may be any length; json_loadb per line), any other file whole. Every
 * record is checked to be UTF-8 before it is parsed, so a bad byte is reported
 * as file:line and byte offset rather than as a JSON syntax error. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/kvz_file.h"
#include "../common/kvz_utf8.h"
#include "corpus_internal.h"

uint64_t kvz_corpus_fnv1a64(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int kvz_corpus_is_jsonl(const char *path)
{
    size_t n = strlen(path);
    return n >= 6 && !strcmp(path + n - 6, ".jsonl");
}

/* --- listing --- */

typedef struct file_list {
    char **paths;
    size_t n, cap;
} file_list;

static int list_push(file_list *l, char *path, kvz_error *err)
{
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory listing files");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->paths, cap * sizeof *p);
        if (!p) {
            free(path);
            return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory listing files");
        }
        l->paths = p;
        l->cap = cap;
    }
    l->paths[l->n++] = path;
    return KVZ_OK;
}

static int walk_dir(const char *dir, file_list *l, kvz_error *err);

/* Adds child (owned) to the list, or walks it when it is a directory. */
static int visit_child(char *child, file_list *l, kvz_error *err)
{
    struct stat st, lst;
    if (stat(child, &st) != 0 || lstat(child, &lst) != 0) {
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot stat: %s", child, strerror(errno));
        free(child);
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        int rc = S_ISLNK(lst.st_mode) ? KVZ_OK : walk_dir(child, l, err);
        free(child);
        return rc;
    }
    if (S_ISREG(st.st_mode))
        return list_push(l, child, err);
    free(child);
    return KVZ_OK;
}

static int walk_dir(const char *dir, file_list *l, kvz_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = KVZ_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue; /* hidden, "." and ".." */
        rc = visit_child(kvz_path_join(dir, e->d_name), l, err);
    }
    closedir(d);
    return rc;
}

static int cmp_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void kvz_corpus_free_files(char **files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}

int kvz_corpus_list_files(const char *path, char ***files, size_t *n, kvz_error *err)
{
    struct stat st;
    *files = NULL;
    *n = 0;
    if (stat(path, &st) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    file_list l = {0};
    int rc;
    if (S_ISDIR(st.st_mode))
        rc = walk_dir(path, &l, err);
    else if (S_ISREG(st.st_mode))
        rc = list_push(&l, strdup(path), err);
    else
        rc = kvz_fail(err, KVZ_EIO, "%s: not a regular file or directory", path);
    if (rc) {
        kvz_corpus_free_files(l.paths, l.n);
        return rc;
    }
    if (l.n > 1)
        qsort(l.paths, l.n, sizeof *l.paths, cmp_paths);
    *files = l.paths;
    *n = l.n;
    return KVZ_OK;
}

/* --- reading --- */

/* "dir/code.jsonl" -> "code" (malloc'ed). */
static char *base_name_no_ext(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = '\0';
    }
    return s;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int string_field(const char *path, size_t line, json_t *obj, const char *name,
                        const json_t **out, kvz_error *err)
{
    json_t *v = json_object_get(obj, name);
    *out = v;
    if (v && !json_is_string(v))
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: field \"%s\" is not a string (found %s)", path,
                        line, name, json_kind(v));
    return KVZ_OK;
}

static int check_fields(const char *path, size_t line, json_t *root, const kvz_corpus_fields *f,
                        const json_t **text, const json_t **subset, kvz_error *err)
{
    if (!json_is_object(root))
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: not a JSON object (found %s)", path, line,
                        json_kind(root));
    int rc = string_field(path, line, root, f->text_field, text, err);
    if (!rc && !*text)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s:%zu: no \"%s\" field", path, line, f->text_field);
    *subset = NULL;
    if (!rc && f->subset_field) {
        json_t *s = json_object_get(root, f->subset_field);
        if (s && !json_is_null(s)) /* null counts as absent */
            rc = string_field(path, line, root, f->subset_field, subset, err);
    }
    return rc;
}

int kvz_corpus_parse_line(const char *path, size_t line, const char *buf, size_t len,
                          const kvz_corpus_fields *f, const char *default_subset, json_t **root,
                          const char **text, size_t *text_len, const char **subset,
                          kvz_error *err)
{
    json_error_t jerr;
    json_t *r = json_loadb(buf, len, JSON_ALLOW_NUL, &jerr);
    if (!r)
        return kvz_fail(err, KVZ_EFORMAT, "%s:%zu: not valid JSON: %s (column %d)", path, line,
                        jerr.text, jerr.column);
    const json_t *t, *s;
    int rc = check_fields(path, line, r, f, &t, &s, err);
    if (rc) {
        json_decref(r);
        return rc;
    }
    *root = r;
    *text = json_string_value(t);
    *text_len = json_string_length(t);
    *subset = s ? json_string_value(s) : default_subset;
    return KVZ_OK;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

typedef struct scan_job {
    const char *path;
    size_t file_index;
    const kvz_corpus_fields *fields;
    const char *default_subset;
    kvz_corpus_found_fn fn;
    void *ctx;
} scan_job;

static int scan_line(const scan_job *j, size_t line, uint64_t offset, const char *buf, size_t len,
                     kvz_error *err)
{
    size_t bad;
    const char *why;
    if (kvz_utf8_validate(buf, len, &bad, &why))
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s:%zu: invalid UTF-8 at byte %zu of the line (file offset %llu): %s",
                        j->path, line, bad, (unsigned long long)(offset + bad), why);
    json_t *root;
    kvz_corpus_found d = {j->path, j->file_index, line, offset, len, 0, NULL, 0, NULL};
    int rc = kvz_corpus_parse_line(j->path, line, buf, len, j->fields, j->default_subset, &root,
                                   &d.text, &d.text_len, &d.subset, err);
    if (rc)
        return rc;
    d.content_hash = kvz_corpus_fnv1a64(buf, len, KVZ_FNV64_OFFSET);
    rc = j->fn(j->ctx, &d, err);
    json_decref(root);
    return rc;
}

static int scan_jsonl(const scan_job *j, kvz_error *err)
{
    FILE *fp = fopen(j->path, "rb");
    if (!fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", j->path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, line = 0;
    uint64_t offset = 0;
    ssize_t got;
    int rc = KVZ_OK;
    while (!rc && (got = getline(&buf, &cap, fp)) > 0) {
        line++;
        if (!is_blank(buf, (size_t)got))
            rc = scan_line(j, line, offset, buf, (size_t)got, err);
        offset += (uint64_t)got;
    }
    if (!rc && ferror(fp))
        rc = kvz_fail(err, KVZ_EIO, "%s: read error after line %zu", j->path, line);
    free(buf);
    fclose(fp);
    return rc;
}

static int scan_text(const scan_job *j, kvz_error *err)
{
    char *text;
    size_t len, bad;
    const char *why;
    int rc = kvz_file_read_all(j->path, &text, &len, err);
    if (rc)
        return rc;
    if (kvz_utf8_validate(text, len, &bad, &why)) {
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: invalid UTF-8 at byte %zu: %s", j->path, bad, why);
    } else {
        kvz_corpus_found d = {j->path, j->file_index, 0, 0, len,
                              kvz_corpus_fnv1a64(text, len, KVZ_FNV64_OFFSET), text, len,
                              j->default_subset};
        rc = j->fn(j->ctx, &d, err);
    }
    free(text);
    return rc;
}

int kvz_corpus_scan_file(const char *path, size_t file_index, const kvz_corpus_fields *f,
                         kvz_corpus_found_fn fn, void *ctx, kvz_error *err)
{
    char *subset = base_name_no_ext(path);
    if (!subset)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    scan_job j = {path, file_index, f, subset, fn, ctx};
    int rc = kvz_corpus_is_jsonl(path) ? scan_jsonl(&j, err) : scan_text(&j, err);
    free(subset);
    return rc;
}
