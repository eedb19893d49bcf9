/* safetensors: mapped, validated safetensors files and sharded indexes
 * (see safetensors.h). Every header field is checked against the file size
 * before any tensor pointer is handed out. */
#include "safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "dequant.h"
#include "kvz_json.h"

#define KVZ_ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)

struct kvz_safetensors {
    char *path;               /* index file or the single file */
    size_t n_files;
    kvz_mapped_file *files;
    json_t *metadata;         /* first file's "__metadata__" (or NULL) */
    size_t n_tensors, cap_tensors;
    kvz_st_tensor *tensors;   /* sorted by name once open */
};

static const struct {
    const char *name;
    size_t size;
} DTYPES[KVZ_ST_N_DTYPES] = {
    [KVZ_ST_BOOL] = {"BOOL", 1},    [KVZ_ST_U8] = {"U8", 1},   [KVZ_ST_I8] = {"I8", 1},
    [KVZ_ST_F8_E5M2] = {"F8_E5M2", 1}, [KVZ_ST_F8_E4M3] = {"F8_E4M3", 1},
    [KVZ_ST_I16] = {"I16", 2},      [KVZ_ST_U16] = {"U16", 2}, [KVZ_ST_F16] = {"F16", 2},
    [KVZ_ST_BF16] = {"BF16", 2},    [KVZ_ST_I32] = {"I32", 4}, [KVZ_ST_U32] = {"U32", 4},
    [KVZ_ST_F32] = {"F32", 4},      [KVZ_ST_F64] = {"F64", 8}, [KVZ_ST_I64] = {"I64", 8},
    [KVZ_ST_U64] = {"U64", 8},
};

const char *kvz_st_dtype_name(kvz_st_dtype dtype)
{
    return (unsigned)dtype < KVZ_ST_N_DTYPES ? DTYPES[dtype].name : "?";
}

size_t kvz_st_dtype_size(kvz_st_dtype dtype)
{
    return (unsigned)dtype < KVZ_ST_N_DTYPES ? DTYPES[dtype].size : 0;
}

int kvz_st_dtype_is_float_weight(kvz_st_dtype dtype)
{
    return dtype == KVZ_ST_F32 || dtype == KVZ_ST_F16 || dtype == KVZ_ST_BF16;
}

static int dtype_from_name(const char *s, kvz_st_dtype *out)
{
    for (int i = 0; i < KVZ_ST_N_DTYPES; i++)
        if (!strcmp(s, DTYPES[i].name)) {
            *out = (kvz_st_dtype)i;
            return 1;
        }
    return 0;
}

/* ---------- F16/BF16 -> fp32 (bits via dequant.h; data may be unaligned) ---------- */

static void half_to_f32(const void *src, int is_bf16, float *out, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        out[i] = is_bf16 ? kvz_bf16_to_f32(h) : kvz_f16_to_f32(h);
    }
}

/* ---------- one tensor entry of a header ---------- */

/* A JSON value that is a non-negative integer. */
static int get_count(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static void format_shape(const kvz_st_tensor *t, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

static int parse_shape(const char *file, const char *name, const json_t *shape, kvz_st_tensor *t,
                       kvz_error *err)
{
    if (!json_is_array(shape))
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", file, name);
    if (json_array_size(shape) > KVZ_ST_MAX_DIMS)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: tensor '%s' has %zu dimensions (at most %d)",
                        file, name, json_array_size(shape), KVZ_ST_MAX_DIMS);
    t->n_dims = (uint32_t)json_array_size(shape);
    t->numel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (!get_count(json_array_get(shape, d), &t->shape[d]))
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: tensor '%s': shape entry %u is not a non-negative integer", file,
                            name, d);
        if (__builtin_mul_overflow(t->numel, t->shape[d], &t->numel))
            return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': shape overflows", file, name);
    }
    return KVZ_OK;
}

/* Parses {"dtype","shape","data_offsets"} into t (data not yet set). */
static int parse_entry(const char *file, const char *name, const json_t *v, kvz_st_tensor *t,
                       uint64_t *begin, uint64_t *end, kvz_error *err)
{
    if (!json_is_object(v))
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': entry is not a JSON object", file, name);
    const json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': missing string \"dtype\"", file, name);
    if (!dtype_from_name(json_string_value(dt), &t->dtype))
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: tensor '%s' has unsupported dtype '%s'", file,
                        name, json_string_value(dt));
    int rc = parse_shape(file, name, json_object_get(v, "shape"), t, err);
    if (rc)
        return rc;
    const json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !get_count(json_array_get(off, 0), begin) || !get_count(json_array_get(off, 1), end))
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: tensor '%s': \"data_offsets\" is not two non-negative integers", file,
                        name);
    if (*begin > *end)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] begin after they end",
                        file, name, (unsigned long long)*begin, (unsigned long long)*end);
    uint64_t need;
    if (__builtin_mul_overflow(t->numel, (uint64_t)kvz_st_dtype_size(t->dtype), &need) ||
        need > SIZE_MAX)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: tensor '%s': size overflows (%llu elements of %s)", file, name,
                        (unsigned long long)t->numel, kvz_st_dtype_name(t->dtype));
    if (need != *end - *begin) {
        char shp[160];
        format_shape(t, shp, sizeof shp);
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: tensor '%s' (%s, shape %s) needs %llu bytes but data_offsets [%llu, %llu] span %llu",
                        file, name, kvz_st_dtype_name(t->dtype), shp, (unsigned long long)need,
                        (unsigned long long)*begin, (unsigned long long)*end,
                        (unsigned long long)(*end - *begin));
    }
    t->nbytes = (size_t)need;
    return KVZ_OK;
}

/* ---------- layout of one file's data section ---------- */

typedef struct span {
    uint64_t begin, end;
    size_t tensor; /* index into st->tensors */
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted by begin, the spans must tile [0, data_size) exactly. */
static int check_layout(const kvz_safetensors *st, const char *file, span *sp, size_t n,
                        uint64_t data_size, kvz_error *err)
{
    qsort(sp, n, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = st->tensors[sp[i].tensor].name;
        if (sp[i].begin < pos)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: tensors '%s' and '%s' overlap: '%s' begins at byte %llu, before '%s' ends at %llu",
                            file, prev, name, name, (unsigned long long)sp[i].begin, prev,
                            (unsigned long long)pos);
        if (sp[i].begin > pos) {
            if (!prev)
                return kvz_fail(err, KVZ_EFORMAT,
                                "%s: gap in the data section: the first tensor '%s' begins at byte %llu, not 0",
                                file, name, (unsigned long long)sp[i].begin);
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: gap in the data section: %llu unused bytes between '%s' (ends at %llu) and '%s' (begins at %llu)",
                            file, (unsigned long long)(sp[i].begin - pos), prev,
                            (unsigned long long)pos, name, (unsigned long long)sp[i].begin);
        }
        pos = sp[i].end;
        prev = name;
    }
    if (pos != data_size)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: %llu unused bytes after the last tensor in the data section (%llu bytes)",
                        file, (unsigned long long)(data_size - pos), (unsigned long long)data_size);
    return KVZ_OK;
}

/* ---------- one file ---------- */

static int push_tensor(kvz_safetensors *st, const char *name, kvz_error *err, kvz_st_tensor **out)
{
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        kvz_st_tensor *nt = realloc(st->tensors, cap * sizeof *nt);
        if (!nt)
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->path);
        st->tensors = nt;
        st->cap_tensors = cap;
    }
    kvz_st_tensor *t = &st->tensors[st->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->path);
    st->n_tensors++;
    *out = t;
    return KVZ_OK;
}

static int check_metadata(const char *file, const json_t *meta, kvz_error *err)
{
    if (!json_is_object(meta))
        return kvz_fail(err, KVZ_EFORMAT, "%s: \"__metadata__\" is not a JSON object", file);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)meta, key, v)
        if (!json_is_string(v))
            return kvz_fail(err, KVZ_EFORMAT, "%s: \"__metadata__\" value '%s' is not a string",
                            file, key);
    return KVZ_OK;
}

/* Reads the header length and parses the JSON header of file fi. */
static int load_header(const kvz_mapped_file *f, json_t **root, uint64_t *data_off, kvz_error *err)
{
    if (f->size < 8)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: too small for a safetensors file (%zu bytes; the header length alone is 8)",
                        f->path, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->data[i];
    if (hlen > f->size - 8)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes)", f->path,
                        (unsigned long long)hlen, f->size);
    if (hlen > KVZ_ST_MAX_HEADER)
        return kvz_fail(err, KVZ_EFORMAT, "%s: header length %llu exceeds the 100 MB limit",
                        f->path, (unsigned long long)hlen);
    json_error_t jerr;
    /* a failed allocation inside jansson may also leave a mangled value
     * behind a successful load (kvz_json.h) */
    kvz_json_begin();
    *root = json_loadb((const char *)f->data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (kvz_json_failed() || (!*root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(*root);
        *root = NULL;
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", f->path);
    }
    if (!*root)
        return kvz_fail(err, KVZ_EFORMAT, "%s: header is not valid JSON: %s (line %d, column %d)",
                        f->path, jerr.text, jerr.line, jerr.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return kvz_fail(err, KVZ_EFORMAT, "%s: header is not a JSON object", f->path);
    }
    *data_off = 8 + hlen;
    return KVZ_OK;
}

static int parse_entries(kvz_safetensors *st, size_t fi, json_t *root, uint64_t data_off,
                         span *sp, size_t *n_sp, kvz_error *err)
{
    const kvz_mapped_file *f = &st->files[fi];
    uint64_t data_size = f->size - data_off;
    const char *key;
    json_t *v;
    int rc = KVZ_OK;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if ((rc = check_metadata(f->path, v, err)))
                return rc;
            if (fi == 0 && !st->metadata)
                st->metadata = json_incref(v);
            continue;
        }
        kvz_st_tensor *t = NULL;
        uint64_t begin = 0, end = 0;
        if ((rc = push_tensor(st, key, err, &t)) ||
            (rc = parse_entry(f->path, key, v, t, &begin, &end, err)))
            return rc;
        if (end > data_size)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: truncated or out of range: tensor '%s' data_offsets [%llu, %llu] end past the data section (%llu bytes; file %zu bytes)",
                            f->path, key, (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)data_size, f->size);
        t->data = f->data + data_off + begin;
        t->file_index = fi;
        sp[*n_sp] = (span){begin, end, st->n_tensors - 1};
        (*n_sp)++;
    }
    return check_layout(st, f->path, sp, *n_sp, data_size, err);
}

static int parse_file(kvz_safetensors *st, size_t fi, kvz_error *err)
{
    json_t *root = NULL;
    uint64_t data_off = 0;
    int rc = load_header(&st->files[fi], &root, &data_off, err);
    if (rc)
        return rc;
    size_t n_sp = 0;
    span *sp = malloc((json_object_size(root) + 1) * sizeof *sp);
    if (!sp)
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->files[fi].path);
    else
        rc = parse_entries(st, fi, root, data_off, sp, &n_sp, err);
    free(sp);
    json_decref(root);
    return rc;
}

/* ---------- files, shards, lookup ---------- */

static int add_file(kvz_safetensors *st, const char *path, kvz_error *err)
{
    kvz_mapped_file *nf = realloc(st->files, (st->n_files + 1) * sizeof *nf);
    if (!nf)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    st->files = nf;
    int rc = kvz_file_map(path, &st->files[st->n_files], err);
    if (rc)
        return rc;
    st->n_files++;
    return parse_file(st, st->n_files - 1, err);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const kvz_st_tensor *)a)->name, ((const kvz_st_tensor *)b)->name);
}

/* Sorts by name; a name stored twice (in two shards) is an error. */
static int sort_and_check_unique(kvz_safetensors *st, kvz_error *err)
{
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name))
            return kvz_fail(err, KVZ_EFORMAT, "%s: tensor '%s' is stored twice: in %s and in %s",
                            st->path, st->tensors[i].name,
                            st->files[st->tensors[i - 1].file_index].path,
                            st->files[st->tensors[i].file_index].path);
    return KVZ_OK;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* Opens shard fname (relative to dir) unless it is already open. */
static int open_shard(kvz_safetensors *st, const char *dir, const char *fname, const char *tensor,
                      kvz_error *err)
{
    if (!*fname || strchr(fname, '/'))
        return kvz_fail(err, KVZ_EFORMAT, "%s: weight_map entry for '%s' names '%s', not a file name in the same directory",
                        st->path, tensor, fname);
    char *p = kvz_path_join(dir, fname);
    if (!p)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->path);
    int rc = KVZ_OK;
    size_t i = 0;
    while (i < st->n_files && strcmp(st->files[i].path, p))
        i++;
    if (i == st->n_files) {
        if (!kvz_path_exists(p))
            rc = kvz_fail(err, KVZ_EIO, "%s: shard '%s' (listed for tensor '%s') does not exist",
                          st->path, fname, tensor);
        else
            rc = add_file(st, p, err);
    }
    free(p);
    return rc;
}

/* Every weight_map entry must be held by the shard it names. */
static int check_weight_map(kvz_safetensors *st, const json_t *wmap, const char *dir, kvz_error *err)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)wmap, name, v) {
        const kvz_st_tensor *t = kvz_safetensors_find(st, name);
        char *p = kvz_path_join(dir, json_string_value(v));
        int ok = p && t && !strcmp(st->files[t->file_index].path, p);
        free(p);
        if (!ok)
            return kvz_fail(err, KVZ_EFORMAT,
                            "%s: tensor '%s' is mapped to shard '%s' but that shard does not hold it",
                            st->path, name, json_string_value(v));
    }
    return KVZ_OK;
}

static int open_index(kvz_safetensors *st, kvz_error *err)
{
    json_error_t jerr;
    kvz_json_begin(); /* see parse_header */
    json_t *root = json_load_file(st->path, JSON_REJECT_DUPLICATES, &jerr);
    if (kvz_json_failed() || (!root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(root);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->path);
    }
    if (!root)
        return kvz_fail(err, KVZ_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", st->path,
                        jerr.text, jerr.line, jerr.column);
    int rc = KVZ_OK;
    char *dir = dir_of(st->path);
    json_t *wmap = json_object_get(root, "weight_map");
    if (!dir)
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", st->path);
    else if (!json_is_object(wmap) || json_object_size(wmap) == 0)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: missing or empty \"weight_map\" object", st->path);
    const char *name;
    json_t *v;
    if (!rc)
        json_object_foreach(wmap, name, v) {
            if (!json_is_string(v))
                rc = kvz_fail(err, KVZ_EFORMAT, "%s: weight_map entry for '%s' is not a string",
                              st->path, name);
            else
                rc = open_shard(st, dir, json_string_value(v), name, err);
            if (rc)
                break;
        }
    if (!rc)
        rc = sort_and_check_unique(st, err);
    if (!rc)
        rc = check_weight_map(st, wmap, dir, err);
    free(dir);
    json_decref(root);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Directory -> its index or model.safetensors (malloc'ed path). */
static int resolve_path(const char *path, char **out, kvz_error *err)
{
    *out = NULL;
    if (!kvz_path_is_dir(path)) {
        *out = strdup(path);
        return *out ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    static const char *const CANDIDATES[] = {"model.safetensors.index.json", "model.safetensors"};
    for (size_t i = 0; i < 2; i++) {
        char *p = kvz_path_join(path, CANDIDATES[i]);
        if (!p)
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
        if (kvz_path_exists(p)) {
            *out = p;
            return KVZ_OK;
        }
        free(p);
    }
    return kvz_fail(err, KVZ_ENOTFOUND,
                    "%s: no weights: neither model.safetensors nor model.safetensors.index.json",
                    path);
}

int kvz_safetensors_open(const char *path, kvz_safetensors **out, kvz_error *err)
{
    *out = NULL;
    kvz_safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    int rc = resolve_path(path, &st->path, err);
    if (!rc && ends_with(st->path, ".json"))
        rc = open_index(st, err);
    else if (!rc) {
        rc = add_file(st, st->path, err);
        if (!rc)
            rc = sort_and_check_unique(st, err);
    }
    if (rc) {
        kvz_safetensors_close(st);
        return rc;
    }
    *out = st;
    return KVZ_OK;
}

void kvz_safetensors_close(kvz_safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_files; i++)
        kvz_file_unmap(&st->files[i]);
    free(st->files);
    json_decref(st->metadata);
    free(st->path);
    free(st);
}

size_t kvz_safetensors_n_tensors(const kvz_safetensors *st) { return st->n_tensors; }

const kvz_st_tensor *kvz_safetensors_tensor(const kvz_safetensors *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const kvz_st_tensor *kvz_safetensors_find(const kvz_safetensors *st, const char *name)
{
    kvz_st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_tensor_name);
}

size_t kvz_safetensors_n_files(const kvz_safetensors *st) { return st->n_files; }

const char *kvz_safetensors_file_path(const kvz_safetensors *st, size_t i)
{
    return i < st->n_files ? st->files[i].path : NULL;
}

size_t kvz_safetensors_file_size(const kvz_safetensors *st, size_t i)
{
    return i < st->n_files ? st->files[i].size : 0;
}

const char *kvz_safetensors_path(const kvz_safetensors *st) { return st->path; }

const char *kvz_safetensors_metadata(const kvz_safetensors *st, const char *key)
{
    return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}

int kvz_safetensors_to_f32(const kvz_safetensors *st, const kvz_st_tensor *t, float *out,
                           size_t out_numel, kvz_error *err)
{
    const char *file = st->files[t->file_index].path;
    if (!kvz_st_dtype_is_float_weight(t->dtype))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: tensor '%s' has dtype %s, which cannot be read as weights (supported: F32, F16, BF16)",
                        file, t->name, kvz_st_dtype_name(t->dtype));
    if (out_numel != t->numel)
        return kvz_fail(err, KVZ_EINVAL, "%s: tensor '%s' has %llu elements, destination holds %zu",
                        file, t->name, (unsigned long long)t->numel, out_numel);
    if (t->dtype == KVZ_ST_F32)
        memcpy(out, t->data, t->nbytes);
    else
        half_to_f32(t->data, t->dtype == KVZ_ST_BF16, out, out_numel);
    return KVZ_OK;
}
