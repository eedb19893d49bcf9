/* forward_run: kvz_forward_run, the per-layer pass over a chunk of tokens
 * (embedding, attention block with KV-cache append and taps, MLP block, final
 * norm and LM head) plus the input checks and KV-cache growth it needs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "forward_internal.h"

/* Scratch views for n tokens, carved from f->scratch. */
typedef struct run_buffers {
    float *h, *x, *qkv, *q, *attn, *proj, *gate_up, *act, *lse;
} run_buffers;

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

static int grow_cache(kvz_forward *f, size_t need, kvz_error *err)
{
    if (need <= f->cap)
        return KVZ_OK;
    size_t cap = kvz_forward_cache_grow_to(f->cap, need, f->max_tokens);
    size_t row = f->cfg.n_kv_heads * f->cfg.head_dim;
    for (size_t l = 0; l < f->cfg.n_layers; l++) {
        float *k = realloc(f->k_cache[l], cap * row * sizeof *k);
        if (k)
            f->k_cache[l] = k;
        float *v = k ? realloc(f->v_cache[l], cap * row * sizeof *v) : NULL;
        if (v)
            f->v_cache[l] = v;
        if (!k || !v)
            return kvz_fail(err, KVZ_ENOMEM, "%s: cannot grow the KV cache to %zu tokens",
                            f->source, cap);
    }
    f->cap = cap;
    return KVZ_OK;
}

static int get_buffers(kvz_forward *f, size_t n, run_buffers *b, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim;
    size_t widths[9] = {D, D, Q + 2 * KV, Q, Q, D, 2 * c->d_ff, c->d_ff, c->n_heads};
    size_t total = 0;
    for (int i = 0; i < 9; i++)
        total += n * widths[i];
    if (total > f->scratch_floats) {
        float *s = realloc(f->scratch, total * sizeof *s);
        if (!s)
            return kvz_fail(err, KVZ_ENOMEM, "%s: cannot allocate %zu MiB of scratch for %zu tokens",
                            f->source, total * sizeof(float) >> 20, n);
        f->scratch = s;
        f->scratch_floats = total;
    }
    float **views[9] = {&b->h,    &b->x,       &b->qkv, &b->q,  &b->attn,
                        &b->proj, &b->gate_up, &b->act, &b->lse};
    size_t at = 0;
    for (int i = 0; i < 9; i++) {
        *views[i] = f->scratch + at;
        at += n * widths[i];
    }
    return KVZ_OK;
}

/* x -> q (own buffer), new k/v rows into the cache; q/k norm; RoPE. */
static void attention_inputs(kvz_forward *f, const layer_weights *w, size_t l, size_t n,
                             run_buffers *b)
{
    const kvz_model_config *c = &f->cfg;
    size_t dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh, W = Q + 2 * KV;
    size_t pos0 = f->n_cached;
    kvz_linear(b->x, w->w_qkv, w->b_qkv, b->qkv, n, c->d_model, W);
    float *k_new = f->k_cache[l] + pos0 * KV, *v_new = f->v_cache[l] + pos0 * KV;
    for (size_t t = 0; t < n; t++) {
        memcpy(b->q + t * Q, b->qkv + t * W, Q * sizeof(float));
        memcpy(k_new + t * KV, b->qkv + t * W + Q, KV * sizeof(float));
        memcpy(v_new + t * KV, b->qkv + t * W + Q + KV, KV * sizeof(float));
    }
    float eps = (float)c->rms_norm_eps;
    if (w->q_norm) {
        kvz_rmsnorm(b->q, w->q_norm, b->q, n * c->n_heads, dh, eps);
        kvz_rmsnorm(k_new, w->k_norm, k_new, n * c->n_kv_heads, dh, eps);
    }
    kvz_rope_apply(b->q, n, c->n_heads, dh, pos0, f->inv_freq);
    kvz_rope_apply(k_new, n, c->n_kv_heads, dh, pos0, f->inv_freq);
}

static void add_into(float *h, const float *d, size_t count)
{
    for (size_t i = 0; i < count; i++)
        h[i] += d[i];
}

/* Row-chunked parallel RMSNorm and SwiGLU (chunks of 64 rows). */
typedef struct rows_job {
    const float *in, *w;
    float *out;
    size_t n_rows, width;
    float eps;
} rows_job;

enum { ROWS_PER_ITEM = 64 };

static void rmsnorm_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM, n = j->n_rows - r0 < ROWS_PER_ITEM ? j->n_rows - r0 : ROWS_PER_ITEM;
    kvz_rmsnorm(j->in + r0 * j->width, j->w, j->out + r0 * j->width, n, j->width, j->eps);
}

static void swiglu_item(void *ctx, size_t i)
{
    rows_job *j = ctx;
    size_t r0 = i * ROWS_PER_ITEM, n = j->n_rows - r0 < ROWS_PER_ITEM ? j->n_rows - r0 : ROWS_PER_ITEM;
    kvz_swiglu(j->in + r0 * 2 * j->width, j->out + r0 * j->width, n, j->width);
}

static void rmsnorm_rows(const float *x, const float *w, float *y, size_t n, size_t dim, float eps)
{
    rows_job j = {x, w, y, n, dim, eps};
    kvz_parallel_for((n + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, rmsnorm_item, &j);
}

static void swiglu_rows(const float *gate_up, float *out, size_t n, size_t d_ff)
{
    rows_job j = {gate_up, NULL, out, n, d_ff, 0.0f};
    kvz_parallel_for((n + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM, swiglu_item, &j);
}

static int attention_block(kvz_forward *f, size_t l, size_t n, run_buffers *b, kvz_tap_fn tap,
                           void *user, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    const layer_weights *w = &f->layers[l];
    size_t D = c->d_model, Q = c->n_heads * c->head_dim;
    rmsnorm_rows(b->h, w->in_norm, b->x, n, D, (float)c->rms_norm_eps);
    attention_inputs(f, w, l, n, b);
    kvz_attn_args a = {b->q,
                       f->k_cache[l],
                       f->v_cache[l],
                       b->attn,
                       n,
                       f->n_cached,
                       c->n_heads,
                       c->n_kv_heads,
                       c->head_dim,
                       f->attn_block,
                       1.0f / sqrtf((float)c->head_dim),
                       tap ? b->lse : NULL};
    if (kvz_attention(&a))
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory in attention", f->source);
    if (tap) {
        kvz_layer_tap t = {l,    f->n_cached,   n, b->x, b->q, f->k_cache[l], f->v_cache[l],
                           w->w_o, b->lse};
        int rc = tap(&t, user, err);
        if (rc)
            return rc;
    }
    kvz_linear(b->attn, w->w_o, w->b_o, b->proj, n, Q, D);
    add_into(b->h, b->proj, n * D);
    return KVZ_OK;
}

static void mlp_block(kvz_forward *f, size_t l, size_t n, run_buffers *b)
{
    const kvz_model_config *c = &f->cfg;
    const layer_weights *w = &f->layers[l];
    size_t D = c->d_model, F = c->d_ff;
    rmsnorm_rows(b->h, w->post_norm, b->x, n, D, (float)c->rms_norm_eps);
    kvz_linear(b->x, w->w_gate_up, w->b_gate_up, b->gate_up, n, D, 2 * F);
    swiglu_rows(b->gate_up, b->act, n, F);
    kvz_linear(b->act, w->w_down, w->b_down, b->proj, n, F, D);
    add_into(b->h, b->proj, n * D);
}

static void lm_head(kvz_forward *f, size_t n, run_buffers *b, int mode, float *logits)
{
    const kvz_model_config *c = &f->cfg;
    size_t D = c->d_model;
    size_t first = mode == KVZ_LOGITS_LAST ? n - 1 : 0, rows = n - first;
    kvz_rmsnorm(b->h + first * D, f->final_norm, b->x, rows, D, (float)c->rms_norm_eps);
    kvz_linear(b->x, f->lm_head, NULL, logits, rows, D, c->vocab_size);
}

int kvz_forward_run(kvz_forward *f, const int32_t *ids, size_t n, kvz_tap_fn tap, void *user,
                    int logits_mode, float *logits, kvz_error *err)
{
    run_buffers b;
    int rc = kvz_forward_check_run(&f->cfg, f->source, f->max_tokens, f->n_cached, ids, n,
                                   logits_mode, logits, err);
    rc = rc ? rc : grow_cache(f, f->n_cached + n, err);
    rc = rc ? rc : get_buffers(f, n, &b, err);
    if (rc)
        return rc;
    size_t D = f->cfg.d_model;
    for (size_t t = 0; t < n; t++)
        memcpy(b.h + t * D, f->embed + (size_t)ids[t] * D, D * sizeof(float));
    for (size_t l = 0; l < f->cfg.n_layers; l++) {
        rc = attention_block(f, l, n, &b, tap, user, err);
        if (rc)
            return rc; /* the cache keeps its old length: rows past it are garbage */
        mlp_block(f, l, n, &b);
    }
    f->n_cached += n;
    if (logits_mode)
        lm_head(f, n, &b, logits_mode, logits);
    return KVZ_OK;
}
