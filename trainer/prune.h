/* prune: the KV-cache pruning policies of the pruned forward
 * (model/forward.h kvz_prune_fn), and the small API another runtime uses to
 * drive the same policy over its own cache. One policy object holds, per
 * layer and KV head, the positions it has kept and their scores; each call
 * (one layer, one chunk of tokens) scores the chunk, decides, and sends the
 * evictions to the ragged cache (kvz_kv_cache_evict) or, when the call has
 * no cache, to the options' evict callback.
 *
 * Scores (higher = keep), computed as a token enters, per KV head g:
 *   KVZ_PRUNE_KVZAP      the surrogate on x, the layer's attention input:
 *                        s[t, g] = surrogate_layer(x_t)[g], a log-score
 *   KVZ_PRUNE_ORACLE     given log-scores by position ([L, Hkv, len], e.g.
 *                        the KVzip+ oracle's; positions past len: +inf)
 *   KVZ_PRUNE_STREAMING  StreamingLLM: the first n_sink positions +inf, then
 *                        the position itself (the newest are kept)
 *   KVZ_PRUNE_RANDOM     uniform in [0, 1) from (seed, layer, head, position)
 *   KVZ_PRUNE_SNAPKV     SnapKV-style: the mean attention probability the
 *                        call's last snap_queries queries (all query heads of
 *                        the group) pay to each kept key, average-pooled over
 *                        5 neighbouring kept keys; every kept key is
 *                        re-scored at each call that runs
 *   KVZ_PRUNE_FULL       nothing is evicted (the ragged runtime at full size)
 *
 * Modes (the most recent `window` positions, default 128, are never evicted
 * in any mode):
 *   KVZ_PRUNE_THRESHOLD  kvpress's DMSPress (kvpress/presses/dms_press.py):
 *                        a call at position 0 is a prefill and resets the
 *                        layer's buffer of undecided scores to the chunk's;
 *                        later calls append theirs only when they run (see
 *                        below); once the buffer holds more than `window`
 *                        tokens the oldest leave it and, per head, those
 *                        scoring below tau are evicted for good.
 *                        KVZAP and ORACLE only.
 *   KVZ_PRUNE_RATIO      after each call that runs, each head keeps
 *                        max(floor(seen x (1 - ratio)), its window pairs):
 *                        the lowest-scored kept pairs outside the window are
 *                        evicted (ties: the older first). kvpress's
 *                        ScorerPress count, applied as tokens arrive.
 *   KVZ_PRUNE_BUDGET     one budget for all heads and layers (AdaKV-style,
 *                        across layers too): floor(L x Hkv x seen x (1 -
 *                        ratio)) pairs; the decision is taken at the last
 *                        layer's call over every layer's candidates.
 * A call runs the policy when it starts at position 0, while the prefill
 * flag is set (kvz_prune_set_prefill: a chunked prefill's later chunks), or
 * when `decoding` is set (kvpress decoding=True); otherwise it changes
 * nothing (the new positions are kept, as +inf). Because the forward calls
 * the policy after the layer's attention, a chunk's own attention is dense
 * (kvpress's order).
 * Compression as kvpress's DMSPress reports it: per layer, evicted pairs /
 * (Hkv x positions in the cache) after the last call that ran the policy,
 * averaged over layers. */
#ifndef KVZ_PRUNE_H
#define KVZ_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/kv_cache.h"
#include "../model/model_config.h"
#include "surrogate.h"

typedef enum kvz_prune_method {
    KVZ_PRUNE_FULL = 0,
    KVZ_PRUNE_KVZAP,
    KVZ_PRUNE_ORACLE,
    KVZ_PRUNE_STREAMING,
    KVZ_PRUNE_RANDOM,
    KVZ_PRUNE_SNAPKV,
} kvz_prune_method;

typedef enum kvz_prune_mode {
    KVZ_PRUNE_THRESHOLD = 0,
    KVZ_PRUNE_RATIO,
    KVZ_PRUNE_BUDGET,
} kvz_prune_mode;

/* Where evictions go when a call has no cache: positions of (layer, head)
 * to drop for good (ascending). */
typedef int (*kvz_prune_evict_fn)(void *user, size_t layer, size_t head, const int32_t *positions,
                                  size_t n, kvz_error *err);

typedef struct kvz_prune_options {
    kvz_prune_method method;
    kvz_prune_mode mode;
    double tau;               /* threshold: evict below this score (finite) */
    double ratio;             /* ratio, budget: the fraction to evict, in [0, 1) */
    size_t window;            /* most recent positions never evicted; 0: 128 */
    int decoding;             /* also run while decoding (kvpress decoding=True) */
    size_t n_sink;            /* streaming: sink positions; 0: 4 */
    uint64_t seed;            /* random */
    size_t snap_queries;      /* snapkv: queries that vote; 0: 64 */
    const kvz_surrogate *surrogate; /* kvzap (borrowed; must outlive the policy) */
    const float *scores;      /* oracle: [n_layers, n_kv_heads, scores_len] (borrowed) */
    size_t scores_len;
    kvz_prune_evict_fn evict; /* calls without a cache (another runtime's) */
    void *evict_user;
} kvz_prune_options;

typedef struct kvz_prune kvz_prune;

/* A policy for a model of shape cfg. KVZ_EINVAL with the reason for: a
 * surrogate of other shapes (both named), a method/mode pair not above, tau
 * not finite, ratio outside [0, 1), oracle without scores. */
int kvz_prune_create(const kvz_model_config *cfg, const kvz_prune_options *opt, kvz_prune **out,
                     kvz_error *err);
void kvz_prune_free(kvz_prune *p);
/* The kvz_prune_fn (user = the policy). x and q may be in the cache's
 * backend memory (downloaded when it is not the host's); without a cache
 * they are host arrays and snapkv is refused. */
int kvz_prune_layer(void *user, const kvz_prune_call *call, kvz_error *err);
/* Marks the calls that follow as prefill chunks (on) or decoding (off, the
 * default): set it before a chunked prefill's second chunk, clear it after. */
void kvz_prune_set_prefill(kvz_prune *p, int on);
/* kvpress's compression ratio (above); 0 before any call. */
double kvz_prune_compression(const kvz_prune *p);
double kvz_prune_layer_compression(const kvz_prune *p, size_t layer);
/* Wall-clock seconds spent scoring so far (the surrogate, including the
 * download of x from a device; SnapKV's attention), for overhead benches. */
double kvz_prune_score_seconds(const kvz_prune *p);
/* "full", "kvzap", "oracle", "streaming", "random", "snapkv"; parse returns
 * KVZ_EINVAL for other names. Modes: "threshold", "ratio", "budget". */
const char *kvz_prune_method_name(kvz_prune_method m);
int kvz_prune_method_parse(const char *name, kvz_prune_method *out);
const char *kvz_prune_mode_name(kvz_prune_mode m);
int kvz_prune_mode_parse(const char *name, kvz_prune_mode *out);

#endif
