/* report_csv: the report's small readers: header-addressed CSV files
 * (train_log.csv, compression.csv, predictions/layer_<l>.csv) and a growable
 * list of strings for the plots written and skipped. */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "report_internal.h"

int rep_strlist_addf(rep_strlist *l, kvz_error *err, const char *fmt, ...)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
        l->v = v;
        l->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s)
        return kvz_fail(err, KVZ_ENOMEM, "report: out of memory");
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    l->v[l->n++] = s;
    return KVZ_OK;
}

void rep_strlist_free(rep_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Splits line in place at commas into at most max fields; returns the count. */
static size_t split_fields(char *line, char **fields, size_t max)
{
    size_t n = 0;
    for (char *p = line;; p++) {
        if (n < max)
            fields[n] = p;
        n++;
        p = strchr(p, ',');
        if (!p)
            break;
        *p = '\0';
    }
    for (size_t i = 0; i < n && i < max; i++) {
        while (*fields[i] == ' ')
            fields[i]++;
        size_t len = strlen(fields[i]);
        while (len && (fields[i][len - 1] == ' ' || fields[i][len - 1] == '\r'))
            fields[i][--len] = '\0';
    }
    return n;
}

/* Next non-empty line (NUL-terminated in place); NULL at the end. */
static char *next_line(char **cursor, size_t *lineno)
{
    while (**cursor) {
        char *line = *cursor;
        char *nl = strchr(line, '\n');
        *cursor = nl ? nl + 1 : line + strlen(line);
        if (nl)
            *nl = '\0';
        ++*lineno;
        if (line[strspn(line, " \r")] != '\0')
            return line;
    }
    return NULL;
}

#define REP_CSV_MAX_FIELDS 64

static int map_header(rep_csv *t, char *header, const char *const *cols, size_t *col_idx,
                      size_t *n_fields, kvz_error *err)
{
    char *fields[REP_CSV_MAX_FIELDS];
    *n_fields = split_fields(header, fields, REP_CSV_MAX_FIELDS);
    if (*n_fields > REP_CSV_MAX_FIELDS)
        return kvz_fail(err, KVZ_EFORMAT, "%s: header has more than %d columns", t->path,
                        REP_CSV_MAX_FIELDS);
    for (size_t c = 0; c < t->n_cols; c++) {
        col_idx[c] = SIZE_MAX;
        for (size_t f = 0; f < *n_fields; f++)
            if (!strcmp(fields[f], cols[c]))
                col_idx[c] = f;
        if (col_idx[c] == SIZE_MAX)
            return kvz_fail(err, KVZ_EFORMAT, "%s: header has no column '%s'", t->path, cols[c]);
    }
    return KVZ_OK;
}

static int parse_rows(rep_csv *t, const char *const *cols, kvz_error *err)
{
    size_t n_lines = 1;
    for (const char *p = t->buf; *p; p++)
        n_lines += *p == '\n';
    t->cells = calloc(n_lines * t->n_cols + 1, sizeof *t->cells);
    t->lineno = calloc(n_lines + 1, sizeof *t->lineno);
    if (!t->cells || !t->lineno)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->path);
    char *cursor = t->buf, *line;
    size_t lineno = 0, col_idx[REP_CSV_MAX_FIELDS], n_fields = 0;
    if (!(line = next_line(&cursor, &lineno)))
        return kvz_fail(err, KVZ_EFORMAT, "%s: empty file (no header row)", t->path);
    int rc = map_header(t, line, cols, col_idx, &n_fields, err);
    while (!rc && (line = next_line(&cursor, &lineno))) {
        char *fields[REP_CSV_MAX_FIELDS];
        size_t n = split_fields(line, fields, REP_CSV_MAX_FIELDS);
        if (n != n_fields)
            return kvz_fail(err, KVZ_EFORMAT, "%s: line %zu: %zu fields, the header has %zu",
                            t->path, lineno, n, n_fields);
        for (size_t c = 0; c < t->n_cols; c++)
            t->cells[t->n_rows * t->n_cols + c] = fields[col_idx[c]];
        t->lineno[t->n_rows++] = lineno;
    }
    return rc;
}

int rep_csv_load(const char *path, const char *const *cols, size_t n_cols, rep_csv *out,
                 kvz_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_cols > REP_CSV_MAX_FIELDS)
        return kvz_fail(err, KVZ_EINVAL, "%s: too many columns requested", path);
    if (!kvz_path_exists(path))
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: not found", path);
    out->path = strdup(path);
    if (!out->path)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    out->n_cols = n_cols;
    int rc = kvz_file_read_all(path, &out->buf, NULL, err);
    if (!rc)
        rc = parse_rows(out, cols, err);
    if (rc)
        rep_csv_free(out);
    return rc;
}

int rep_csv_number(const rep_csv *t, size_t row, size_t col, double *out, kvz_error *err)
{
    const char *s = t->cells[row * t->n_cols + col];
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        return kvz_fail(err, KVZ_EFORMAT, "%s: line %zu: '%s' is not a number", t->path,
                        t->lineno[row], s);
    *out = v;
    return KVZ_OK;
}

void rep_csv_free(rep_csv *t)
{
    free(t->path);
    free(t->buf);
    free(t->cells);
    free(t->lineno);
    memset(t, 0, sizeof *t);
}
