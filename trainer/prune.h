/* prune: KVzap's pruning policy for the pruned forward (model/forward.h
 * kvz_prune_fn), with the semantics of kvpress's DMSPress wrapping
 * KVzapPress (kvpress/presses/dms_press.py), per layer:
 *   - the surrogate scores the tokens of each call from x, the layer's
 *     attention input: s[t, g] = surrogate_layer(x_t)[g] (a log-score per
 *     KV head g);
 *   - a call that starts at position 0 is a prefill: the layer's buffer of
 *     undecided scores becomes the chunk's scores. A later call (decoding,
 *     or a further chunk) appends its scores only when `decoding` is set;
 *     otherwise it changes nothing (and the compression stays as it was);
 *   - once the buffer holds more than `window` tokens, the oldest
 *     (buffer - window) leave it and, per KV head, those with score < tau
 *     are evicted for good (kvz_kv_cache_evict); the most recent `window`
 *     tokens are never evicted;
 *   - the layer's compression is evicted pairs / (Hkv x tokens in the
 *     cache) after each call that ran the policy; kvz_prune_kvzap_compression
 *     averages it over layers (kvpress's DMSPress.compression_ratio).
 * Because the forward calls the policy after the layer's attention, the
 * attention inside a prefill is dense, as in kvpress. */
#ifndef KVZ_PRUNE_H
#define KVZ_PRUNE_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/kv_cache.h"
#include "surrogate.h"

typedef struct kvz_prune_kvzap_options {
    float tau;       /* evict below this predicted log-score */
    size_t window;   /* most recent tokens never evicted; 0: 128 */
    int decoding;    /* also evict while decoding (kvpress decoding=True) */
} kvz_prune_kvzap_options;

typedef struct kvz_prune_kvzap kvz_prune_kvzap;

/* The policy for a model of n_layers layers, d_model D and n_kv_heads Hkv;
 * the surrogate (borrowed, must outlive the policy) must have those shapes
 * (KVZ_EINVAL naming both otherwise). */
int kvz_prune_kvzap_create(const kvz_surrogate *s, size_t n_layers, size_t d_model,
                           size_t n_kv_heads, const kvz_prune_kvzap_options *opt,
                           kvz_prune_kvzap **out, kvz_error *err);
void kvz_prune_kvzap_free(kvz_prune_kvzap *p);
/* The kvz_prune_fn (user = the policy). */
int kvz_prune_kvzap_layer(void *user, size_t layer, const float *x, size_t n, size_t pos0,
                          kvz_kv_cache *cache, kvz_error *err);
/* kvpress's compression ratio (see above); 0 before any call. */
double kvz_prune_kvzap_compression(const kvz_prune_kvzap *p);

#endif
