/* kv_cache: the ragged per-KV-head KV cache (layout, growth and the
 * compaction protocol are stated in kv_cache.h). Everything on the backend
 * goes through the op interface (copies, row copies, row gathers), so this
 * one file serves the cpu and the cuda backends. */
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

enum { MIN_CAP = 64, CAP_ROWS = 64 }; /* per head */

/* Capacities are whole multiples of CAP_ROWS rows. */
static size_t round_rows(size_t n)
{
    return (n + CAP_ROWS - 1) / CAP_ROWS * CAP_ROWS;
}

typedef struct kv_layer {
    kvz_buf k, v;      /* [rows, dh] fp32: head g's slab is rows off[g] .. off[g]+cap[g]-1 */
    kvz_buf pos;       /* [rows] int32 */
    kvz_buf count;     /* [Hkv] int32 */
    kvz_buf row0;      /* [Hkv] int32: off */
    int32_t *hpos;     /* host copy [rows] */
    int32_t *hcount;   /* host copy [Hkv] */
    int32_t *hoff;     /* host [Hkv] */
    size_t *hcap;      /* host [Hkv] */
    size_t rows, seen;
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

static size_t layer_bytes(const kvz_kv_cache *c, size_t rows)
{
    return rows * (2 * c->dh * sizeof(float) + sizeof(int32_t)) + 2 * c->hkv * sizeof(int32_t);
}

static void account(kvz_kv_cache *c)
{
    size_t b = c->scratch_rows * (c->dh * sizeof(float) + sizeof(int64_t));
    for (size_t l = 0; l < c->n_layers; l++)
        b += c->layers[l].rows ? layer_bytes(c, c->layers[l].rows) : 0;
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
    kvz_backend_free(c->be, &L->row0);
    free(L->hpos);
    free(L->hcount);
    free(L->hoff);
    free(L->hcap);
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
    int rc = kvz_backend_upload(c->be, (int32_t *)L->pos.data + L->hoff[g], L->hpos + L->hoff[g],
                                (size_t)L->hcount[g] * sizeof(int32_t), err);
    return rc ? rc : kvz_backend_upload(c->be, (int32_t *)L->count.data + g, L->hcount + g,
                                        sizeof(int32_t), err);
}

/* Moves a layer to slabs of cap[g] rows per head, keeping every head's
 * kept rows. */
static int resize_layer(kvz_kv_cache *c, kv_layer *L, const size_t *cap, kvz_error *err)
{
    kv_layer n = {0};
    n.seen = L->seen;
    n.hoff = calloc(c->hkv, sizeof *n.hoff);
    n.hcap = calloc(c->hkv, sizeof *n.hcap);
    n.hcount = calloc(c->hkv, sizeof *n.hcount);
    int rc = n.hoff && n.hcap && n.hcount ? KVZ_OK
                                          : kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory");
    for (size_t g = 0; !rc && g < c->hkv; g++) {
        n.hoff[g] = (int32_t)n.rows;
        n.hcap[g] = cap[g];
        n.rows += cap[g];
    }
    if (!rc && n.rows > (size_t)INT32_MAX)
        rc = kvz_fail(err, KVZ_EINVAL, "kv cache: %zu rows in one layer", n.rows);
    size_t rows = n.rows;
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_F32, rows * c->dh, "the pruned K cache", &n.k, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_F32, rows * c->dh, "the pruned V cache", &n.v, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I32, rows, "the pruned cache's positions", &n.pos, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I32, c->hkv, "the pruned cache's counts", &n.count, err);
    rc = rc ? rc : kvz_backend_alloc(c->be, KVZ_I32, c->hkv, "the pruned cache's slab rows", &n.row0, err);
    n.hpos = rc ? NULL : calloc(rows, sizeof *n.hpos);
    if (!rc && !n.hpos)
        rc = kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory for %zu positions", rows);
    for (size_t g = 0; !rc && g < c->hkv; g++) {
        size_t cnt = L->hcount ? (size_t)L->hcount[g] : 0;
        n.hcount[g] = (int32_t)cnt;
        if (!cnt)
            continue;
        memcpy(n.hpos + n.hoff[g], L->hpos + L->hoff[g], cnt * sizeof(int32_t));
        size_t bytes = cnt * c->dh * sizeof(float), from = (size_t)L->hoff[g] * c->dh,
               to = (size_t)n.hoff[g] * c->dh;
        rc = kvz_backend_copy(c->be, kvz_buf_f32(n.k) + to, kvz_buf_f32(L->k) + from, bytes, err);
        rc = rc ? rc : kvz_backend_copy(c->be, kvz_buf_f32(n.v) + to, kvz_buf_f32(L->v) + from,
                                        bytes, err);
    }
    rc = rc ? rc : kvz_backend_upload(c->be, n.row0.data, n.hoff, c->hkv * sizeof(int32_t), err);
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
    int grow = !L->hcap;
    for (size_t g = 0; !grow && g < c->hkv; g++)
        grow = (size_t)L->hcount[g] + n > L->hcap[g];
    if (grow) {
        size_t *cap = malloc(c->hkv * sizeof *cap);
        if (!cap)
            return kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory");
        for (size_t g = 0; g < c->hkv; g++) {
            size_t have = L->hcap ? L->hcap[g] : 0, need = (L->hcount ? L->hcount[g] : 0) + n;
            size_t more = have ? have + have / 4 : MIN_CAP;
            cap[g] = need <= have ? have : round_rows(more > need ? more : need);
        }
        int rc = resize_layer(c, L, cap, err);
        free(cap);
        if (rc)
            return rc;
    }
    size_t row = c->hkv * c->dh;
    for (size_t g = 0; g < c->hkv; g++) {
        size_t at = ((size_t)L->hoff[g] + (size_t)L->hcount[g]) * c->dh;
        int rc = kvz_op_copy_rows(c->be, kvz_buf_f32(L->k) + at, c->dh, k_rows + g * c->dh, row,
                                  n, c->dh, err);
        rc = rc ? rc : kvz_op_copy_rows(c->be, kvz_buf_f32(L->v) + at, c->dh,
                                        v_rows + g * c->dh, row, n, c->dh, err);
        if (rc)
            return rc;
        int32_t *p = L->hpos + L->hoff[g] + L->hcount[g];
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
static int compact_slab(kvz_kv_cache *c, kvz_buf slab_all, const kv_layer *L, size_t g,
                        size_t first, size_t n, kvz_error *err)
{
    kvz_buf slab = {kvz_buf_f32(slab_all) + (size_t)L->hoff[g] * c->dh, KVZ_F32,
                    L->hcap[g] * c->dh};
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
    int rc = grow_scratch(c, L->hcap[head], err);
    if (rc) {
        free(sorted);
        return rc;
    }
    int32_t *p = L->hpos + L->hoff[head];
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
    rc = rc || !moved ? rc : compact_slab(c, L->k, L, head, first, moved, err);
    rc = rc || !moved ? rc : compact_slab(c, L->v, L, head, first, moved, err);
    L->hcount[head] = (int32_t)kept;
    rc = rc ? rc : upload_head(c, L, head, err);
    size_t cap = L->hcap[head];
    if (!rc && kept * 2 < cap && cap > MIN_CAP) { /* shrink this head's slab */
        size_t *caps = malloc(c->hkv * sizeof *caps);
        if (!caps)
            return kvz_fail(err, KVZ_ENOMEM, "kv cache: out of memory");
        memcpy(caps, L->hcap, c->hkv * sizeof *caps);
        caps[head] = round_rows(kept + kept / 4);
        caps[head] = caps[head] < MIN_CAP ? MIN_CAP : caps[head];
        rc = caps[head] < cap ? resize_layer(c, L, caps, err) : KVZ_OK;
        free(caps);
    }
    return rc;
}

void kvz_kv_cache_view(const kvz_kv_cache *c, size_t layer, kvz_ragged_attn_args *a)
{
    const kv_layer *L = &c->layers[layer];
    a->k = kvz_buf_f32(L->k);
    a->v = kvz_buf_f32(L->v);
    a->pos = L->pos.data;
    a->count = L->count.data;
    a->row0 = L->row0.data;
    a->cap = 0;
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
    return L->hpos ? L->hpos + L->hoff[head] : NULL;
}

size_t kvz_kv_cache_head_row0(const kvz_kv_cache *c, size_t layer, size_t head)
{
    const kv_layer *L = &c->layers[layer];
    return L->hoff ? (size_t)L->hoff[head] : 0;
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
