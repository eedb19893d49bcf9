/* cuda_forward_run: kvz_cuda_forward_run, the pass of model/forward_run.c on
 * the device, step by step: input checks (same messages as the CPU pass), KV
 * cache growth (device realloc = alloc + copy + free), the device scratch,
 * the cuBLAS projections (fp32 pedantic, or bf16 inputs with fp32
 * accumulation), the attention block with its tap, the MLP block and the
 * final norm + LM head. Everything runs on the legacy default stream. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_forward_internal.cuh"

extern "C" {
#include "kvz_cuda_attention.h"
}

/* ---------- KV cache and scratch ---------- */

/* Moves one layer's cache buffer to a new allocation of cap rows, keeping
 * the cached rows. */
static int regrow(kvz_cuda_forward *f, float **buf, size_t cap, size_t row, const char *what,
                  kvz_error *err)
{
    void *fresh = NULL;
    int rc = cf_malloc(f, &fresh, cap * row * sizeof(float), what, err);
    if (rc)
        return rc;
    if (*buf && f->n_cached)
        rc = cf_check(f, cudaMemcpy(fresh, *buf, f->n_cached * row * sizeof(float),
                                    cudaMemcpyDeviceToDevice), "cudaMemcpy(KV cache growth)", err);
    if (rc) {
        cf_free(f, fresh);
        return rc;
    }
    cf_free(f, *buf);
    *buf = (float *)fresh;
    return KVZ_OK;
}

/* Capacity doubles (at least 256 rows, at most max_tokens) like the CPU one. */
static int grow_cache(kvz_cuda_forward *f, size_t need, kvz_error *err)
{
    if (need <= f->cap)
        return KVZ_OK;
    size_t cap = kvz_forward_cache_grow_to(f->cap, need, f->max_tokens);
    size_t row = f->cfg.n_kv_heads * f->cfg.head_dim;
    for (size_t l = 0; l < f->cfg.n_layers; l++) {
        int rc = regrow(f, &f->k_cache[l], cap, row, "the K cache", err);
        rc = rc ? rc : regrow(f, &f->v_cache[l], cap, row, "the V cache", err);
        if (rc)
            return rc;
    }
    f->cap = cap;
    return KVZ_OK;
}

static size_t align_up(size_t bytes)
{
    return (bytes + 255) & ~(size_t)255;
}

/* Carves the views for n tokens out of base (NULL: only measures). */
static size_t layout_scratch(const kvz_cuda_forward *f, size_t n, char *base, cf_scratch *s)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    size_t F = c->d_ff;
    size_t widths[9] = {D, D, Q + 2 * KV, Q, Q, D, 2 * F, F, c->n_heads};
    float **views[9] = {&s->h, &s->x, &s->qkv, &s->q, &s->attn, &s->proj, &s->gate_up, &s->act,
                        &s->lse};
    size_t at = 0;
    for (int i = 0; i < 9; i++) {
        *views[i] = base ? (float *)(base + at) : NULL;
        at += align_up(n * widths[i] * sizeof(float));
    }
    size_t widest = D > Q ? D : Q;
    widest = widest > F ? widest : F;
    s->x_bf16 = NULL;
    if (f->precision == KVZ_CUDA_BF16) {
        s->x_bf16 = base ? (uint16_t *)(base + at) : NULL;
        at += align_up(n * widest * sizeof(uint16_t));
    }
    s->ids = base ? (int32_t *)(base + at) : NULL;
    return at + align_up(n * sizeof(int32_t));
}

static int get_scratch(kvz_cuda_forward *f, size_t n, kvz_error *err)
{
    if (n <= f->scratch_tokens)
        return KVZ_OK;
    cf_free(f, f->scratch_mem);
    f->scratch_mem = NULL;
    f->scratch_tokens = 0;
    size_t bytes = layout_scratch(f, n, NULL, &f->s);
    char what[64];
    snprintf(what, sizeof what, "scratch for %zu tokens", n);
    int rc = cf_malloc(f, &f->scratch_mem, bytes, what, err);
    if (rc)
        return rc;
    layout_scratch(f, n, (char *)f->scratch_mem, &f->s);
    f->scratch_tokens = n;
    return KVZ_OK;
}

/* ---------- projections ---------- */

/* y[n, n_out] = x[n, n_in] W^T (+ bias); W [n_out, n_in] row-major, i.e.
 * column-major n_in x n_out, hence op(W) = T: C(n_out x n) = W^T x. */
static int linear(kvz_cuda_forward *f, const float *x, const void *w, const float *bias,
                  float *y, size_t n, size_t n_in, size_t n_out, const char *what,
                  kvz_error *err)
{
    if (n > INT_MAX || n_in > INT_MAX || n_out > INT_MAX)
        return kvz_fail(err, KVZ_EINVAL, "%s: cuda forward: %s: GEMM of %zu x %zu x %zu is too "
                        "large for cuBLAS", f->source, what, n, n_in, n_out);
    const float alpha = 1.0f, beta = 0.0f;
    int bf16 = f->precision == KVZ_CUDA_BF16;
    const void *xin = x;
    if (bf16) {
        int rc = cf_to_bf16(f, x, f->s.x_bf16, n * n_in, err);
        if (rc)
            return rc;
        xin = f->s.x_bf16;
    }
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    cublasStatus_t st = cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n,
                                     (int)n_in, &alpha, w, in_type, (int)n_in, xin, in_type,
                                     (int)n_in, &beta, y, CUDA_R_32F, (int)n_out, compute,
                                     CUBLAS_GEMM_DEFAULT);
    char call[96];
    snprintf(call, sizeof call, "cublasGemmEx(%s)", what);
    int rc = cf_check_blas(f, st, call, err);
    return rc || !bias ? rc : cf_add_bias(f, y, bias, n, n_out, err);
}

/* ---------- the pass ---------- */

/* x -> q, new k/v rows into the cache; q/k norm; RoPE (attention_inputs). */
static int attention_inputs(kvz_cuda_forward *f, const cf_layer *w, size_t l, size_t n,
                            kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t pos0 = f->n_cached;
    float *k_new = f->k_cache[l] + pos0 * KV, *v_new = f->v_cache[l] + pos0 * KV;
    int rc = linear(f, f->s.x, w->w_qkv, w->b_qkv, f->s.qkv, n, c->d_model, Q + 2 * KV,
                    "q/k/v_proj", err);
    rc = rc ? rc : cf_split_qkv(f, f->s.qkv, f->s.q, k_new, v_new, n, err);
    if (w->q_norm) {
        rc = rc ? rc : cf_rmsnorm(f, f->s.q, w->q_norm, f->s.q, n * c->n_heads, dh, err);
        rc = rc ? rc : cf_rmsnorm(f, k_new, w->k_norm, k_new, n * c->n_kv_heads, dh, err);
    }
    rc = rc ? rc : cf_rope(f, f->s.q, n, c->n_heads, pos0, err);
    return rc ? rc : cf_rope(f, k_new, n, c->n_kv_heads, pos0, err);
}

/* BF16 mode takes the tensor-core attention where the head_dim allows it,
 * unless KVZ_ATTENTION=fp32 (the safety valve for a first GPU run); FP32 mode
 * always the fp32 kernel. */
static int use_tensor_core_attention(const kvz_cuda_forward *f)
{
    if (f->precision != KVZ_CUDA_BF16 || !kvz_cuda_attention_bf16_supported(f->cfg.head_dim))
        return 0;
    const char *env = getenv("KVZ_ATTENTION");
    return !(env && strcmp(env, "fp32") == 0);
}

static int run_attention(kvz_cuda_forward *f, size_t l, size_t n, int want_lse, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    kvz_attn_args a = {f->s.q, f->k_cache[l], f->v_cache[l], f->s.attn, n, f->n_cached,
                       c->n_heads, c->n_kv_heads, c->head_dim, 0,
                       1.0f / sqrtf((float)c->head_dim), want_lse ? f->s.lse : NULL};
    kvz_error inner;
    memset(&inner, 0, sizeof inner);
    int rc = use_tensor_core_attention(f) ? kvz_cuda_attention_bf16(&a, &inner)
                                          : kvz_cuda_attention(&a, &inner);
    return rc ? kvz_fail(err, rc, "%s: %s", f->source, inner.msg) : KVZ_OK;
}

/* The tap's fp32 W_o: the weight itself, or (bf16) a converted copy. */
static int tap_w_o(kvz_cuda_forward *f, const cf_layer *w, const float **out, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    if (f->precision == KVZ_CUDA_FP32) {
        *out = (const float *)w->w_o;
        return KVZ_OK;
    }
    size_t numel = c->d_model * c->n_heads * c->head_dim;
    int rc = f->w_o_f32 ? KVZ_OK
                        : cf_malloc(f, (void **)&f->w_o_f32, numel * sizeof(float),
                                    "the tap's fp32 W_o", err);
    rc = rc ? rc : cf_from_bf16(f, (const uint16_t *)w->w_o, f->w_o_f32, numel, err);
    *out = f->w_o_f32;
    return rc;
}

static int attention_block(kvz_cuda_forward *f, size_t l, size_t n, kvz_tap_fn tap, void *user,
                           kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    const cf_layer *w = &f->layers[l];
    size_t D = c->d_model, Q = c->n_heads * c->head_dim;
    int rc = cf_rmsnorm(f, f->s.h, w->in_norm, f->s.x, n, D, err);
    rc = rc ? rc : attention_inputs(f, w, l, n, err);
    rc = rc ? rc : run_attention(f, l, n, tap != NULL, err);
    if (!rc && tap) {
        const float *w_o = NULL;
        rc = tap_w_o(f, w, &w_o, err);
        kvz_layer_tap t = {l, f->n_cached, n, f->s.x, f->s.q, f->k_cache[l], f->v_cache[l],
                           w_o, f->s.lse};
        rc = rc ? rc : tap(&t, user, err);
    }
    rc = rc ? rc : linear(f, f->s.attn, w->w_o, NULL, f->s.proj, n, Q, D, "o_proj", err);
    return rc ? rc : cf_residual_add(f, f->s.h, f->s.proj, w->b_o, n, D, err);
}

static int mlp_block(kvz_cuda_forward *f, size_t l, size_t n, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    const cf_layer *w = &f->layers[l];
    size_t D = c->d_model, F = c->d_ff;
    int rc = cf_rmsnorm(f, f->s.h, w->post_norm, f->s.x, n, D, err);
    rc = rc ? rc : linear(f, f->s.x, w->w_gate_up, w->b_gate_up, f->s.gate_up, n, D, 2 * F,
                          "gate/up_proj", err);
    rc = rc ? rc : cf_swiglu(f, f->s.gate_up, f->s.act, n, err);
    rc = rc ? rc : linear(f, f->s.act, w->w_down, NULL, f->s.proj, n, F, D, "down_proj", err);
    return rc ? rc : cf_residual_add(f, f->s.h, f->s.proj, w->b_down, n, D, err);
}

enum { LOGIT_CHUNK_FLOATS = 1 << 25 }; /* 128 MiB of device logits at a time */

/* Final norm and LM head for the last or every row, in row chunks, copied
 * into the host logits. */
static int lm_head(kvz_cuda_forward *f, size_t n, int mode, float *logits, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model, V = c->vocab_size;
    size_t first = mode == KVZ_LOGITS_LAST ? n - 1 : 0, rows = n - first;
    size_t chunk = LOGIT_CHUNK_FLOATS / V ? LOGIT_CHUNK_FLOATS / V : 1;
    chunk = chunk < rows ? chunk : rows;
    int rc = KVZ_OK;
    if (chunk > f->logit_rows) {
        cf_free(f, f->logits_dev);
        f->logits_dev = NULL;
        f->logit_rows = 0;
        rc = cf_malloc(f, (void **)&f->logits_dev, chunk * V * sizeof(float), "logits", err);
        f->logit_rows = rc ? 0 : chunk;
    }
    rc = rc ? rc : cf_rmsnorm(f, f->s.h + first * D, f->final_norm, f->s.x, rows, D, err);
    for (size_t r0 = 0; !rc && r0 < rows; r0 += chunk) {
        size_t cnt = rows - r0 < chunk ? rows - r0 : chunk;
        rc = linear(f, f->s.x + r0 * D, f->lm_head, NULL, f->logits_dev, cnt, D, V, "lm_head",
                    err);
        rc = rc ? rc : cf_check(f, cudaMemcpy(logits + r0 * V, f->logits_dev,
                                              cnt * V * sizeof(float), cudaMemcpyDeviceToHost),
                                "cudaMemcpy(logits to host)", err);
    }
    return rc;
}

extern "C" int kvz_cuda_forward_run(kvz_cuda_forward *f, const int32_t *ids, size_t n,
                                    kvz_tap_fn tap, void *user, int logits_mode, float *logits,
                                    kvz_error *err)
{
    if (!f)
        return kvz_fail(err, KVZ_EINVAL, "cuda forward: NULL handle");
    int rc = kvz_forward_check_run(&f->cfg, f->source, f->max_tokens, f->n_cached, ids, n,
                                   logits_mode, logits, err);
    rc = rc ? rc : cf_check(f, cudaSetDevice(f->device), "cudaSetDevice", err);
    rc = rc ? rc : grow_cache(f, f->n_cached + n, err);
    rc = rc ? rc : get_scratch(f, n, err);
    if (rc)
        return rc;
    cf_sample_memory(f);
    rc = cf_check(f, cudaMemcpy(f->s.ids, ids, n * sizeof *ids, cudaMemcpyHostToDevice),
                  "cudaMemcpy(token ids)", err);
    rc = rc ? rc : cf_embed(f, f->s.ids, f->s.h, n, err);
    for (size_t l = 0; !rc && l < f->cfg.n_layers; l++) {
        rc = attention_block(f, l, n, tap, user, err);
        rc = rc ? rc : mlp_block(f, l, n, err);
    }
    if (rc)
        return rc; /* the cache keeps its old length: rows past it are garbage */
    if (logits_mode)
        rc = lm_head(f, n, logits_mode, logits, err);
    else
        rc = cf_check_launch(f, "the pass's last launch", err);
    cf_sample_memory(f);
    if (rc)
        return rc;
    f->n_cached += n;
    return KVZ_OK;
}
