/* gguf: GGUF v2/v3 reader (see gguf.h).
 * Owns: parsing the header, the metadata key/value section (every value
 * type, string arrays with an offset table), the tensor-info table, and the
 * validation of all of it against the mapped file size. Every length and
 * count read from the file is checked against the bytes that remain BEFORE
 * anything is allocated or read, with overflow-safe arithmetic, so a corrupt
 * or hostile file yields a KVZ_EFORMAT message instead of a giant malloc or
 * an out-of-bounds read. Dequantization is delegated to dequant.c. */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "dequant.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
/* Smallest possible encodings, used to bound counts before allocating. */
#define MIN_KV_BYTES 13     /* key length (8) + value type (4) + 1-byte value */
#define MIN_TENSOR_BYTES 32 /* name length (8) + n_dims (4) + 1 dim (8) + type (4) + offset (8) */

typedef struct gguf_kv {
    char *key;                  /* owned, NUL-terminated */
    kvz_gguf_type type;
    kvz_gguf_type elem_type;    /* arrays only */
    uint64_t count;             /* arrays: elements; strings: bytes */
    const unsigned char *data;  /* scalar bytes, string bytes, or first array element */
    size_t *str_offsets;        /* string arrays: offset of element i's length field */
} gguf_kv;

struct kvz_gguf {
    kvz_mapped_file file;
    uint32_t version;
    size_t alignment;
    size_t data_start;          /* absolute file offset of the tensor data section */
    size_t n_kv;
    gguf_kv *kvs;
    size_t *kv_by_key;          /* kv indices sorted by key */
    size_t n_tensors;
    kvz_gguf_tensor_info *tensors;
    uint64_t *tensor_offsets;   /* as stored: relative to data_start */
    size_t *tensor_by_name;     /* tensor indices sorted by name */
};

/* ------------------------------------------------------------------ */
/* bounded cursor over the mapped file                                 */

typedef struct reader {
    const unsigned char *base;
    size_t size;
    size_t pos;
    const char *path;
    kvz_error *err;
} reader;

static size_t remaining(const reader *r)
{
    return r->size - r->pos;
}

static int take(reader *r, size_t n, const unsigned char **p, const char *what)
{
    if (n > remaining(r))
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: truncated: %s at offset %zu needs %zu bytes but only %zu remain",
                        r->path, what, r->pos, n, remaining(r));
    *p = r->base + r->pos;
    r->pos += n;
    return KVZ_OK;
}

static int read_u32(reader *r, uint32_t *v, const char *what)
{
    const unsigned char *p = NULL;
    int rc = take(r, 4, &p, what);
    if (rc == KVZ_OK)
        memcpy(v, p, 4);
    return rc;
}

static int read_u64(reader *r, uint64_t *v, const char *what)
{
    const unsigned char *p = NULL;
    int rc = take(r, 8, &p, what);
    if (rc == KVZ_OK)
        memcpy(v, p, 8);
    return rc;
}

/* A GGUF string: u64 byte length, then the bytes (no NUL). */
static int read_string(reader *r, const unsigned char **s, uint64_t *len, const char *what)
{
    size_t at = r->pos;
    int rc = read_u64(r, len, what);
    if (rc != KVZ_OK)
        return rc;
    if (*len > remaining(r))
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: truncated: %s at offset %zu has length %llu but only %zu bytes "
                        "remain in the file",
                        r->path, what, at, (unsigned long long)*len, remaining(r));
    return take(r, (size_t)*len, s, what);
}

/* Owned NUL-terminated copy of a name; embedded NULs are a format error. */
static int copy_name(reader *r, const unsigned char *s, uint64_t len, char **out,
                     const char *what)
{
    if (memchr(s, 0, (size_t)len))
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: %s at offset %zu contains a NUL byte",
                        r->path, what, r->pos - (size_t)len);
    *out = malloc((size_t)len + 1);
    if (!*out)
        return kvz_fail(r->err, KVZ_ENOMEM, "%s: out of memory", r->path);
    memcpy(*out, s, (size_t)len);
    (*out)[len] = '\0';
    return KVZ_OK;
}

/* ------------------------------------------------------------------ */
/* metadata values                                                     */

static const char *value_type_name(uint32_t t)
{
    static const char *names[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Bytes of one fixed-size value, 0 for string/array/unknown. */
static size_t scalar_size(uint32_t t)
{
    switch (t) {
    case KVZ_GGUF_UINT8: case KVZ_GGUF_INT8: case KVZ_GGUF_BOOL: return 1;
    case KVZ_GGUF_UINT16: case KVZ_GGUF_INT16: return 2;
    case KVZ_GGUF_UINT32: case KVZ_GGUF_INT32: case KVZ_GGUF_FLOAT32: return 4;
    case KVZ_GGUF_UINT64: case KVZ_GGUF_INT64: case KVZ_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int check_bools(reader *r, const unsigned char *p, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] > 1)
            return kvz_fail(r->err, KVZ_EFORMAT, "%s: key '%s': bool value %u is not 0 or 1",
                            r->path, key, p[i]);
    return KVZ_OK;
}

static int read_string_array(reader *r, gguf_kv *kv)
{
    if (kv->count > remaining(r) / 8)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: key '%s': string array count %llu is impossible: at least %llu "
                        "bytes needed but only %zu remain",
                        r->path, kv->key, (unsigned long long)kv->count,
                        (unsigned long long)kv->count * 8ull, remaining(r));
    kv->str_offsets = malloc((size_t)(kv->count ? kv->count : 1) * sizeof(size_t));
    if (!kv->str_offsets)
        return kvz_fail(r->err, KVZ_ENOMEM, "%s: out of memory", r->path);
    kv->data = r->base + r->pos;
    char what[160];
    snprintf(what, sizeof what, "string in array '%.100s'", kv->key);
    for (uint64_t i = 0; i < kv->count; i++) {
        kv->str_offsets[i] = (size_t)(r->base + r->pos - kv->data);
        const unsigned char *s;
        uint64_t len;
        int rc = read_string(r, &s, &len, what);
        if (rc != KVZ_OK)
            return rc;
    }
    return KVZ_OK;
}

static int read_array(reader *r, gguf_kv *kv)
{
    char what[160];
    snprintf(what, sizeof what, "array header of key '%.100s'", kv->key);
    uint32_t et;
    int rc = read_u32(r, &et, what);
    if (rc == KVZ_OK)
        rc = read_u64(r, &kv->count, what);
    if (rc != KVZ_OK)
        return rc;
    kv->elem_type = (kvz_gguf_type)et;
    if (et == KVZ_GGUF_ARRAY)
        return kvz_fail(r->err, KVZ_EUNSUPPORTED, "%s: key '%s': nested arrays are not supported",
                        r->path, kv->key);
    if (et == KVZ_GGUF_STRING)
        return read_string_array(r, kv);
    size_t es = scalar_size(et);
    if (es == 0)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: key '%s': unknown array element type %u",
                        r->path, kv->key, et);
    if (kv->count > remaining(r) / es)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: key '%s': array count %llu of %s is impossible: only %zu bytes "
                        "remain in the file",
                        r->path, kv->key, (unsigned long long)kv->count, value_type_name(et),
                        remaining(r));
    rc = take(r, (size_t)kv->count * es, &kv->data, "array data");
    if (rc == KVZ_OK && et == KVZ_GGUF_BOOL)
        rc = check_bools(r, kv->data, (size_t)kv->count, kv->key);
    return rc;
}

static int read_value(reader *r, gguf_kv *kv)
{
    char what[160];
    if (kv->type == KVZ_GGUF_ARRAY)
        return read_array(r, kv);
    if (kv->type == KVZ_GGUF_STRING) {
        snprintf(what, sizeof what, "string value of key '%.100s'", kv->key);
        return read_string(r, &kv->data, &kv->count, what);
    }
    size_t n = scalar_size(kv->type);
    if (n == 0)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: key '%s': unknown value type %u", r->path,
                        kv->key, (unsigned)kv->type);
    snprintf(what, sizeof what, "value of key '%.100s'", kv->key);
    int rc = take(r, n, &kv->data, what);
    if (rc == KVZ_OK && kv->type == KVZ_GGUF_BOOL)
        rc = check_bools(r, kv->data, 1, kv->key);
    return rc;
}

static int read_kv(reader *r, gguf_kv *kv, size_t index)
{
    char what[160];
    snprintf(what, sizeof what, "key of metadata entry %zu", index);
    const unsigned char *s;
    uint64_t len;
    int rc = read_string(r, &s, &len, what);
    if (rc == KVZ_OK)
        rc = copy_name(r, s, len, &kv->key, what);
    if (rc != KVZ_OK)
        return rc;
    uint32_t type;
    snprintf(what, sizeof what, "value type of key '%.100s'", kv->key);
    rc = read_u32(r, &type, what);
    if (rc != KVZ_OK)
        return rc;
    kv->type = (kvz_gguf_type)type;
    return read_value(r, kv);
}

/* ------------------------------------------------------------------ */
/* sorted name indices (duplicate detection and lookup)                */

typedef struct named_index {
    const char *name;
    size_t index;
} named_index;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const named_index *)a)->name, ((const named_index *)b)->name);
}

/* Sorts pairs[n] by name into idx[n]; returns the index of a duplicate or -1. */
static long sort_names(named_index *pairs, size_t *idx, size_t n)
{
    qsort(pairs, n, sizeof *pairs, cmp_named);
    long dup = -1;
    for (size_t i = 0; i < n; i++) {
        idx[i] = pairs[i].index;
        if (dup < 0 && i > 0 && !strcmp(pairs[i - 1].name, pairs[i].name))
            dup = (long)pairs[i].index;
    }
    return dup;
}

/* Binary search of idx[n] (sorted by name_of) for key; index or -1. */
static long find_sorted(const size_t *idx, size_t n, const char *key,
                        const char *(*name_of)(const void *owner, size_t i), const void *owner)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name_of(owner, idx[mid]), key);
        if (c == 0)
            return (long)idx[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static const char *kv_name_of(const void *owner, size_t i)
{
    return ((const kvz_gguf *)owner)->kvs[i].key;
}

static const char *tensor_name_of(const void *owner, size_t i)
{
    return ((const kvz_gguf *)owner)->tensors[i].name;
}

static int index_names(kvz_gguf *g, int tensors, kvz_error *err)
{
    size_t n = tensors ? g->n_tensors : g->n_kv;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    named_index *pairs = malloc((n ? n : 1) * sizeof *pairs);
    if (!idx || !pairs) {
        free(idx);
        free(pairs);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", g->file.path);
    }
    for (size_t i = 0; i < n; i++)
        pairs[i] = (named_index){tensors ? g->tensors[i].name : g->kvs[i].key, i};
    long dup = sort_names(pairs, idx, n);
    free(pairs);
    if (tensors)
        g->tensor_by_name = idx;
    else
        g->kv_by_key = idx;
    if (dup >= 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: duplicate %s '%s'", g->file.path,
                        tensors ? "tensor name" : "metadata key",
                        tensors ? g->tensors[dup].name : g->kvs[dup].key);
    return KVZ_OK;
}

/* ------------------------------------------------------------------ */
/* header                                                              */

/* v2 and v3 share the little-endian layout; v1 used 32-bit counts. */
static int check_version(uint32_t version, const char *path, kvz_error *err)
{
    if (version == 1)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: unsupported GGUF version 1 (only versions 2 and 3 are read)", path);
    if (version != 2 && version != 3) {
        if ((version & 0xffffu) == 0 && version != 0)
            return kvz_fail(err, KVZ_EUNSUPPORTED,
                            "%s: big-endian GGUF files are not supported", path);
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: unsupported GGUF version %u (only versions 2 and 3 are read)", path,
                        version);
    }
    return KVZ_OK;
}

static int read_header(kvz_gguf *g, reader *r, uint64_t *n_tensors, uint64_t *n_kv)
{
    const char *path = g->file.path;
    if (r->size == 0)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: empty file (not a GGUF file)", path);
    if (r->size < 4 || memcmp(r->base, "GGUF", 4) != 0)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: not a GGUF file (bad magic, expected \"GGUF\")",
                        path);
    r->pos = 4;
    int rc = read_u32(r, &g->version, "version");
    if (rc == KVZ_OK)
        rc = check_version(g->version, path, r->err);
    if (rc != KVZ_OK)
        return rc;
    rc = read_u64(r, n_tensors, "tensor count");
    if (rc == KVZ_OK)
        rc = read_u64(r, n_kv, "metadata key/value count");
    if (rc != KVZ_OK)
        return rc;
    size_t left = remaining(r);
    if (*n_kv > left / MIN_KV_BYTES)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: metadata key/value count %llu is impossible for a file of %zu bytes",
                        path, (unsigned long long)*n_kv, r->size);
    if (*n_tensors > left / MIN_TENSOR_BYTES)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: tensor count %llu is impossible for a file of %zu bytes", path,
                        (unsigned long long)*n_tensors, r->size);
    uint64_t need = *n_kv * MIN_KV_BYTES + *n_tensors * MIN_TENSOR_BYTES; /* both bounded */
    if (need > left)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: truncated: %llu metadata entries and %llu tensor infos need at "
                        "least %llu bytes after the header but only %zu remain",
                        path, (unsigned long long)*n_kv, (unsigned long long)*n_tensors,
                        (unsigned long long)need, left);
    return KVZ_OK;
}

static int read_all_kv(kvz_gguf *g, reader *r, uint64_t n_kv)
{
    g->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kvs);
    if (!g->kvs)
        return kvz_fail(r->err, KVZ_ENOMEM, "%s: out of memory", g->file.path);
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (size_t)i + 1; /* so close() frees a partially read entry */
        int rc = read_kv(r, &g->kvs[i], (size_t)i);
        if (rc != KVZ_OK)
            return rc;
    }
    return index_names(g, 0, r->err);
}

static int read_alignment(kvz_gguf *g, kvz_error *err)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    long i = kvz_gguf_find_key(g, "general.alignment");
    if (i < 0)
        return KVZ_OK;
    const gguf_kv *kv = &g->kvs[i];
    if (kv->type != KVZ_GGUF_UINT32)
        return kvz_fail(err, KVZ_EFORMAT, "%s: general.alignment has type %s, expected u32",
                        g->file.path, value_type_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->data, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: general.alignment %u is not a power of two",
                        g->file.path, a);
    g->alignment = a;
    return KVZ_OK;
}

/* ------------------------------------------------------------------ */
/* tensor infos                                                        */

static int read_dims(reader *r, kvz_gguf_tensor_info *t)
{
    int rc = read_u32(r, &t->n_dims, "tensor dimension count");
    if (rc != KVZ_OK)
        return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: tensor '%s': n_dims %u is not in 1..%d",
                        r->path, t->name, t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims && rc == KVZ_OK; d++)
        rc = read_u64(r, &t->ne[d], "tensor dimension");
    return rc;
}

/* numel and nbytes from shape and type, overflow-checked. */
static int size_tensor(reader *r, kvz_gguf_tensor_info *t)
{
    const char *tn = kvz_ggml_type_name(t->type);
    if (!tn)
        return kvz_fail(r->err, KVZ_EUNSUPPORTED, "%s: tensor '%s' has unknown ggml type %u",
                        r->path, t->name, t->type);
    uint64_t numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(numel, t->ne[d], &numel) || numel > (uint64_t)INT64_MAX)
            return kvz_fail(r->err, KVZ_EFORMAT,
                            "%s: tensor '%s': element count overflows", r->path, t->name);
    size_t bs = kvz_ggml_block_size(t->type);
    if (t->ne[0] % bs != 0)
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: tensor '%s': row length %llu is not a multiple of the %s block "
                        "size %zu",
                        r->path, t->name, (unsigned long long)t->ne[0], tn, bs);
    t->numel = numel;
    if (numel > SIZE_MAX || kvz_ggml_row_bytes(t->type, (size_t)numel, &t->nbytes) != KVZ_OK)
        return kvz_fail(r->err, KVZ_EFORMAT, "%s: tensor '%s': byte size overflows", r->path,
                        t->name);
    return KVZ_OK;
}

static int read_tensor_info(kvz_gguf *g, reader *r, size_t i)
{
    kvz_gguf_tensor_info *t = &g->tensors[i];
    char what[64];
    snprintf(what, sizeof what, "name of tensor %zu", i);
    const unsigned char *s;
    uint64_t len;
    char *name = NULL;
    int rc = read_string(r, &s, &len, what);
    if (rc == KVZ_OK)
        rc = copy_name(r, s, len, &name, what);
    t->name = name;
    if (rc == KVZ_OK)
        rc = read_dims(r, t);
    if (rc == KVZ_OK)
        rc = read_u32(r, &t->type, "tensor type");
    if (rc == KVZ_OK)
        rc = read_u64(r, &g->tensor_offsets[i], "tensor data offset");
    if (rc == KVZ_OK)
        rc = size_tensor(r, t);
    if (rc == KVZ_OK && g->tensor_offsets[i] % g->alignment != 0)
        rc = kvz_fail(r->err, KVZ_EFORMAT,
                      "%s: tensor '%s': data offset %llu is not aligned to %zu bytes", r->path,
                      t->name, (unsigned long long)g->tensor_offsets[i], g->alignment);
    return rc;
}

static int read_all_tensor_infos(kvz_gguf *g, reader *r, uint64_t n)
{
    size_t cnt = n ? (size_t)n : 1;
    g->tensors = calloc(cnt, sizeof *g->tensors);
    g->tensor_offsets = calloc(cnt, sizeof *g->tensor_offsets);
    if (!g->tensors || !g->tensor_offsets)
        return kvz_fail(r->err, KVZ_ENOMEM, "%s: out of memory", g->file.path);
    for (uint64_t i = 0; i < n; i++) {
        g->n_tensors = (size_t)i + 1;
        int rc = read_tensor_info(g, r, (size_t)i);
        if (rc != KVZ_OK)
            return rc;
    }
    return index_names(g, 1, r->err);
}

/* ------------------------------------------------------------------ */
/* data section                                                        */

static int place_tensors(kvz_gguf *g, reader *r)
{
    size_t pad = (g->alignment - r->pos % g->alignment) % g->alignment;
    g->data_start = r->pos + pad;
    if (g->n_tensors > 0 && pad > remaining(r))
        return kvz_fail(r->err, KVZ_EFORMAT,
                        "%s: truncated: tensor data section would start at %zu but the file "
                        "has %zu bytes",
                        g->file.path, g->data_start, r->size);
    for (size_t i = 0; i < g->n_tensors; i++) {
        kvz_gguf_tensor_info *t = &g->tensors[i];
        uint64_t off = g->tensor_offsets[i];
        size_t room = r->size - g->data_start;
        if (off > room || t->nbytes > room - off)
            return kvz_fail(r->err, KVZ_EFORMAT,
                            "%s: truncated: tensor '%s' data ends at %llu but the file has %zu "
                            "bytes",
                            g->file.path, t->name,
                            (unsigned long long)g->data_start + off + t->nbytes, r->size);
        t->data = r->base + g->data_start + off;
    }
    return KVZ_OK;
}

typedef struct offset_index {
    uint64_t offset;
    size_t index;
} offset_index;

static int cmp_offset(const void *a, const void *b)
{
    uint64_t x = ((const offset_index *)a)->offset, y = ((const offset_index *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Tensors sorted by data offset; each must end before the next begins. */
static int check_overlaps(kvz_gguf *g, kvz_error *err)
{
    size_t n = g->n_tensors;
    offset_index *by_off = malloc((n ? n : 1) * sizeof *by_off);
    if (!by_off)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", g->file.path);
    for (size_t i = 0; i < n; i++)
        by_off[i] = (offset_index){g->tensor_offsets[i], i};
    qsort(by_off, n, sizeof *by_off, cmp_offset);
    int rc = KVZ_OK;
    for (size_t k = 1; k < n && rc == KVZ_OK; k++) {
        const kvz_gguf_tensor_info *a = &g->tensors[by_off[k - 1].index];
        const kvz_gguf_tensor_info *b = &g->tensors[by_off[k].index];
        uint64_t end_a = by_off[k - 1].offset + a->nbytes; /* in range: checked */
        if (by_off[k].offset < end_a)
            rc = kvz_fail(err, KVZ_EFORMAT,
                          "%s: tensors '%s' (data bytes %llu..%llu) and '%s' (starting at %llu) "
                          "overlap",
                          g->file.path, a->name, (unsigned long long)by_off[k - 1].offset,
                          (unsigned long long)end_a, b->name,
                          (unsigned long long)by_off[k].offset);
    }
    free(by_off);
    return rc;
}

/* ------------------------------------------------------------------ */
/* open / close                                                        */

static int parse(kvz_gguf *g, kvz_error *err)
{
    reader r = {g->file.data, g->file.size, 0, g->file.path, err};
    uint64_t n_tensors, n_kv;
    int rc = read_header(g, &r, &n_tensors, &n_kv);
    if (rc == KVZ_OK)
        rc = read_all_kv(g, &r, n_kv);
    if (rc == KVZ_OK)
        rc = read_alignment(g, err);
    if (rc == KVZ_OK)
        rc = read_all_tensor_infos(g, &r, n_tensors);
    if (rc == KVZ_OK)
        rc = place_tensors(g, &r);
    if (rc == KVZ_OK)
        rc = check_overlaps(g, err);
    return rc;
}

int kvz_gguf_open(const char *path, kvz_gguf **out, kvz_error *err)
{
    *out = NULL;
    kvz_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    int rc = kvz_file_map(path, &g->file, err);
    if (rc == KVZ_OK)
        rc = parse(g, err);
    if (rc != KVZ_OK) {
        kvz_gguf_close(g);
        return rc;
    }
    *out = g;
    return KVZ_OK;
}

void kvz_gguf_close(kvz_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].str_offsets);
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->kv_by_key);
    free(g->tensors);
    free(g->tensor_offsets);
    free(g->tensor_by_name);
    kvz_file_unmap(&g->file);
    free(g);
}

const char *kvz_gguf_path(const kvz_gguf *g)
{
    return g->file.path;
}

uint32_t kvz_gguf_version(const kvz_gguf *g)
{
    return g->version;
}

size_t kvz_gguf_alignment(const kvz_gguf *g)
{
    return g->alignment;
}

uint64_t kvz_gguf_data_offset(const kvz_gguf *g)
{
    return g->data_start;
}

/* ------------------------------------------------------------------ */
/* metadata access                                                     */

size_t kvz_gguf_n_kv(const kvz_gguf *g)
{
    return g->n_kv;
}

long kvz_gguf_find_key(const kvz_gguf *g, const char *key)
{
    if (!g->kv_by_key)
        return -1;
    return find_sorted(g->kv_by_key, g->n_kv, key, kv_name_of, g);
}

const char *kvz_gguf_key_name(const kvz_gguf *g, size_t i)
{
    return i < g->n_kv ? g->kvs[i].key : NULL;
}

/* Out-of-range i yields an invalid type (no KVZ_GGUF_* value). */
kvz_gguf_type kvz_gguf_kv_type(const kvz_gguf *g, size_t i)
{
    return i < g->n_kv ? g->kvs[i].type : (kvz_gguf_type)-1;
}

/* A numeric value widened for conversion. */
typedef struct number {
    enum { NUM_UNSIGNED, NUM_SIGNED, NUM_FLOAT } kind;
    uint64_t u;
    int64_t i;
    double f;
} number;

/* Loads a numeric (non-bool) value of type t at p; 0 when t is not numeric. */
static int load_number(kvz_gguf_type t, const unsigned char *p, number *n)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } v;
    size_t sz = scalar_size(t);
    if (sz == 0 || t == KVZ_GGUF_BOOL)
        return 0;
    memcpy(&v, p, sz);
    switch (t) {
    case KVZ_GGUF_UINT8: *n = (number){NUM_UNSIGNED, v.u8, 0, 0}; break;
    case KVZ_GGUF_UINT16: *n = (number){NUM_UNSIGNED, v.u16, 0, 0}; break;
    case KVZ_GGUF_UINT32: *n = (number){NUM_UNSIGNED, v.u32, 0, 0}; break;
    case KVZ_GGUF_UINT64: *n = (number){NUM_UNSIGNED, v.u64, 0, 0}; break;
    case KVZ_GGUF_INT8: *n = (number){NUM_SIGNED, 0, v.i8, 0}; break;
    case KVZ_GGUF_INT16: *n = (number){NUM_SIGNED, 0, v.i16, 0}; break;
    case KVZ_GGUF_INT32: *n = (number){NUM_SIGNED, 0, v.i32, 0}; break;
    case KVZ_GGUF_INT64: *n = (number){NUM_SIGNED, 0, v.i64, 0}; break;
    case KVZ_GGUF_FLOAT32: *n = (number){NUM_FLOAT, 0, 0, v.f32}; break;
    case KVZ_GGUF_FLOAT64: *n = (number){NUM_FLOAT, 0, 0, v.f64}; break;
    default: return 0;
    }
    return 1;
}

static int number_to_u64(const number *n, uint64_t *out)
{
    if (n->kind == NUM_UNSIGNED)
        *out = n->u;
    else if (n->kind == NUM_SIGNED && n->i >= 0)
        *out = (uint64_t)n->i;
    else
        return 0;
    return 1;
}

static int number_to_i64(const number *n, int64_t *out)
{
    if (n->kind == NUM_SIGNED)
        *out = n->i;
    else if (n->kind == NUM_UNSIGNED && n->u <= (uint64_t)INT64_MAX)
        *out = (int64_t)n->u;
    else
        return 0;
    return 1;
}

static double number_to_f64(const number *n)
{
    return n->kind == NUM_FLOAT ? n->f : n->kind == NUM_SIGNED ? (double)n->i : (double)n->u;
}

static int lookup(const kvz_gguf *g, const char *key, const gguf_kv **kv, kvz_error *err)
{
    long i = kvz_gguf_find_key(g, key);
    if (i < 0)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: metadata key '%s' not found", g->file.path, key);
    *kv = &g->kvs[i];
    return KVZ_OK;
}

static int wrong_type(const kvz_gguf *g, const gguf_kv *kv, const char *wanted, kvz_error *err)
{
    const char *t = value_type_name(kv->type);
    if (kv->type == KVZ_GGUF_ARRAY)
        return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s' is an array of %s, expected %s",
                        g->file.path, kv->key, value_type_name(kv->elem_type), wanted);
    return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s' has type %s, expected %s",
                    g->file.path, kv->key, t, wanted);
}

static int out_of_range(const kvz_gguf *g, const char *key, const char *wanted, kvz_error *err)
{
    return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s': value does not fit %s",
                    g->file.path, key, wanted);
}

int kvz_gguf_get_u64(const kvz_gguf *g, const char *key, uint64_t *out, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    number n;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type == KVZ_GGUF_ARRAY || !load_number(kv->type, kv->data, &n) ||
        n.kind == NUM_FLOAT)
        return wrong_type(g, kv, "an unsigned integer", err);
    return number_to_u64(&n, out) ? KVZ_OK : out_of_range(g, key, "u64", err);
}

int kvz_gguf_get_i64(const kvz_gguf *g, const char *key, int64_t *out, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    number n;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type == KVZ_GGUF_ARRAY || !load_number(kv->type, kv->data, &n) ||
        n.kind == NUM_FLOAT)
        return wrong_type(g, kv, "an integer", err);
    return number_to_i64(&n, out) ? KVZ_OK : out_of_range(g, key, "i64", err);
}

int kvz_gguf_get_f64(const kvz_gguf *g, const char *key, double *out, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    number n;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type == KVZ_GGUF_ARRAY || !load_number(kv->type, kv->data, &n))
        return wrong_type(g, kv, "a number", err);
    *out = number_to_f64(&n);
    return KVZ_OK;
}

int kvz_gguf_get_bool(const kvz_gguf *g, const char *key, int *out, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type != KVZ_GGUF_BOOL)
        return wrong_type(g, kv, "bool", err);
    *out = kv->data[0] != 0;
    return KVZ_OK;
}

int kvz_gguf_get_str(const kvz_gguf *g, const char *key, const char **s, size_t *len,
                     kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type != KVZ_GGUF_STRING)
        return wrong_type(g, kv, "string", err);
    *s = (const char *)kv->data;
    *len = (size_t)kv->count;
    return KVZ_OK;
}

/* ------------------------------------------------------------------ */
/* arrays                                                              */

int kvz_gguf_get_array(const kvz_gguf *g, const char *key, kvz_gguf_type *elem_type,
                       size_t *count, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = lookup(g, key, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->type != KVZ_GGUF_ARRAY)
        return wrong_type(g, kv, "array", err);
    if (elem_type)
        *elem_type = kv->elem_type;
    if (count)
        *count = (size_t)kv->count;
    return KVZ_OK;
}

/* The array kv for key, with i checked against its count. */
static int array_element(const kvz_gguf *g, const char *key, size_t i, const gguf_kv **kv,
                         kvz_error *err)
{
    int rc = lookup(g, key, kv, err);
    if (rc != KVZ_OK)
        return rc;
    if ((*kv)->type != KVZ_GGUF_ARRAY)
        return wrong_type(g, *kv, "array", err);
    if (i >= (*kv)->count)
        return kvz_fail(err, KVZ_EINVAL, "%s: metadata array '%s': index %zu out of range (%llu "
                        "elements)", g->file.path, key, i, (unsigned long long)(*kv)->count);
    return KVZ_OK;
}

static int array_wrong_elem(const kvz_gguf *g, const gguf_kv *kv, const char *wanted,
                            kvz_error *err)
{
    return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s' is an array of %s, expected %s",
                    g->file.path, kv->key, value_type_name(kv->elem_type), wanted);
}

int kvz_gguf_array_str(const kvz_gguf *g, const char *key, size_t i, const char **s,
                       size_t *len, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = array_element(g, key, i, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->elem_type != KVZ_GGUF_STRING)
        return array_wrong_elem(g, kv, "strings", err);
    const unsigned char *p = kv->data + kv->str_offsets[i];
    uint64_t n;
    memcpy(&n, p, 8);
    *s = (const char *)(p + 8);
    *len = (size_t)n;
    return KVZ_OK;
}

static int array_number(const kvz_gguf *g, const char *key, size_t i, number *n,
                        const char *wanted, kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = array_element(g, key, i, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    size_t es = scalar_size(kv->elem_type);
    if (!load_number(kv->elem_type, kv->data + i * es, n))
        return array_wrong_elem(g, kv, wanted, err);
    return KVZ_OK;
}

int kvz_gguf_array_i64(const kvz_gguf *g, const char *key, size_t i, int64_t *out,
                       kvz_error *err)
{
    number n;
    int rc = array_number(g, key, i, &n, "integers", err);
    if (rc != KVZ_OK)
        return rc;
    if (n.kind == NUM_FLOAT)
        return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s' is an array of floats, "
                        "expected integers", g->file.path, key);
    return number_to_i64(&n, out) ? KVZ_OK : out_of_range(g, key, "i64", err);
}

int kvz_gguf_array_u64(const kvz_gguf *g, const char *key, size_t i, uint64_t *out,
                       kvz_error *err)
{
    number n;
    int rc = array_number(g, key, i, &n, "integers", err);
    if (rc != KVZ_OK)
        return rc;
    if (n.kind == NUM_FLOAT)
        return kvz_fail(err, KVZ_EFORMAT, "%s: metadata key '%s' is an array of floats, "
                        "expected integers", g->file.path, key);
    return number_to_u64(&n, out) ? KVZ_OK : out_of_range(g, key, "u64", err);
}

int kvz_gguf_array_f64(const kvz_gguf *g, const char *key, size_t i, double *out,
                       kvz_error *err)
{
    number n;
    int rc = array_number(g, key, i, &n, "numbers", err);
    if (rc == KVZ_OK)
        *out = number_to_f64(&n);
    return rc;
}

int kvz_gguf_array_bool(const kvz_gguf *g, const char *key, size_t i, int *out,
                        kvz_error *err)
{
    const gguf_kv *kv = NULL;
    int rc = array_element(g, key, i, &kv, err);
    if (rc != KVZ_OK)
        return rc;
    if (kv->elem_type != KVZ_GGUF_BOOL)
        return array_wrong_elem(g, kv, "bools", err);
    *out = kv->data[i] != 0;
    return KVZ_OK;
}

/* ------------------------------------------------------------------ */
/* tensors                                                             */

size_t kvz_gguf_n_tensors(const kvz_gguf *g)
{
    return g->n_tensors;
}

const kvz_gguf_tensor_info *kvz_gguf_tensor(const kvz_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kvz_gguf_tensor_info *kvz_gguf_find_tensor(const kvz_gguf *g, const char *name)
{
    if (!g->tensor_by_name)
        return NULL;
    long i = find_sorted(g->tensor_by_name, g->n_tensors, name, tensor_name_of, g);
    return i < 0 ? NULL : &g->tensors[i];
}

uint64_t kvz_gguf_tensor_offset(const kvz_gguf *g, const kvz_gguf_tensor_info *t)
{
    return g->tensor_offsets[t - g->tensors];
}

static int check_dequantizable(const kvz_gguf *g, const kvz_gguf_tensor_info *t, kvz_error *err)
{
    if (kvz_ggml_type_supported(t->type))
        return KVZ_OK;
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "%s: tensor '%s' has type %s (%u), which kvzap cannot dequantize "
                    "(supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K)",
                    g->file.path, t->name, kvz_ggml_type_name(t->type), t->type);
}

int kvz_gguf_tensor_to_f32(const kvz_gguf *g, const kvz_gguf_tensor_info *t, float *out,
                           kvz_error *err)
{
    int rc = check_dequantizable(g, t, err);
    if (rc != KVZ_OK)
        return rc;
    /* Cannot fail: type supported, row length a multiple of the block (open). */
    return kvz_dequantize(t->type, t->data, out, (size_t)t->numel);
}

int kvz_gguf_tensor_rows_to_f32(const kvz_gguf *g, const kvz_gguf_tensor_info *t,
                                size_t first_row, size_t n_rows, float *out, kvz_error *err)
{
    int rc = check_dequantizable(g, t, err);
    if (rc != KVZ_OK)
        return rc;
    size_t row_len = (size_t)t->ne[0];
    size_t total_rows = row_len ? (size_t)(t->numel / row_len) : 0;
    if (first_row > total_rows || n_rows > total_rows - first_row)
        return kvz_fail(err, KVZ_EINVAL, "%s: tensor '%s': rows %zu..%zu out of range (%zu rows)",
                        g->file.path, t->name, first_row, first_row + n_rows, total_rows);
    size_t row_bytes = 0;
    kvz_ggml_row_bytes(t->type, row_len, &row_bytes); /* cannot fail: validated at open */
    const unsigned char *src = (const unsigned char *)t->data + first_row * row_bytes;
    return kvz_dequantize(t->type, src, out, n_rows * row_len);
}
