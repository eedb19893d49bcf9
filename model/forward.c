/* forward: model/forward.h except the pass itself (forward_run.c): opening
 * the backend, the weight layout (q/k/v and gate/up stored back to back so
 * each is one GEMM; matrices in the forward's dtype, norms and biases fp32),
 * loading from a checkpoint or filling with random values, the RoPE table,
 * the getters and freeing. */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"

/* ---------- weights ---------- */

/* One walk over the tensors in checkpoint order, twice: counting
 * (reading == 0) sizes the two pools; the second places every tensor and
 * fills it, from the checkpoint (ck) or with random values (ck NULL). */
typedef struct loader {
    kvz_forward *f;
    const kvz_checkpoint *ck;
    int reading;
    size_t cursor[2];     /* elements used in each pool */
    size_t largest;       /* numel of the largest tensor */
    float *staging;       /* host [largest]: a tensor on its way to the backend */
    uint16_t *staging16;  /* host [largest]: its bf16 rounding */
    uint64_t seed, tensor_no;
    kvz_error *err;
} loader;

enum { GROUP_ALIGN = 64 }; /* elements: device tensors start 256-byte aligned */

typedef enum tensor_kind { NORM, BIAS, MATRIX } tensor_kind;

/* Fills view v with tensor `name` (or random values of the given bound). */
static int fill_tensor(loader *ld, const char *name, kvz_buf v, tensor_kind kind, float bound)
{
    kvz_forward *f = ld->f;
    if (!ld->ck)
        return kvz_op_fill(f->be, v, ld->seed, ld->tensor_no++, kind == NORM ? 0.0f : bound,
                           kind == NORM ? 1.0f : 0.0f, ld->err);
    if (kvz_backend_host_memory(f->be) && v.dtype == KVZ_F32) /* straight into place */
        return kvz_checkpoint_read_f32(ld->ck, name, v.data, v.numel, ld->err);
    int rc = kvz_checkpoint_read_f32(ld->ck, name, ld->staging, v.numel, ld->err);
    if (rc)
        return rc;
    const void *src = ld->staging;
    if (v.dtype == KVZ_BF16) {
        for (size_t i = 0; i < v.numel; i++)
            ld->staging16[i] = kvz_f32_to_bf16(ld->staging[i]);
        src = ld->staging16;
    }
    return kvz_backend_upload(f->be, v.data, src, v.numel * kvz_dtype_size(v.dtype), ld->err);
}

/* Places the next tensor (numel elements) and, when reading, fills it.
 * group_start: the first of a fused group (q/k/v, gate/up, their biases),
 * which starts aligned on non-host backends; the others follow directly. */
static int take(loader *ld, const char *name, size_t numel, tensor_kind kind, int group_start,
                float bound, kvz_buf *out)
{
    kvz_forward *f = ld->f;
    int pool = kind == MATRIX && f->dtype != KVZ_F32 ? 1 : 0;
    if (group_start && !kvz_backend_host_memory(f->be))
        ld->cursor[pool] = (ld->cursor[pool] + GROUP_ALIGN - 1) / GROUP_ALIGN * GROUP_ALIGN;
    size_t at = ld->cursor[pool];
    ld->cursor[pool] += numel;
    if (numel > ld->largest)
        ld->largest = numel;
    if (!ld->reading)
        return KVZ_OK;
    kvz_buf v = kvz_buf_at(f->pool[pool], at);
    v.numel = numel;
    if (out)
        *out = v;
    return fill_tensor(ld, name, v, kind, bound);
}

static int take_layer_tensor(loader *ld, size_t l, const char *suffix, size_t numel,
                             tensor_kind kind, int group_start, float bound, kvz_buf *out)
{
    char name[160];
    snprintf(name, sizeof name, "model.layers.%zu.%s", l, suffix);
    return take(ld, name, numel, kind, group_start, bound, out);
}

static int take_layer(loader *ld, size_t l, layer_weights *w)
{
    const kvz_model_config *c = &ld->f->cfg;
    size_t D = c->d_model, dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t F = c->d_ff;
    float bd = 1.0f / sqrtf((float)D), bq = 1.0f / sqrtf((float)Q), bf = 1.0f / sqrtf((float)F);
    kvz_buf in_norm = {0}, post_norm = {0}, b_qkv = {0}, q_norm = {0}, k_norm = {0}, b_o = {0};
    kvz_buf b_gate_up = {0}, b_down = {0};
    int rc = KVZ_OK;
#define T(suffix, numel, kind, start, bound, out) \
    rc = rc ? rc : take_layer_tensor(ld, l, suffix, numel, kind, start, bound, out)
    T("input_layernorm.weight", D, NORM, 1, 0, &in_norm);
    T("post_attention_layernorm.weight", D, NORM, 1, 0, &post_norm);
    T("self_attn.q_proj.weight", Q * D, MATRIX, 1, bd, &w->w_qkv);
    T("self_attn.k_proj.weight", KV * D, MATRIX, 0, bd, NULL);
    T("self_attn.v_proj.weight", KV * D, MATRIX, 0, bd, NULL);
    if (c->qkv_bias) {
        T("self_attn.q_proj.bias", Q, BIAS, 1, bd, &b_qkv);
        T("self_attn.k_proj.bias", KV, BIAS, 0, bd, NULL);
        T("self_attn.v_proj.bias", KV, BIAS, 0, bd, NULL);
    }
    if (c->qk_norm) {
        T("self_attn.q_norm.weight", dh, NORM, 1, 0, &q_norm);
        T("self_attn.k_norm.weight", dh, NORM, 1, 0, &k_norm);
    }
    T("self_attn.o_proj.weight", D * Q, MATRIX, 1, bq, &w->w_o);
    if (c->o_bias)
        T("self_attn.o_proj.bias", D, BIAS, 1, bq, &b_o);
    T("mlp.gate_proj.weight", F * D, MATRIX, 1, bd, &w->w_gate_up);
    T("mlp.up_proj.weight", F * D, MATRIX, 0, bd, NULL);
    T("mlp.down_proj.weight", D * F, MATRIX, 1, bf, &w->w_down);
    if (c->mlp_bias) {
        T("mlp.gate_proj.bias", F, BIAS, 1, bd, &b_gate_up);
        T("mlp.up_proj.bias", F, BIAS, 0, bd, NULL);
        T("mlp.down_proj.bias", D, BIAS, 1, bf, &b_down);
    }
#undef T
    /* the fused groups span their members */
    w->w_qkv.numel = (Q + 2 * KV) * D;
    w->w_gate_up.numel = 2 * F * D;
    w->in_norm = kvz_buf_f32(in_norm);
    w->post_norm = kvz_buf_f32(post_norm);
    w->b_qkv = kvz_buf_f32(b_qkv);
    w->q_norm = kvz_buf_f32(q_norm);
    w->k_norm = kvz_buf_f32(k_norm);
    w->b_o = kvz_buf_f32(b_o);
    w->b_gate_up = kvz_buf_f32(b_gate_up);
    w->b_down = kvz_buf_f32(b_down);
    return rc;
}

static int take_all(loader *ld)
{
    kvz_forward *f = ld->f;
    const kvz_model_config *c = &f->cfg;
    size_t VD = c->vocab_size * c->d_model;
    kvz_buf norm = {0};
    int rc = take(ld, "model.embed_tokens.weight", VD, MATRIX, 1, 1.0f, &f->embed);
    rc = rc ? rc : take(ld, "model.norm.weight", c->d_model, NORM, 1, 0, &norm);
    if (!c->tie_word_embeddings)
        rc = rc ? rc : take(ld, "lm_head.weight", VD, MATRIX, 1,
                            1.0f / sqrtf((float)c->d_model), &f->lm_head);
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = take_layer(ld, l, &f->layers[l]);
    if (ld->reading) {
        f->final_norm = kvz_buf_f32(norm);
        if (c->tie_word_embeddings)
            f->lm_head = f->embed;
    }
    return rc;
}

static int load_weights(kvz_forward *f, const kvz_checkpoint *ck, uint64_t seed, kvz_error *err)
{
    loader ld = {f, ck, 0, {0, 0}, 0, NULL, NULL, seed, 0, err};
    take_all(&ld);
    int rc = kvz_backend_alloc(f->be, KVZ_F32, ld.cursor[0], "the fp32 weights", &f->pool[0], err);
    if (!rc && ld.cursor[1])
        rc = kvz_backend_alloc(f->be, f->dtype, ld.cursor[1], "the weight matrices",
                               &f->pool[1], err);
    int direct = kvz_backend_host_memory(f->be) && f->dtype == KVZ_F32;
    if (!rc && ck && !direct) {
        ld.staging = malloc(ld.largest * sizeof *ld.staging);
        ld.staging16 = malloc(ld.largest * sizeof *ld.staging16);
        if (!ld.staging || !ld.staging16)
            rc = kvz_fail(err, KVZ_ENOMEM, "%s: cannot allocate %zu MiB of host staging",
                          f->source, ld.largest * 6 >> 20);
    }
    if (!rc) {
        ld.cursor[0] = ld.cursor[1] = 0;
        ld.reading = 1;
        rc = take_all(&ld);
    }
    rc = rc ? rc : kvz_backend_sync(f->be, err);
    free(ld.staging);
    free(ld.staging16);
    return rc;
}

/* ---------- create / free ---------- */

static int check_config(const kvz_forward *f, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    if (c->head_dim == 0 || c->head_dim % 2 || c->head_dim > 512)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: head_dim %zu is not supported (even, <= 512)",
                        f->source, c->head_dim);
    if (c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads)
        return kvz_fail(err, KVZ_EFORMAT, "%s: %zu attention heads are not a multiple of %zu KV heads",
                        f->source, c->n_heads, c->n_kv_heads);
    if (c->n_layers == 0 || c->d_model == 0 || c->d_ff == 0 || c->vocab_size == 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: empty model shape", f->source);
    return KVZ_OK;
}

/* Everything but the weights: struct, checks, backend, the RoPE table. */
static int begin(const kvz_model_config *cfg, const char *source, const kvz_forward_options *opt,
                 kvz_forward **out, kvz_error *err)
{
    kvz_forward_options o = opt ? *opt : (kvz_forward_options){.device = KVZ_BACKEND_CPU, .precision = KVZ_F32};
    kvz_forward *f = calloc(1, sizeof *f);
    *out = f;
    if (!f)
        return kvz_fail(err, KVZ_ENOMEM, "forward: out of memory");
    f->cfg = *cfg;
    snprintf(f->source, sizeof f->source, "%s", source);
    f->max_tokens = o.max_tokens ? o.max_tokens : f->cfg.max_position_embeddings;
    f->attn_block = o.attn_block ? o.attn_block : 256;
    f->dtype = o.precision;
    if (f->dtype != KVZ_F32 && f->dtype != KVZ_BF16)
        return kvz_fail(err, KVZ_EINVAL, "%s: precision %s is not supported (float32, bfloat16)",
                        source, kvz_dtype_name(f->dtype));
    int rc = check_config(f, err);
    if (rc)
        return rc;
    kvz_backend_options bo = {o.device, o.device_index, o.n_threads};
    kvz_error why = {0};
    rc = kvz_backend_open(&bo, &f->be, &why);
    if (rc)
        return kvz_fail(err, rc, "%s: %s", source, why.msg);
    f->layers = calloc(f->cfg.n_layers, sizeof *f->layers);
    f->k_cache = calloc(f->cfg.n_layers, sizeof *f->k_cache);
    f->v_cache = calloc(f->cfg.n_layers, sizeof *f->v_cache);
    float *inv = malloc(f->cfg.head_dim / 2 * sizeof *inv);
    if (!f->layers || !f->k_cache || !f->v_cache || !inv) {
        free(inv);
        return kvz_fail(err, KVZ_ENOMEM, "forward: out of memory");
    }
    kvz_rope_inv_freq(&f->cfg, inv);
    f->prune = o.prune;
    f->prune_user = o.prune_user;
    if (o.prune)
        rc = kvz_kv_cache_create(f->be, f->cfg.n_layers, f->cfg.n_kv_heads, f->cfg.head_dim,
                                 &f->ragged, err);
    if (rc) {
        free(inv);
        return rc;
    }
    size_t half = f->cfg.head_dim / 2;
    rc = kvz_backend_alloc(f->be, KVZ_F32, half, "the RoPE table", &f->inv_freq, err);
    rc = rc ? rc : kvz_backend_upload(f->be, f->inv_freq.data, inv, half * sizeof *inv, err);
    free(inv);
    return rc;
}

int kvz_forward_create(const kvz_checkpoint *ck, const kvz_forward_options *opt, kvz_forward **out,
                       kvz_error *err)
{
    kvz_forward *f = NULL;
    int rc = begin(kvz_checkpoint_config(ck), kvz_checkpoint_path(ck), opt, &f, err);
    rc = rc ? rc : load_weights(f, ck, 0, err);
    if (rc) {
        kvz_forward_free(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

int kvz_forward_create_random(const kvz_model_config *cfg, uint64_t seed,
                              const kvz_forward_options *opt, kvz_forward **out, kvz_error *err)
{
    kvz_forward *f = NULL;
    int rc = begin(cfg, "random model", opt, &f, err);
    rc = rc ? rc : load_weights(f, NULL, seed, err);
    if (rc) {
        kvz_forward_free(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

void kvz_forward_free(kvz_forward *f)
{
    if (!f)
        return;
    if (f->be) {
        for (size_t l = 0; f->k_cache && l < f->cfg.n_layers; l++)
            kvz_backend_free(f->be, &f->k_cache[l]);
        for (size_t l = 0; f->v_cache && l < f->cfg.n_layers; l++)
            kvz_backend_free(f->be, &f->v_cache[l]);
        kvz_backend_free(f->be, &f->pool[0]);
        kvz_backend_free(f->be, &f->pool[1]);
        kvz_backend_free(f->be, &f->inv_freq);
        kvz_backend_free(f->be, &f->scratch);
        kvz_backend_free(f->be, &f->w_o_f32);
        kvz_backend_free(f->be, &f->logits);
        kvz_kv_cache_free(f->ragged);
        kvz_backend_close(f->be);
    }
    free(f->k_cache);
    free(f->v_cache);
    free(f->layers);
    free(f);
}

const kvz_model_config *kvz_forward_config(const kvz_forward *f) { return &f->cfg; }
kvz_backend *kvz_forward_backend(const kvz_forward *f) { return f->be; }
kvz_dtype kvz_forward_precision(const kvz_forward *f) { return f->dtype; }
void kvz_forward_reset(kvz_forward *f)
{
    f->n_cached = 0;
    if (f->ragged)
        kvz_kv_cache_reset(f->ragged);
}
kvz_kv_cache *kvz_forward_kv_cache(const kvz_forward *f) { return f->ragged; }
size_t kvz_forward_n_cached(const kvz_forward *f) { return f->n_cached; }
size_t kvz_forward_device_bytes(const kvz_forward *f) { return kvz_backend_bytes_held(f->be); }
size_t kvz_forward_peak_device_bytes(const kvz_forward *f) { return kvz_backend_peak_bytes(f->be); }

void kvz_forward_truncate(kvz_forward *f, size_t n_tokens)
{
    if (f->ragged && n_tokens < f->n_cached && n_tokens == 0)
        kvz_forward_reset(f);
    else if (!f->ragged && n_tokens < f->n_cached)
        f->n_cached = n_tokens;
}
