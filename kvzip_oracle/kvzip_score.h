/* kvzip_score: the KVzip+ importance score of one layer (spec 1.2/1.3) from
 * the forward pass's layer tap, written once on the op interface (the
 * phases are backend ops, ops/backend.h). For KV head h and context
 * position i in P:
 *   s[h,i] = max over g in group(h), j in R of a^g_{j,i} * ||W_O^g v_i^h|| / ||x_j||
 *   y[i-p0, h] = ln(s[h,i])   (natural log, no epsilon)
 * a^g_{j,i} is the full causal softmax row of query j (all keys 0..j): its
 * log-normalizer comes from the tap (tap->lse, what the forward attention
 * computed) or, when the tap has none, from kvz_op_causal_lse; never a
 * T x T matrix. */
#ifndef KVZ_KVZIP_SCORE_H
#define KVZ_KVZIP_SCORE_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/model_config.h"
#include "../ops/backend.h"

/* Backend scratch of the score (float64 norms and normalizers), grown on
 * demand and reused across layers and documents. Zero-initialize; release
 * with kvz_kvzip_ws_free (which waits for nothing: free it once the
 * backend's queued work no longer needs it, e.g. after a sync). */
typedef struct kvz_kvzip_ws {
    kvz_backend *be;
    kvz_buf log_xnorm, lse, lognorm; /* [|R|], [H, |R|], [H, |P|] */
} kvz_kvzip_ws;

void kvz_kvzip_ws_free(kvz_kvzip_ws *ws);

/* tap: one layer of a single full pass (pos0 == 0, n_tokens == T), its
 * arrays in tap->backend's memory (NULL: host memory, the cpu backend).
 * Uses cfg's n_heads, n_kv_heads, head_dim and d_model. Context
 * P = [p0, p1), repeat R = [r0, r1), with p0 < p1 <= r0 < r1 <= T.
 * out_logscores: [(p1-p0), Hkv] row-major (row = context position) in the
 * same memory. compute: KVZ_F32, or KVZ_BF16 to let the backend take bf16
 * q.k products in the last phase (cuda tensor cores; see
 * kvz_op_kvzip_best). ws: NULL (scratch for this call only) or a workspace
 * kept by the caller. On cuda the work is queued, not waited for. A zero
 * ||W_O^g v_i|| for every g gives -inf; a zero x_j (j in R) gives +inf.
 * Errors: KVZ_EINVAL (bad ranges, pos0 != 0, NULL pointers, bad head
 * counts, a ws of another backend), KVZ_ENOMEM, the backend's. */
int kvz_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                          size_t p1, size_t r0, size_t r1, kvz_dtype compute,
                          kvz_kvzip_ws *ws, float *out_logscores, kvz_error *err);

#endif
