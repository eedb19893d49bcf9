/* kvzip_score: the KVzip+ importance score of one layer (spec 1.2/1.3) from
 * the forward pass's layer tap. For KV head h and context position i in P:
 *   s[h,i] = max over g in group(h), j in R of a^g_{j,i} * ||W_O^g v_i^h|| / ||x_j||
 *   y[i-p0, h] = ln(s[h,i])   (natural log, no epsilon)
 * a^g_{j,i} is the full causal softmax row of query j (all keys 0..j): its
 * log-normalizer comes from the tap (tap->lse, what the forward attention
 * computed) or, when the tap has none, blockwise with an online
 * log-sum-exp; never a T x T matrix. */
#ifndef KVZ_KVZIP_SCORE_H
#define KVZ_KVZIP_SCORE_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/model_config.h"

/* tap: one layer of a single full pass (pos0 == 0, n_tokens == T). Uses cfg's
 * n_heads, n_kv_heads, head_dim and d_model. Context P = [p0, p1), repeat
 * R = [r0, r1), with p0 < p1 <= r0 < r1 <= T. out_logscores: [(p1-p0), Hkv]
 * row-major (row = context position). A zero ||W_O^g v_i|| for every g gives
 * -inf; a zero x_j (j in R) gives +inf. Errors: KVZ_EINVAL (bad ranges,
 * pos0 != 0, NULL pointers, bad head counts), KVZ_ENOMEM. Threads: the ops'
 * pool (kvz_parallel_for). */
int kvz_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                          size_t p1, size_t r0, size_t r1, float *out_logscores,
                          kvz_error *err);

/* Shared with the chunked scorer. out[i-i0] = ln ||W_O^g v_i^h|| for keys
 * i in [i0, i1) of query head g (h = its KV head), sgemm in row blocks.
 * KVZ_ENOMEM or KVZ_OK. */
int kvz_kvzip_value_lognorms(const kvz_layer_tap *tap, size_t H, size_t Hkv, size_t dh,
                             size_t D, size_t g, size_t i0, size_t i1, double *out);
/* out[r] = ln ||x_r|| (double sums) for rows x [n, D]. */
void kvz_kvzip_row_lognorms(const float *x, size_t D, size_t n, double *out);

#endif
