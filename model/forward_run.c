/* forward_run: kvz_forward_run, the per-layer pass over a chunk of tokens
 * (embedding, attention block with KV-cache append and taps, MLP block, final
 * norm and LM head) plus the input checks, KV-cache growth and scratch it
 * needs; every step is one op of the backend interface (ops/backend.h), so
 * this one pass runs on the cpu and on cuda. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"

static int check_ids(const kvz_model_config *c, const char *source, const int32_t *ids,
                     size_t n, kvz_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= c->vocab_size)
            return kvz_fail(err, KVZ_EINVAL,
                            "%s: token id %ld at index %zu is outside the vocabulary (0..%zu)",
                            source, (long)ids[i], i, c->vocab_size - 1);
    return KVZ_OK;
}

static int window_applies(const kvz_model_config *c)
{
    if (!c->sliding_window)
        return 0;
    if (c->arch == KVZ_ARCH_QWEN2 || c->arch == KVZ_ARCH_QWEN3)
        return c->max_window_layers < c->n_layers;
    return 1;
}

static int check_length(const kvz_model_config *c, const char *source, size_t max_tokens,
                        size_t total, kvz_error *err)
{
    if (total > c->max_position_embeddings)
        return kvz_fail(err, KVZ_EINVAL, "%s: %zu tokens exceed the context length of %zu tokens",
                        source, total, c->max_position_embeddings);
    if (total > max_tokens)
        return kvz_fail(err, KVZ_EINVAL,
                        "%s: %zu tokens exceed the KV-cache capacity of %zu tokens (context length %zu)",
                        source, total, max_tokens, c->max_position_embeddings);
    if (window_applies(c) && total > c->sliding_window)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: %zu tokens exceed the sliding window of %zu tokens; sliding-window "
                        "attention is not implemented", source, total, c->sliding_window);
    return KVZ_OK;
}

int kvz_forward_check_run(const kvz_model_config *c, const char *source, size_t max_tokens,
                          size_t n_cached, const int32_t *ids, size_t n, int logits_mode,
                          const float *logits, kvz_error *err)
{
    if (n == 0)
        return kvz_fail(err, KVZ_EINVAL, "%s: no tokens to run", source);
    if (!ids)
        return kvz_fail(err, KVZ_EINVAL, "%s: NULL token ids", source);
    if (logits_mode < KVZ_LOGITS_NONE || logits_mode > KVZ_LOGITS_ALL || (logits_mode && !logits))
        return kvz_fail(err, KVZ_EINVAL, "%s: bad logits mode %d or no logits buffer", source,
                        logits_mode);
    int rc = check_ids(c, source, ids, n, err);
    return rc ? rc : check_length(c, source, max_tokens, n_cached + n, err);
}

size_t kvz_forward_cache_grow_to(size_t cap, size_t need, size_t max_tokens)
{
    size_t grown = cap * 2 > need ? cap * 2 : need;
    if (grown < 256)
        grown = 256;
    return grown > max_tokens ? max_tokens : grown;
}

/* Moves one layer's cache buffer to a new allocation of cap rows, keeping
 * the cached rows. */
static int regrow(kvz_forward *f, kvz_buf *buf, size_t cap, size_t row, const char *what,
                  kvz_error *err)
{
    kvz_buf fresh;
    kvz_error why = {0};
    int rc = kvz_backend_alloc(f->be, KVZ_F32, cap * row, what, &fresh, &why);
    if (rc)
        return kvz_fail(err, rc, "%s: cannot grow the KV cache to %zu tokens: %s", f->source,
                        cap, why.msg);
    if (buf->data && f->n_cached)
        rc = kvz_backend_copy(f->be, fresh.data, buf->data, f->n_cached * row * sizeof(float),
                              err);
    if (rc) {
        kvz_backend_free(f->be, &fresh);
        return rc;
    }
    kvz_backend_free(f->be, buf);
    *buf = fresh;
    return KVZ_OK;
}

static int grow_cache(kvz_forward *f, size_t need, kvz_error *err)
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

/* The scratch views for n tokens, one allocation (kept when large enough). */
static int get_buffers(kvz_forward *f, size_t n, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    size_t widths[11] = {D, D, Q + 2 * KV, Q, Q, D, 2 * c->d_ff, c->d_ff, c->n_heads, KV, KV};
    run_buffers *b = &f->b;
    float **views[11] = {&b->h,    &b->x,       &b->qkv, &b->q,  &b->attn, &b->proj,
                         &b->gate_up, &b->act, &b->lse, &b->kn, &b->vn};
    int n_views = f->ragged ? 11 : 9;
    if (n > f->scratch_tokens) {
        size_t total = 0;
        for (int i = 0; i < n_views; i++)
            total += n * widths[i];
        kvz_backend_free(f->be, &f->scratch);
        f->scratch_tokens = 0;
        char what[64];
        snprintf(what, sizeof what, "scratch for %zu tokens", n);
        int rc = kvz_backend_alloc(f->be, KVZ_F32, total, what, &f->scratch, err);
        if (rc)
            return rc;
        f->scratch_tokens = n;
    }
    size_t at = 0;
    for (int i = 0; i < n_views; i++) { /* views for scratch_tokens, so they never move */
        *views[i] = (float *)f->scratch.data + at;
        at += f->scratch_tokens * widths[i];
    }
    return KVZ_OK;
}

/* x -> q (own buffer), new k/v rows into the cache; q/k norm; RoPE. */
static int attention_inputs(kvz_forward *f, const layer_weights *w, size_t l, size_t n,
                            kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    kvz_backend *be = f->be;
    run_buffers *b = &f->b;
    size_t dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh, W = Q + 2 * KV;
    size_t pos0 = f->n_cached;
    const float *inv_freq = kvz_buf_f32(f->inv_freq);
    float *k_new = f->ragged ? b->kn : kvz_buf_f32(f->k_cache[l]) + pos0 * KV;
    float *v_new = f->ragged ? b->vn : kvz_buf_f32(f->v_cache[l]) + pos0 * KV;
    float eps = (float)c->rms_norm_eps;
    int rc = kvz_op_linear(be, b->x, w->w_qkv, w->b_qkv, b->qkv, n, c->d_model, W, err);
    rc = rc ? rc : kvz_op_copy_rows(be, b->q, Q, b->qkv, W, n, Q, err);
    rc = rc ? rc : kvz_op_copy_rows(be, k_new, KV, b->qkv + Q, W, n, KV, err);
    rc = rc ? rc : kvz_op_copy_rows(be, v_new, KV, b->qkv + Q + KV, W, n, KV, err);
    if (w->q_norm) {
        rc = rc ? rc : kvz_op_rmsnorm(be, b->q, w->q_norm, b->q, n * c->n_heads, dh, eps, err);
        rc = rc ? rc : kvz_op_rmsnorm(be, k_new, w->k_norm, k_new, n * c->n_kv_heads, dh, eps, err);
    }
    rc = rc ? rc : kvz_op_rope(be, b->q, n, c->n_heads, dh, pos0, inv_freq, err);
    rc = rc ? rc : kvz_op_rope(be, k_new, n, c->n_kv_heads, dh, pos0, inv_freq, err);
    if (!rc && f->ragged) /* every head keeps the chunk; the policy evicts after attention */
        rc = kvz_kv_cache_append(f->ragged, l, k_new, v_new, n, pos0, err);
    return rc;
}

/* The pruned forward's attention: over each head's kept keys, then the
 * policy's evictions (kvz_prune_fn). */
static int ragged_attention_block(kvz_forward *f, size_t l, size_t n, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    kvz_ragged_attn_args a = {0};
    kvz_kv_cache_view(f->ragged, l, &a);
    a.q = f->b.q;
    a.out = f->b.attn;
    a.n_q = n;
    a.q_pos0 = f->n_cached;
    a.n_heads = c->n_heads;
    a.scale = 1.0f / sqrtf((float)c->head_dim);
    int rc = kvz_op_ragged_attention(f->be, &a, err);
    kvz_prune_call call = {l, f->n_cached, n, f->b.x, f->b.q, c->n_heads, c->head_dim, f->ragged};
    return rc ? rc : f->prune(f->prune_user, &call, err);
}

/* The tap's fp32 W_o: the weight itself, or (bf16) a converted copy. */
static int tap_w_o(kvz_forward *f, const layer_weights *w, const float **out, kvz_error *err)
{
    *out = kvz_buf_f32(w->w_o);
    if (*out)
        return KVZ_OK;
    int rc = f->w_o_f32.data ? KVZ_OK
                             : kvz_backend_alloc(f->be, KVZ_F32, w->w_o.numel,
                                                 "the tap's fp32 W_o", &f->w_o_f32, err);
    rc = rc ? rc : kvz_op_convert(f->be, f->w_o_f32, w->w_o, err);
    *out = kvz_buf_f32(f->w_o_f32);
    return rc;
}

static int attention_block(kvz_forward *f, size_t l, size_t n, kvz_tap_fn tap, void *user,
                           kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    const layer_weights *w = &f->layers[l];
    kvz_backend *be = f->be;
    run_buffers *b = &f->b;
    size_t D = c->d_model, Q = c->n_heads * c->head_dim;
    int rc = kvz_op_rmsnorm(be, b->h, w->in_norm, b->x, n, D, (float)c->rms_norm_eps, err);
    rc = rc ? rc : attention_inputs(f, w, l, n, err);
    if (f->ragged) {
        rc = rc ? rc : ragged_attention_block(f, l, n, err);
        rc = rc ? rc : kvz_op_linear(be, b->attn, w->w_o, w->b_o, b->proj, n, Q, D, err);
        return rc ? rc : kvz_op_add(be, b->h, b->proj, n * D, err);
    }
    kvz_attn_args a = {b->q,
                       kvz_buf_f32(f->k_cache[l]),
                       kvz_buf_f32(f->v_cache[l]),
                       b->attn,
                       n,
                       f->n_cached,
                       c->n_heads,
                       c->n_kv_heads,
                       c->head_dim,
                       f->attn_block,
                       1.0f / sqrtf((float)c->head_dim),
                       tap ? b->lse : NULL};
    rc = rc ? rc : kvz_op_attention(be, &a, f->dtype, err);
    if (!rc && tap) {
        const float *w_o = NULL;
        rc = tap_w_o(f, w, &w_o, err);
        kvz_layer_tap t = {l,   f->n_cached, n,     b->x, b->q, a.k, a.v,
                           w_o, b->lse,      f->be};
        rc = rc ? rc : tap(&t, user, err);
    }
    rc = rc ? rc : kvz_op_linear(be, b->attn, w->w_o, w->b_o, b->proj, n, Q, D, err);
    return rc ? rc : kvz_op_add(be, b->h, b->proj, n * D, err);
}

static int mlp_block(kvz_forward *f, size_t l, size_t n, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    const layer_weights *w = &f->layers[l];
    kvz_backend *be = f->be;
    run_buffers *b = &f->b;
    size_t D = c->d_model, F = c->d_ff;
    int rc = kvz_op_rmsnorm(be, b->h, w->post_norm, b->x, n, D, (float)c->rms_norm_eps, err);
    rc = rc ? rc : kvz_op_linear(be, b->x, w->w_gate_up, w->b_gate_up, b->gate_up, n, D, 2 * F, err);
    rc = rc ? rc : kvz_op_swiglu(be, b->gate_up, b->act, n, F, err);
    rc = rc ? rc : kvz_op_linear(be, b->act, w->w_down, w->b_down, b->proj, n, F, D, err);
    return rc ? rc : kvz_op_add(be, b->h, b->proj, n * D, err);
}

enum { LOGIT_CHUNK_FLOATS = 1 << 25 }; /* 128 MiB of backend logits at a time */

/* Final norm and LM head for the last or every row. Host-memory backends
 * write the host logits directly; others in row chunks through a backend
 * buffer. */
static int lm_head(kvz_forward *f, size_t n, int mode, float *logits, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    kvz_backend *be = f->be;
    size_t D = c->d_model, V = c->vocab_size;
    size_t first = mode == KVZ_LOGITS_LAST ? n - 1 : 0, rows = n - first;
    int rc = kvz_op_rmsnorm(be, f->b.h + first * D, f->final_norm, f->b.x, rows, D,
                            (float)c->rms_norm_eps, err);
    if (rc || kvz_backend_host_memory(be))
        return rc ? rc : kvz_op_linear(be, f->b.x, f->lm_head, NULL, logits, rows, D, V, err);
    size_t chunk = LOGIT_CHUNK_FLOATS / V ? LOGIT_CHUNK_FLOATS / V : 1;
    chunk = chunk < rows ? chunk : rows;
    if (chunk > f->logit_rows) {
        kvz_backend_free(be, &f->logits);
        f->logit_rows = 0;
        rc = kvz_backend_alloc(be, KVZ_F32, chunk * V, "logits", &f->logits, err);
        f->logit_rows = rc ? 0 : chunk;
    }
    for (size_t r0 = 0; !rc && r0 < rows; r0 += chunk) {
        size_t cnt = rows - r0 < chunk ? rows - r0 : chunk;
        rc = kvz_op_linear(be, f->b.x + r0 * D, f->lm_head, NULL, kvz_buf_f32(f->logits), cnt,
                           D, V, err);
        rc = rc ? rc : kvz_backend_download(be, logits + r0 * V, f->logits.data,
                                            cnt * V * sizeof(float), err);
    }
    return rc;
}

/* Prefixes a backend's message with the model ("<source>: cuda: ..."). */
static int name_model(const kvz_forward *f, int rc, kvz_error *err)
{
    if (rc && err && strncmp(err->msg, f->source, strlen(f->source)) != 0) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kvz_fail(err, rc, "%s: %s", f->source, msg);
    }
    return rc;
}

int kvz_forward_run(kvz_forward *f, const int32_t *ids, size_t n, kvz_tap_fn tap, void *user,
                    int logits_mode, float *logits, kvz_error *err)
{
    int rc = kvz_forward_check_run(&f->cfg, f->source, f->max_tokens, f->n_cached, ids, n,
                                   logits_mode, logits, err);
    if (rc)
        return rc;
    if (f->ragged && tap)
        return kvz_fail(err, KVZ_EINVAL, "%s: taps need the full KV cache; this forward "
                        "prunes it", f->source);
    rc = f->ragged ? KVZ_OK : grow_cache(f, f->n_cached + n, err);
    rc = rc ? rc : get_buffers(f, n, err);
    rc = rc ? rc : kvz_op_embed(f->be, f->embed, f->cfg.d_model, ids, n, f->b.h, err);
    for (size_t l = 0; !rc && l < f->cfg.n_layers; l++) {
        rc = attention_block(f, l, n, tap, user, err);
        rc = rc ? rc : mlp_block(f, l, n, err);
    }
    if (!rc && logits_mode) /* else the pass may still be running (its faults show at the
                               next download or sync) */
        rc = lm_head(f, n, logits_mode, logits, err);
    if (rc)
        return name_model(f, rc, err); /* the cache keeps its old length */
    f->n_cached += n;
    return KVZ_OK;
}
