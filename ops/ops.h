/* ops: the CPU compute ops of the fp32 forward pass (RMSNorm, RoPE tables incl.
 * llama3 scaling, rotate-half RoPE, projections through OpenBLAS sgemm,
 * blockwise causal GQA attention with an online softmax, SwiGLU, argmax) and
 * the tiny pthread parallel-for they share. All arrays are row-major fp32.
 * Numerics follow transformers' fp32 eager path as closely as C allows. */
#ifndef KVZ_OPS_H
#define KVZ_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../model/model_config.h"

/* ---------- threads ---------- */
/* Threads used by the ops (and OpenBLAS): n <= 0 means all online cores. */
void kvz_ops_set_threads(int n);
int kvz_ops_threads(void);
/* Calls fn(ctx, i) for i in [0, n_items) spread over the ops' threads
 * (inline when one thread or one item). */
typedef void (*kvz_parallel_fn)(void *ctx, size_t i);
void kvz_parallel_for(size_t n_items, kvz_parallel_fn fn, void *ctx);

/* ---------- elementwise ---------- */
/* v[i] = expf(v[i] - m) for i < n; returns their sum (vectorized, ops_vexp.c). */
float kvz_vexp_shift_sum(float *v, size_t n, float m);
/* sum of expf(v[i] - m) for i < n, v unchanged (vectorized). */
double kvz_vexp_sum(const float *v, size_t n, float m);
/* The MLP surrogate's exact GELU (vectorized, ops_vexp.c):
 *   gelu(h)  = h * Phi(h),            Phi(h) = (1 + erf(h / sqrt 2)) / 2
 *   gelu'(h) = Phi(h) + h * phi(h),   phi(h) = exp(-h^2 / 2) / sqrt(2 pi)
 * a[i] = gelu(h[i]) (a may equal h); da[i] *= gelu'(h[i]). */
void kvz_gelu_forward(const float *h, float *a, size_t n);
void kvz_gelu_backward_mul(const float *h, float *da, size_t n);

/* y[r] = x[r] * 1/sqrt(mean(x[r]^2) + eps) * w, for rows r < n_rows of dim
 * values (y may equal x). Also the Qwen3 q/k norm (rows = tokens x heads). */
void kvz_rmsnorm(const float *x, const float *w, float *y, size_t n_rows, size_t dim, float eps);
/* gate[r][i] = silu(gate[r][i]) * up[r][i]; rows of width d_ff taken from
 * gate_up [n_rows, 2*d_ff] (gate half first), result into out [n_rows, d_ff]. */
void kvz_swiglu(const float *gate_up, float *out, size_t n_rows, size_t d_ff);
/* Index of the largest value (first one on ties). */
size_t kvz_argmax(const float *x, size_t n);

/* ---------- RoPE ---------- */
/* inv_freq[head_dim/2] as transformers computes it in float32
 * (default: 1/theta^(2i/dh); llama3: _compute_llama3_parameters). */
void kvz_rope_inv_freq(const kvz_model_config *cfg, float *inv_freq);
/* Same from raw parameters (scaling may be NULL for none). */
void kvz_rope_inv_freq_raw(double theta, size_t head_dim, const kvz_rope_scaling *scaling,
                           float *inv_freq);
/* cos/sin for one position: cs[0..half) = cos((float)pos * inv_freq[i]),
 * cs[half..2*half) = sin(...). */
void kvz_rope_cos_sin(size_t pos, const float *inv_freq, size_t half, float *cs);
/* In-place rotate-half RoPE of x [n_tokens, n_heads, head_dim], token t at
 * position pos0 + t: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin. */
void kvz_rope_apply(float *x, size_t n_tokens, size_t n_heads, size_t head_dim, size_t pos0,
                    const float *inv_freq);

/* ---------- projections ---------- */
/* y[T, n_out] = x[T, n_in] W^T (+ bias[n_out]); W is PyTorch's [n_out, n_in]. */
void kvz_linear(const float *x, const float *w, const float *bias_or_NULL, float *y, size_t n_rows,
                size_t n_in, size_t n_out);
/* Wall seconds and floating-point operations (2*rows*in*out) spent in
 * kvz_linear since the last reset (for benchmarks; not thread-safe). */
void kvz_ops_linear_stats(double *seconds, double *flops);
void kvz_ops_linear_stats_reset(void);

/* ---------- attention ---------- */
typedef struct kvz_attn_args {
    const float *q;  /* [n_q, n_heads, head_dim] queries at positions pos0.. */
    const float *k;  /* [pos0 + n_q, n_kv_heads, head_dim] keys */
    const float *v;  /* [pos0 + n_q, n_kv_heads, head_dim] values */
    float *out;      /* [n_q, n_heads, head_dim] */
    size_t n_q, pos0, n_heads, n_kv_heads, head_dim;
    size_t block;    /* keys (and queries) per block; 0: 256 */
    float scale;     /* usually 1/sqrt(head_dim) */
    float *lse;      /* [n_q, n_heads] or NULL: ln sum_i exp(scale q.k_i) over each row's
                        causal keys (the softmax normalizer; the KVzip+ scorer reuses it) */
} kvz_attn_args;
/* Causal softmax(q k^T * scale) v per head, query head h using kv head
 * h / (n_heads / n_kv_heads); blocks of keys with an online softmax, so the
 * scratch is O(block^2) per thread. Returns KVZ_ENOMEM or KVZ_OK. */
int kvz_attention(const kvz_attn_args *a);

/* Ragged attention: every KV head keeps its own set of keys (a pruned KV
 * cache, model/kv_cache.h). Head g's kept keys are rows 0..count[g]-1 of its
 * slab, which starts at row r0 = row0[g] (row0 NULL: r0 = g*cap): keys
 * k + (r0 + i)*head_dim (same for v) at original positions pos[r0 + i]
 * (ascending; RoPE already applied at those positions).
 * Query i is at position q_pos0 + i and sees head g's kept keys with
 * position <= q_pos0 + i, so the result equals dense causal attention with
 * the evicted keys masked out. A query that sees no key gets zeros. */
typedef struct kvz_ragged_attn_args {
    const float *q;       /* [n_q, n_heads, head_dim] */
    const float *k, *v;   /* [rows, head_dim]: the heads' slabs */
    const int32_t *pos;   /* [rows] */
    const int32_t *count; /* [n_kv_heads], each <= its slab's rows */
    float *out;           /* [n_q, n_heads, head_dim] */
    size_t n_q, q_pos0, cap, n_heads, n_kv_heads, head_dim;
    float scale;
    const int32_t *row0;  /* [n_kv_heads] first row of each head's slab, or NULL */
} kvz_ragged_attn_args;
/* The cpu op: per (head, block of queries), key blocks through sgemm with
 * the positional mask and an online softmax (decode: a scalar walk), fp32.
 * Returns KVZ_ENOMEM or KVZ_OK. */
int kvz_ragged_attention(const kvz_ragged_attn_args *a);

#endif
