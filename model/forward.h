/* forward: the transformer forward pass (batch 1), written once against the
 * op interface (ops/backend.h) and run on the backend the options name: cpu
 * (the readable fp32 reference) or cuda. Covers every architecture
 * model_config accepts (Llama incl. llama3 RoPE scaling, Mistral, Qwen2
 * q/k/v biases, Qwen3 q_norm/k_norm, SmolLM2; tied embeddings; GQA). Per
 * layer:
 *   x   = RMSNorm(h) * w_in                      attention input   [T, D]
 *   q,k,v = x W_q^T (+b), x W_k^T (+b), x W_v^T (+b)
 *   q,k = q_norm/k_norm per head (Qwen3), then RoPE (rotate-half, HF layout)
 *   a   = causal softmax(q k^T / sqrt(dh)) v, blockwise (never T x T for all heads)
 *   h  += a W_o^T ; h += down(silu(gate(x2)) * up(x2)), x2 = RMSNorm(h) * w_post
 * then the final norm and the LM head.
 * Precision (options.precision): KVZ_F32, weights fp32 and strict fp32
 * arithmetic (the cpu default, and cuda's checking mode); KVZ_BF16, weight
 * matrices stored bf16 (GGUF quantized and F16/F32 tensors are dequantized
 * on load, then rounded), GEMM and attention inputs bf16 where the backend
 * has such kernels, accumulation fp32. The residual stream, norms, RoPE,
 * softmax and the KV cache are fp32 in both.
 * A KV cache lets callers append tokens (prefill, then greedy decoding).
 * Taps: an optional callback sees every layer's x, Q, K, V and W_o (fp32,
 * in the backend's memory: host pointers on cpu, device pointers on cuda)
 * so the KVzip+ oracle computes its scores without re-running anything. */
#ifndef KVZ_FORWARD_H
#define KVZ_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"
#include "checkpoint.h"
#include "kv_cache.h"

typedef struct kvz_forward kvz_forward; /* opaque: backend, weights, KV cache, scratch */

/* A pruning policy (e.g. KVzap's threshold, trainer/prune.h), called for
 * every layer right after the layer's attention over the chunk, with what
 * that attention saw and the ragged cache, from which it may evict
 * (kvz_kv_cache_evict). The chunk's own attention is therefore dense over
 * what was kept before it plus the chunk, and evictions apply from the next
 * chunk (or decoding step) on: kvpress's DMSPress order. Arrays are fp32 in
 * the cache's backend memory (kvz_kv_cache_backend), valid during the call. */
typedef struct kvz_prune_call {
    size_t layer;
    size_t pos0, n;          /* the chunk: positions pos0 .. pos0+n-1 */
    const float *x;          /* [n, D]      the layer's attention input (RMSNorm output) */
    const float *q;          /* [n, H, dh]  queries after q_norm and RoPE */
    size_t n_heads, head_dim;
    kvz_kv_cache *cache;     /* holds the chunk already (every head) */
} kvz_prune_call;
typedef int (*kvz_prune_fn)(void *user, const kvz_prune_call *call, kvz_error *err);

typedef struct kvz_forward_options {
    int n_threads;       /* 0: all cores. Process-wide (ops threads and OpenBLAS). */
    size_t max_tokens;   /* KV-cache capacity; 0: the model's context length. The
                            cache grows on demand (doubling), so memory follows the
                            tokens actually run: 2 x L x Hkv x dh x 4 bytes each. */
    size_t attn_block;   /* cpu: keys (and queries) per attention block; 0: 256 */
    kvz_backend_kind device; /* KVZ_BACKEND_CPU (default) or KVZ_BACKEND_CUDA */
    int device_index;    /* cuda: which device */
    kvz_dtype precision; /* KVZ_F32 (default) or KVZ_BF16, see above */
    kvz_prune_fn prune;  /* non-NULL: a ragged per-head KV cache (model/kv_cache.h) with
                            this policy; taps are then refused and truncate keeps
                            only a reset (n_tokens 0) */
    void *prune_user;
} kvz_forward_options;

/* What one layer's attention saw, for the tokens of the current call
 * (positions pos0 .. pos0+n_tokens-1). All arrays are fp32 in the memory of
 * `backend` (device pointers on cuda; in bf16 mode w_o is an fp32 copy made
 * for the tap), valid only during the callback; work the callback queues on
 * the backend's stream is ordered with the pass. Row-major, shapes in
 * comments. */
typedef struct kvz_layer_tap {
    size_t layer;
    size_t pos0, n_tokens;   /* absolute position of row 0; rows in this call */
    const float *x;          /* [n_tokens, D]        input RMSNorm output (weight applied) */
    const float *q;          /* [n_tokens, H, dh]    after q_norm and RoPE */
    const float *k;          /* [pos0+n_tokens, Hkv, dh] all cached keys, after k_norm and RoPE */
    const float *v;          /* [pos0+n_tokens, Hkv, dh] all cached values */
    const float *w_o;        /* [D, H*dh]            o_proj weight (PyTorch layout) */
    const float *lse;        /* [n_tokens, H]        ln of each query row's softmax normalizer,
                                sum over keys 0..pos of exp(q.k / sqrt(dh)); NULL if absent */
    kvz_backend *backend;    /* where the arrays live (NULL: host memory) */
} kvz_layer_tap;

/* Return KVZ_OK to continue; any other status stops the pass and is returned. */
typedef int (*kvz_tap_fn)(const kvz_layer_tap *tap, void *user, kvz_error *err);

/* Opens the backend and loads ck's weights into it (cpu: straight into the
 * weight buffer; others: one tensor at a time through a host staging buffer,
 * so host memory stays O(largest tensor)). Errors: the backend's
 * (KVZ_EUNSUPPORTED for cuda in a build without CUDA or with no device),
 * KVZ_ENOMEM (saying how much was asked), the checkpoint's read errors. */
int kvz_forward_create(const kvz_checkpoint *ck, const kvz_forward_options *opt_or_NULL,
                       kvz_forward **out, kvz_error *err);
/* A model of shape cfg with random weights generated on the backend from
 * seed (kvz_op_fill: projections uniform in +-1/sqrt(fan_in), norms 1,
 * embeddings +-1): for benchmarks of large shapes without a download. */
int kvz_forward_create_random(const kvz_model_config *cfg, uint64_t seed,
                              const kvz_forward_options *opt_or_NULL, kvz_forward **out,
                              kvz_error *err);
void kvz_forward_free(kvz_forward *f);
const kvz_model_config *kvz_forward_config(const kvz_forward *f);
/* The backend the pass runs on (owned by the forward). */
kvz_backend *kvz_forward_backend(const kvz_forward *f);
/* The precision the forward was made with (KVZ_F32 or KVZ_BF16). */
kvz_dtype kvz_forward_precision(const kvz_forward *f);
/* Backend memory held by this forward now (weights, cache, scratch), and the
 * backend's peak (kvz_backend_peak_bytes). */
size_t kvz_forward_device_bytes(const kvz_forward *f);
size_t kvz_forward_peak_device_bytes(const kvz_forward *f);

/* The ragged cache of a pruned forward (options.prune), else NULL. */
kvz_kv_cache *kvz_forward_kv_cache(const kvz_forward *f);
/* Forgets the KV cache (next call starts at position 0). */
void kvz_forward_reset(kvz_forward *f);
/* Keeps only the first n_tokens cached positions (no-op when n_tokens >=
 * the cache length): e.g. drop a scored repeat prompt, keep the context. */
void kvz_forward_truncate(kvz_forward *f, size_t n_tokens);
/* Tokens in the KV cache. */
size_t kvz_forward_n_cached(const kvz_forward *f);

/* Runs ids[n] at positions n_cached .. n_cached+n-1 and appends them to the
 * cache. logits_mode: 0 none, 1 last position only (logits[vocab]), 2 every
 * position (logits[n, vocab]). tap may be NULL. Taps run once per layer, in
 * layer order, right after that layer's attention (x, q, k, v as it saw
 * them, and its lse). Errors: KVZ_EINVAL for n == 0,
 * an id outside 0..vocab-1, or n_cached+n beyond max_tokens or the context
 * length; KVZ_EUNSUPPORTED when n_cached+n exceeds an active sliding window
 * (not implemented); KVZ_ENOMEM; KVZ_EIO (a backend failure); a tap's own
 * status. After an error the cache keeps its previous length. Scratch is
 * O(n x d_ff) floats; cpu attention scratch O(block^2) per thread. Returns
 * once logits (host) are written; on cuda, tap work may still be queued. */
enum { KVZ_LOGITS_NONE = 0, KVZ_LOGITS_LAST = 1, KVZ_LOGITS_ALL = 2 };
int kvz_forward_run(kvz_forward *f, const int32_t *ids, size_t n, kvz_tap_fn tap, void *user,
                    int logits_mode, float *logits, kvz_error *err);

/* The KV-cache capacity the cache grows to when need > cap rows are asked
 * for: double (at least need, at least 256 rows), at most max_tokens. */
size_t kvz_forward_cache_grow_to(size_t cap, size_t need, size_t max_tokens);

/* The argument checks of kvz_forward_run: n > 0, ids non-NULL and inside the vocabulary, a valid logits
 * mode with a buffer, n_cached + n within the context length, max_tokens
 * and any active sliding window. source names the model in messages. */
int kvz_forward_check_run(const kvz_model_config *cfg, const char *source, size_t max_tokens,
                          size_t n_cached, const int32_t *ids, size_t n, int logits_mode,
                          const float *logits, kvz_error *err);

#endif
