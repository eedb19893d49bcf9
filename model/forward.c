/* forward: the fp32 CPU forward pass of model/forward.h: weight loading (one
 * fp32 allocation; q/k/v and gate/up stored back to back so each is one
 * sgemm), the growing KV cache, and the per-layer pass with its taps. The
 * arithmetic lives in ops/ops.h. */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "forward_internal.h"

/* ---------- weights ---------- */

typedef struct loader {
    kvz_forward *f;
    const kvz_checkpoint *ck;
    size_t cursor;
    int reading;
    kvz_error *err;
} loader;

static int take(loader *ld, const char *name, size_t numel, float **dst)
{
    size_t at = ld->cursor;
    ld->cursor += numel;
    if (!ld->reading)
        return KVZ_OK;
    *dst = ld->f->weights + at;
    return kvz_checkpoint_read_f32(ld->ck, name, *dst, numel, ld->err);
}

static int take_layer_tensor(loader *ld, size_t l, const char *suffix, size_t numel, float **dst)
{
    char name[160];
    snprintf(name, sizeof name, "model.layers.%zu.%s", l, suffix);
    return take(ld, name, numel, dst);
}

static int take_layer(loader *ld, size_t l, layer_weights *w)
{
    const kvz_model_config *c = &ld->f->cfg;
    size_t D = c->d_model, dh = c->head_dim, Q = c->n_heads * dh, KV = c->n_kv_heads * dh;
    size_t F = c->d_ff;
    float *unused;
    int rc = KVZ_OK;
    rc = rc ? rc : take_layer_tensor(ld, l, "input_layernorm.weight", D, &w->in_norm);
    rc = rc ? rc : take_layer_tensor(ld, l, "post_attention_layernorm.weight", D, &w->post_norm);
    rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.q_proj.weight", Q * D, &w->w_qkv);
    rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.k_proj.weight", KV * D, &unused);
    rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.v_proj.weight", KV * D, &unused);
    if (c->qkv_bias) {
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.q_proj.bias", Q, &w->b_qkv);
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.k_proj.bias", KV, &unused);
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.v_proj.bias", KV, &unused);
    }
    if (c->qk_norm) {
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.q_norm.weight", dh, &w->q_norm);
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.k_norm.weight", dh, &w->k_norm);
    }
    rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.o_proj.weight", D * Q, &w->w_o);
    if (c->o_bias)
        rc = rc ? rc : take_layer_tensor(ld, l, "self_attn.o_proj.bias", D, &w->b_o);
    rc = rc ? rc : take_layer_tensor(ld, l, "mlp.gate_proj.weight", F * D, &w->w_gate_up);
    rc = rc ? rc : take_layer_tensor(ld, l, "mlp.up_proj.weight", F * D, &unused);
    rc = rc ? rc : take_layer_tensor(ld, l, "mlp.down_proj.weight", D * F, &w->w_down);
    if (c->mlp_bias) {
        rc = rc ? rc : take_layer_tensor(ld, l, "mlp.gate_proj.bias", F, &w->b_gate_up);
        rc = rc ? rc : take_layer_tensor(ld, l, "mlp.up_proj.bias", F, &unused);
        rc = rc ? rc : take_layer_tensor(ld, l, "mlp.down_proj.bias", D, &w->b_down);
    }
    return rc;
}

/* One pass counts (reading == 0), the second reads into f->weights. */
static int take_all(loader *ld)
{
    kvz_forward *f = ld->f;
    const kvz_model_config *c = &f->cfg;
    int rc = take(ld, "model.embed_tokens.weight", c->vocab_size * c->d_model, &f->embed);
    rc = rc ? rc : take(ld, "model.norm.weight", c->d_model, &f->final_norm);
    if (!c->tie_word_embeddings)
        rc = rc ? rc : take(ld, "lm_head.weight", c->vocab_size * c->d_model, &f->lm_head);
    for (size_t l = 0; !rc && l < c->n_layers; l++)
        rc = take_layer(ld, l, &f->layers[l]);
    if (c->tie_word_embeddings && ld->reading)
        f->lm_head = f->embed;
    return rc;
}

static int load_weights(kvz_forward *f, const kvz_checkpoint *ck, kvz_error *err)
{
    loader ld = {f, ck, 0, 0, err};
    take_all(&ld);
    f->weights = malloc(ld.cursor * sizeof *f->weights);
    if (!f->weights)
        return kvz_fail(err, KVZ_ENOMEM, "%s: cannot allocate %zu MiB for fp32 weights", f->source,
                        ld.cursor * sizeof(float) >> 20);
    ld.cursor = 0;
    ld.reading = 1;
    return take_all(&ld);
}

/* ---------- create / free ---------- */

static int check_config(const kvz_forward *f, kvz_error *err)
{
    const kvz_model_config *c = &f->cfg;
    if (c->head_dim % 2 || c->head_dim > 512)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: head_dim %zu is not supported (even, <= 512)",
                        f->source, c->head_dim);
    if (c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads)
        return kvz_fail(err, KVZ_EFORMAT, "%s: %zu attention heads are not a multiple of %zu KV heads",
                        f->source, c->n_heads, c->n_kv_heads);
    return KVZ_OK;
}

int kvz_forward_create(const kvz_checkpoint *ck, const kvz_forward_options *opt, kvz_forward **out,
                       kvz_error *err)
{
    *out = NULL;
    kvz_forward_options o = opt ? *opt : (kvz_forward_options){0, 0, 0};
    kvz_forward *f = calloc(1, sizeof *f);
    if (!f)
        return kvz_fail(err, KVZ_ENOMEM, "forward: out of memory");
    f->cfg = *kvz_checkpoint_config(ck);
    snprintf(f->source, sizeof f->source, "%s", kvz_checkpoint_path(ck));
    f->max_tokens = o.max_tokens ? o.max_tokens : f->cfg.max_position_embeddings;
    f->attn_block = o.attn_block ? o.attn_block : 256;
    kvz_ops_set_threads(o.n_threads);
    int rc = check_config(f, err);
    if (!rc) {
        f->layers = calloc(f->cfg.n_layers, sizeof *f->layers);
        f->k_cache = calloc(f->cfg.n_layers, sizeof *f->k_cache);
        f->v_cache = calloc(f->cfg.n_layers, sizeof *f->v_cache);
        f->inv_freq = malloc(f->cfg.head_dim / 2 * sizeof *f->inv_freq);
        if (!f->layers || !f->k_cache || !f->v_cache || !f->inv_freq)
            rc = kvz_fail(err, KVZ_ENOMEM, "forward: out of memory");
    }
    if (!rc) {
        kvz_rope_inv_freq(&f->cfg, f->inv_freq);
        rc = load_weights(f, ck, err);
    }
    if (rc) {
        kvz_forward_free(f);
        return rc;
    }
    *out = f;
    return KVZ_OK;
}

void kvz_forward_free(kvz_forward *f)
{
    if (!f)
        return;
    for (size_t l = 0; f->k_cache && l < f->cfg.n_layers; l++)
        free(f->k_cache[l]);
    for (size_t l = 0; f->v_cache && l < f->cfg.n_layers; l++)
        free(f->v_cache[l]);
    free(f->k_cache);
    free(f->v_cache);
    free(f->layers);
    free(f->inv_freq);
    free(f->weights);
    free(f->scratch);
    free(f);
}

const kvz_model_config *kvz_forward_config(const kvz_forward *f) { return &f->cfg; }
void kvz_forward_reset(kvz_forward *f) { f->n_cached = 0; }
size_t kvz_forward_n_cached(const kvz_forward *f) { return f->n_cached; }

void kvz_forward_truncate(kvz_forward *f, size_t n_tokens)
{
    if (n_tokens < f->n_cached) f->n_cached = n_tokens;
}
