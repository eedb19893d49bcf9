/* kv_cache: the ragged, per-KV-head KV cache of a pruned forward pass
 * (kvz_forward_options.prune). Each layer and KV head keeps its own set of
 * (key, value) pairs; evicted pairs are physically removed, so the cache's
 * memory follows the kept pairs.
 *
 * Layout, per layer, all in the forward's backend memory:
 *   k, v   [rows, dh] fp32: head g owns the slab of cap[g] rows starting at
 *          row0[g]; its kept rows are the slab's first count[g], in
 *          ascending original position; keys carry RoPE at that position,
 *          so attention over them (kvz_op_ragged_attention) equals dense
 *          causal attention with the evicted keys masked out.
 *   pos    [rows] int32 original positions; count, row0 [Hkv] int32.
 * The host keeps the authoritative copy of pos, count and the slabs and
 * uploads a head's after each change. Each head's slab is sized on its own,
 * in whole 64-row steps (at least 64): it grows by a quarter (or to what an
 * append needs) when an append would overflow it, and shrinks to 1.25x its
 * kept pairs when they fill under half of it; a resize re-lays the layer
 * out (one copy of its kept rows). So memory follows each head's kept
 * pairs: within 2x, about 1.25x in steady state, however unequal the heads.
 *
 * Append writes the new tokens to every head (a token enters unpruned);
 * evict removes listed positions from one head and compacts it by a row
 * gather on the backend (kvz_op_take_rows), so both run on every backend.
 * Compression as kvpress defines it (DMSPress): evicted / (Hkv x tokens
 * seen) per layer, averaged over layers. */
#ifndef KVZ_KV_CACHE_H
#define KVZ_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"

typedef struct kvz_kv_cache kvz_kv_cache;

int kvz_kv_cache_create(kvz_backend *be, size_t n_layers, size_t n_kv_heads, size_t head_dim,
                        kvz_kv_cache **out, kvz_error *err);
void kvz_kv_cache_free(kvz_kv_cache *c);
/* Forgets every pair (memory is kept; the peak is not reset). */
void kvz_kv_cache_reset(kvz_kv_cache *c);

/* Appends tokens at positions pos0..pos0+n-1 to every head of the layer:
 * k_rows and v_rows [n, Hkv, dh] in backend memory. pos0 must be past every
 * position the layer has seen (KVZ_EINVAL otherwise). */
int kvz_kv_cache_append(kvz_kv_cache *c, size_t layer, const float *k_rows,
                        const float *v_rows, size_t n, size_t pos0, kvz_error *err);
/* Removes from (layer, head) the kept pairs at the listed positions (host
 * array, any order; positions not kept are ignored) and compacts the head. */
int kvz_kv_cache_evict(kvz_kv_cache *c, size_t layer, size_t head, const int32_t *positions,
                       size_t n, kvz_error *err);

/* The ragged-attention operands of a layer: k, v, pos, count, cap,
 * n_kv_heads and head_dim of *a are set; the caller sets the rest. */
void kvz_kv_cache_view(const kvz_kv_cache *c, size_t layer, kvz_ragged_attn_args *a);

/* The backend whose memory holds the cache (and the forward's arrays). */
kvz_backend *kvz_kv_cache_backend(const kvz_kv_cache *c);
size_t kvz_kv_cache_count(const kvz_kv_cache *c, size_t layer, size_t head);
/* Host copy of (layer, head)'s kept positions, ascending, count entries. */
const int32_t *kvz_kv_cache_positions(const kvz_kv_cache *c, size_t layer, size_t head);
/* The first row of (layer, head)'s slab in the layer's k, v and pos. */
size_t kvz_kv_cache_head_row0(const kvz_kv_cache *c, size_t layer, size_t head);
/* Tokens appended to a layer since create/reset (every head saw them). */
size_t kvz_kv_cache_seen(const kvz_kv_cache *c, size_t layer);
/* Kept pairs over all layers and heads, and what the full cache would hold. */
size_t kvz_kv_cache_kept_pairs(const kvz_kv_cache *c);
size_t kvz_kv_cache_full_pairs(const kvz_kv_cache *c);
/* kvpress's compression ratio: mean over layers of evicted / (Hkv x seen);
 * 0 when nothing was seen. */
double kvz_kv_cache_compression(const kvz_kv_cache *c);
/* Bytes of K and V the kept pairs take (2 x pairs x dh x 4), the bytes the
 * cache has allocated now (K, V, positions, counts) and the allocation's peak. */
size_t kvz_kv_cache_kept_bytes(const kvz_kv_cache *c);
size_t kvz_kv_cache_bytes(const kvz_kv_cache *c);
size_t kvz_kv_cache_peak_bytes(const kvz_kv_cache *c);

#endif
