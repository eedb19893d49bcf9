/* kv_cache: the ragged per-KV-head KV cache (layout, growth and the
 * compaction protocol are stated in kv_cache.h). Everything on the backend
 * goes through the op interface (copies, row copies, row gathers), so this
 * one file serves the cpu and the cuda backends. */
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

enum { MIN_CAP = 256 };

typedef struct kv_layer {
    kvz_buf k, v;      /* [Hkv, cap, dh] fp32 */
    kvz_buf pos;       /* [Hkv, cap] int32 */
    kvz_buf count;     /* [Hkv] int32 */
    int32_t *hpos;     /* host copy [Hkv, cap] */
    int32_t *hcount;   /* host copy [Hkv] */
    size_t cap, seen;
} kv_layer;

struct kvz_kv_cache {
    kvz_backend *be;
    size_t n_layers, hkv, dh;
    kv_layer *layers;
    kvz_buf scratch; /* [scratch_rows, dh] fp32: compaction target */
    kvz_buf idx;     /* [scratch_rows] int64: kept rows */
    int64_t *hidx;   /* host [scratch_rows] */
    size_t scratch_rows;
    size_t bytes, peak;
};

static size_t layer_bytes(const kvz_kv_cache *c, size_t cap)
{
    return c->hkv * cap * (2 * c->dh * sizeof(float) + sizeof(int32_t)) +
           c->hkv * sizeof(int32_t);
}

static void account(kvz_kv_cache *c)
{
    size_t b = c->scratch_rows * (c->dh * sizeof(float) + sizeof(int64_t));
    for (size_t l = 0; l < c->n_layers; l++)
        b += c->layers[l].cap ? layer_bytes(c, c->layers[l].cap) : 0;
    c->bytes = b;
    if (b > c->peak)
        c->peak = b;
}

int kvz_kv_cache_create(kvz_backend *be, size_t n_layers, size_t n_kv_heads, size_t head_dim,
                        kvz_kv_cache **out, kvz_error *err)
{
    *out = NULL;
    if (!be || !n_layers || !n_kv_heads || !head_dim)
        return kvz_fail(err, KVZ_EINVAL, "kv cache: bad shape (%zu layers, %zu KV heads, "
                        "head_dim %zu)", n_layers, n_kv_heads, head_dim);
    kvz_kv_cache *c = calloc(1, sizeof *c);
    if (c)
        c->layers = calloc(n_layers, sizeof *c->layers);
    if (!c || !c->layers) {
        free(c);
        return kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory");
    }
    c->be = be;
    c->n_layers = n_layers;
    c->hkv = n_kv_heads;
    c->dh = head_dim;
    *out = c;
    return KVZ_OK;
}

static void free_layer(kvz_kv_cache *c, kv_layer *L)
{
    kvz_backend_free(c->be, &L->k);
    kvz_backend_free(c->be, &L->v);
    kvz_backend_free(c->be, &L->pos);
    kvz_backend_free(c->be, &L->count);
    free(L->hpos);
    free(L->hcount);
    memset(L, 0, sizeof *L);
}

void kvz_kv_cache_free(kvz_kv_cache *c)
{
    if (!c)
        return;
    for (size_t l = 0; l < c->n_layers; l++)
        free_layer(c, &c->layers[l]);
    kvz_backend_free(c->be, &c->scratch);
    kvz_backend_free(c->be, &c->idx);
    free(c->hidx);
    free(c->layers);
    free(c);
}

void kvz_kv_cache_reset(kvz_kv_cache *c)
{
    for (size_t l = 0; l < c->n_layers; l++) {
        kv_layer *L = &c->layers[l];
        L->seen = 0;
        if (L->hcount) {
            memset(L->hcount, 0, c->hkv * sizeof *L->hcount);
            kvz_error ignore = {0}; /* host copy is authoritative; re-uploaded on append */
            kvz_backend_upload(c->be, L->count.data, L->hcount, c->hkv * sizeof(int32_t),
                               &ignore);
        }
    }
}

static int upload_head(kvz_kv_cache *c, kv_layer *L, size_t g, kvz_error *err)
{
    int rc = kvz_backend_upload(c->be, (int32_t *)L->pos.data + g * L->cap,
                                L->hpos + g * L->cap, (size_t)L->hcount[g] * sizeof(int32_t),
                                err);
    return rc ? rc : kvz_backend_upload(c->be, (int32_t *)L->count.data + g, L->hcount + g,
                                        sizeof(int32_t), err);
}

/* Moves a layer to slabs of cap rows, keeping every head's kept rows. */
static int resize_layer(kvz_kv_cache *c, kv_layer *L, size_t cap, kvz_error *err)
{
    kv_layer n = {0};
    n.cap = cap;
    n.seen = L->seen;
    size_t rows = c->hkv * cap;
    int rc = kvz_backend_alloc(c->be, KVZ_F32, rows * c->dh, "the pruned K cache", &n.k, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_F32, rows * c->dh, "the pruned V cache", &n.v, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I32, rows, "the pruned cache's positions", &n.pos, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I32, c->hkv, "the pruned cache's counts", &n.count, err);
    n.hpos = rc ? NULL : calloc(rows, sizeof *n.hpos);
    n.hcount = rc ? NULL : calloc(c->hkv, sizeof *n.hcount);
    if (!rc && (!n.hpos || !n.hcount))
        rc = kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory for %zu positions", rows);
    for (size_t g = 0; !rc && g < c->hkv; g++) {
        size_t cnt = L->hcount ? (size_t)L->hcount[g] : 0;
        n.hcount[g] = (int32_t)cnt;
        if (!cnt)
            continue;
        memcpy(n.hpos + g * cap, L->hpos + g * L->cap, cnt * sizeof(int32_t));
        size_t bytes = cnt * c->dh * sizeof(float), from = g * L->cap * c->dh,
               to = g * cap * c->dh;
        rc = kvz_backend_copy(c->be, kvz_buf_f32(n.k) + to, kvz_buf_f32(L->k) + from, bytes, err);
        rc = rc ? rc : kvz_backend_copy(c->be, kvz_buf_f32(n.v) + to, kvz_buf_f32(L->v) + from,
                                        bytes, err);
    }
    for (size_t g = 0; !rc && g < c->hkv; g++)
        rc = upload_head(c, &n, g, err);
    if (rc) {
        free_layer(c, &n);
        return rc;
    }
    free_layer(c, L);
    *L = n;
    account(c);
    return KVZ_OK;
}

static size_t max_count(const kvz_kv_cache *c, const kv_layer *L)
{
    size_t m = 0;
    for (size_t g = 0; L->hcount && g < c->hkv; g++)
        if ((size_t)L->hcount[g] > m)
            m = (size_t)L->hcount[g];
    return m;
}

int kvz_kv_cache_append(kvz_kv_cache *c, size_t layer, const float *k_rows,
                        const float *v_rows, size_t n, size_t pos0, kvz_error *err)
{
    if (layer >= c->n_layers || !k_rows || !v_rows)
        return kvz_fail(err, KVZ_EINVAL, "kv cache: bad append (layer %zu of %zu)", layer,
                        c->n_layers);
    kv_layer *L = &c->layers[layer];
    if (pos0 < L->seen || pos0 + n > (size_t)INT32_MAX)
        return kvz_fail(err, KVZ_EINVAL, "kv cache: layer %zu: append at position %zu, but "
                        "%zu positions were already seen", layer, pos0, L->seen);
    if (!n)
        return KVZ_OK;
    size_t need = max_count(c, L) + n;
    if (need > L->cap) {
        size_t cap = L->cap ? L->cap : MIN_CAP;
        while (cap < need)
            cap *= 2;
        int rc = resize_layer(c, L, cap, err);
        if (rc)
            return rc;
    }
    size_t row = c->hkv * c->dh;
    for (size_t g = 0; g < c->hkv; g++) {
        size_t at = (g * L->cap + (size_t)L->hcount[g]) * c->dh;
        int rc = kvz_op_copy_rows(c->be, kvz_buf_f32(L->k) + at, c->dh, k_rows + g * c->dh, row,
                                  n, c->dh, err);
        rc = rc ? rc : kvz_op_copy_rows(c->be, kvz_buf_f32(L->v) + at, c->dh,
                                        v_rows + g * c->dh, row, n, c->dh, err);
        if (rc)
            return rc;
        int32_t *p = L->hpos + g * L->cap + L->hcount[g];
        for (size_t t = 0; t < n; t++)
            p[t] = (int32_t)(pos0 + t);
        L->hcount[g] += (int32_t)n;
        rc = upload_head(c, L, g, err);
        if (rc)
            return rc;
    }
    L->seen = pos0 + n;
    return KVZ_OK;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int grow_scratch(kvz_kv_cache *c, size_t rows, kvz_error *err)
{
    if (rows <= c->scratch_rows)
        return KVZ_OK;
    kvz_backend_free(c->be, &c->scratch);
    kvz_backend_free(c->be, &c->idx);
    free(c->hidx);
    c->hidx = NULL;
    c->scratch_rows = 0;
    int rc = kvz_backend_alloc(c->be, KVZ_F32, rows * c->dh, "the pruned cache's compaction",
                               &c->scratch, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I64, rows, "the pruned cache's kept rows",
                                     &c->idx, err);
    c->hidx = rc ? NULL : malloc(rows * sizeof *c->hidx);
    if (!rc && !c->hidx)
        rc = kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory for %zu row indices", rows);
    if (!rc)
        c->scratch_rows = rows;
    account(c);
    return rc;
}

/* Gathers the kept rows idx[0..n) (the kept rows from `first` on) of one
 * head's slab to rows first.. (rows before `first` stay where they are). */
static int compact_slab(kvz_kv_cache *c, kvz_buf slab_all, size_t g, size_t cap, size_t first,
                        size_t n, kvz_error *err)
{
    kvz_buf slab = {kvz_buf_f32(slab_all) + g * cap * c->dh, KVZ_F32, cap * c->dh};
    int rc = kvz_op_take_rows(c->be, slab, c->dh, c->idx.data, 0, n, kvz_buf_f32(c->scratch),
                              err);
    return rc ? rc : kvz_backend_copy(c->be, kvz_buf_f32(slab) + first * c->dh,
                                      c->scratch.data, n * c->dh * sizeof(float), err);
}

int kvz_kv_cache_evict(kvz_kv_cache *c, size_t layer, size_t head, const int32_t *positions,
                       size_t n, kvz_error *err)
{
    if (layer >= c->n_layers || head >= c->hkv || (n && !positions))
        return kvz_fail(err, KVZ_EINVAL, "kv cache: bad evict (layer %zu, head %zu)", layer, head);
    kv_layer *L = &c->layers[layer];
    if (!n || !L->hcount || !L->hcount[head])
        return KVZ_OK;
    int32_t *sorted = malloc(n * sizeof *sorted);
    if (!sorted)
        return kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory for %zu positions", n);
    memcpy(sorted, positions, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_i32);
    int rc = grow_scratch(c, L->cap, err);
    if (rc) {
        free(sorted);
        return rc;
    }
    int32_t *p = L->hpos + head * L->cap;
    size_t cnt = (size_t)L->hcount[head], kept = 0, s = 0, first = cnt;
    for (size_t j = 0; j < cnt; j++) { /* both ascending: a merge */
        while (s < n && sorted[s] < p[j])
            s++;
        if (s < n && sorted[s] == p[j]) {
            first = first < j ? first : j;
            continue;
        }
        if (first < cnt) /* rows before the first eviction stay put */
            c->hidx[kept - first] = (int64_t)j;
        p[kept++] = p[j]; /* kept <= j: in place */
    }
    free(sorted);
    if (kept == cnt)
        return KVZ_OK;
    size_t moved = kept - first;
    rc = moved ? kvz_backend_upload(c->be, c->idx.data, c->hidx, moved * sizeof(int64_t), err)
               : KVZ_OK;
    rc = rc || !moved ? rc : compact_slab(c, L->k, head, L->cap, first, moved, err);
    rc = rc || !moved ? rc : compact_slab(c, L->v, head, L->cap, first, moved, err);
    L->hcount[head] = (int32_t)kept;
    rc = rc ? rc : upload_head(c, L, head, err);
    size_t cap = L->cap, most = max_count(c, L);
    while (cap > MIN_CAP && most * 4 < cap)
        cap /= 2;
    if (!rc && cap < L->cap)
        rc = resize_layer(c, L, cap, err);
    return rc;
}

void kvz_kv_cache_view(const kvz_kv_cache *c, size_t layer, kvz_ragged_attn_args *a)
{
    const kv_layer *L = &c->layers[layer];
    a->k = kvz_buf_f32(L->k);
    a->v = kvz_buf_f32(L->v);
    a->pos = L->pos.data;
    a->count = L->count.data;
    a->cap = L->cap;
    a->n_kv_heads = c->hkv;
    a->head_dim = c->dh;
}

kvz_backend *kvz_kv_cache_backend(const kvz_kv_cache *c) { return c->be; }

size_t kvz_kv_cache_count(const kvz_kv_cache *c, size_t layer, size_t head)
{
    const kv_layer *L = &c->layers[layer];
    return L->hcount ? (size_t)L->hcount[head] : 0;
}

const int32_t *kvz_kv_cache_positions(const kvz_kv_cache *c, size_t layer, size_t head)
{
    const kv_layer *L = &c->layers[layer];
    return L->hpos ? L->hpos + head * L->cap : NULL;
}

size_t kvz_kv_cache_seen(const kvz_kv_cache *c, size_t layer) { return c->layers[layer].seen; }

size_t kvz_kv_cache_kept_pairs(const kvz_kv_cache *c)
{
    size_t s = 0;
    for (size_t l = 0; l < c->n_layers; l++)
        for (size_t g = 0; g < c->hkv; g++)
            s += kvz_kv_cache_count(c, l, g);
    return s;
}

size_t kvz_kv_cache_full_pairs(const kvz_kv_cache *c)
{
    size_t s = 0;
    for (size_t l = 0; l < c->n_layers; l++)
        s += c->layers[l].seen * c->hkv;
    return s;
}

double kvz_kv_cache_compression(const kvz_kv_cache *c)
{
    double sum = 0.0;
    for (size_t l = 0; l < c->n_layers; l++) {
        size_t seen = c->layers[l].seen, kept = 0;
        for (size_t g = 0; g < c->hkv; g++)
            kept += kvz_kv_cache_count(c, l, g);
        if (seen)
            sum += (double)(seen * c->hkv - kept) / (double)(seen * c->hkv);
    }
    return sum / (double)c->n_layers;
}

size_t kvz_kv_cache_kept_bytes(const kvz_kv_cache *c)
{
    return kvz_kv_cache_kept_pairs(c) * 2 * c->dh * sizeof(float);
}

size_t kvz_kv_cache_bytes(const kvz_kv_cache *c) { return c->bytes; }
size_t kvz_kv_cache_peak_bytes(const kvz_kv_cache *c) { return c->peak; }
