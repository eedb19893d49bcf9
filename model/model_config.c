/* model_config: kvz_model_config from HF config.json (transformers' defaults
 * for absent keys) and from GGUF metadata, plus consistency checks (see
 * model_config.h). */
#include "model_config.h"
#include "kvz_json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"

static const struct {
    const char *model_type, *class_name;
    kvz_arch arch;
    size_t default_max_pos;
} ARCHS[] = {
    {"llama", "LlamaForCausalLM", KVZ_ARCH_LLAMA, 2048},
    {"mistral", "MistralForCausalLM", KVZ_ARCH_MISTRAL, 131072},
    {"qwen2", "Qwen2ForCausalLM", KVZ_ARCH_QWEN2, 32768},
    {"qwen3", "Qwen3ForCausalLM", KVZ_ARCH_QWEN3, 32768},
};
#define N_ARCHS (sizeof ARCHS / sizeof ARCHS[0])
#define SUPPORTED_LIST "llama, mistral, qwen2, qwen3"

const char *kvz_arch_name(kvz_arch arch)
{
    return (unsigned)arch < N_ARCHS ? ARCHS[arch].model_type : "?";
}

/* ---------- typed JSON getters (absent or null -> default) ---------- */

static int cfg_size(const json_t *obj, const char *key, int required, size_t dflt, size_t *out,
                     const char *src, kvz_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return kvz_fail(err, KVZ_EFORMAT, "%s: missing required key '%s'", src, key);
        *out = dflt;
        return KVZ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: '%s' must be a non-negative integer", src, key);
    *out = (size_t)json_integer_value(v);
    return KVZ_OK;
}

static int cfg_real(const json_t *obj, const char *key, double dflt, double *out,
                     const char *src, kvz_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return KVZ_OK;
    }
    if (!json_is_number(v))
        return kvz_fail(err, KVZ_EFORMAT, "%s: '%s' must be a number", src, key);
    *out = json_number_value(v);
    return KVZ_OK;
}

static int cfg_flag(const json_t *obj, const char *key, int dflt, int *out, const char *src,
                     kvz_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return KVZ_OK;
    }
    if (!json_is_boolean(v))
        return kvz_fail(err, KVZ_EFORMAT, "%s: '%s' must be true or false", src, key);
    *out = json_is_true(v);
    return KVZ_OK;
}

/* ---------- sections of config.json ---------- */

static int parse_arch(const json_t *root, const char *src, kvz_model_config *cfg, size_t *slot,
                      kvz_error *err)
{
    const json_t *archs = json_object_get(root, "architectures");
    const char *cls = json_string_value(json_array_get(archs, 0));
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (!cls && !mt)
        return kvz_fail(err, KVZ_EFORMAT, "%s: neither \"architectures\" nor \"model_type\" is given",
                        src);
    for (size_t i = 0; i < N_ARCHS; i++)
        if (cls ? !strcmp(cls, ARCHS[i].class_name) : !strcmp(mt, ARCHS[i].model_type)) {
            cfg->arch = ARCHS[i].arch;
            snprintf(cfg->architecture, sizeof cfg->architecture, "%s", ARCHS[i].class_name);
            *slot = i;
            return KVZ_OK;
        }
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "%s: architecture '%s' is not supported (supported: " SUPPORTED_LIST ")", src,
                    cls ? cls : mt);
}

static int parse_sizes(const json_t *root, const char *src, size_t slot, kvz_model_config *cfg,
                       kvz_error *err)
{
    int rc;
    if ((rc = cfg_size(root, "num_hidden_layers", 1, 0, &cfg->n_layers, src, err)) ||
        (rc = cfg_size(root, "hidden_size", 1, 0, &cfg->d_model, src, err)) ||
        (rc = cfg_size(root, "num_attention_heads", 1, 0, &cfg->n_heads, src, err)) ||
        (rc = cfg_size(root, "num_key_value_heads", 0, cfg->n_heads, &cfg->n_kv_heads, src, err)) ||
        (rc = cfg_size(root, "intermediate_size", 1, 0, &cfg->d_ff, src, err)) ||
        (rc = cfg_size(root, "vocab_size", 1, 0, &cfg->vocab_size, src, err)) ||
        (rc = cfg_size(root, "max_position_embeddings", 0, ARCHS[slot].default_max_pos,
                        &cfg->max_position_embeddings, src, err)) ||
        (rc = cfg_real(root, "rms_norm_eps", 1e-6, &cfg->rms_norm_eps, src, err)))
        return rc;
    const json_t *hd = json_object_get(root, "head_dim");
    cfg->head_dim_given = hd && !json_is_null(hd);
    if (cfg->head_dim_given)
        return cfg_size(root, "head_dim", 1, 0, &cfg->head_dim, src, err);
    if (cfg->arch == KVZ_ARCH_QWEN3) { /* Qwen3Config's default, not hidden/heads */
        cfg->head_dim = 128;
        cfg->head_dim_given = 1;
    } else {
        cfg->head_dim = cfg->n_heads ? cfg->d_model / cfg->n_heads : 0;
    }
    return KVZ_OK;
}

static int parse_llama3_scaling(const json_t *rs, const char *src, kvz_model_config *cfg,
                                kvz_error *err)
{
    static const char *const KEYS[] = {"factor", "low_freq_factor", "high_freq_factor",
                                       "original_max_position_embeddings"};
    for (size_t i = 0; i < 4; i++)
        if (!json_is_number(json_object_get(rs, KEYS[i])))
            return kvz_fail(err, KVZ_EFORMAT, "%s: llama3 rope scaling needs a number '%s'", src,
                            KEYS[i]);
    kvz_rope_scaling *s = &cfg->rope_scaling;
    s->type = KVZ_ROPE_SCALING_LLAMA3;
    s->factor = json_number_value(json_object_get(rs, "factor"));
    s->low_freq_factor = json_number_value(json_object_get(rs, "low_freq_factor"));
    s->high_freq_factor = json_number_value(json_object_get(rs, "high_freq_factor"));
    double orig = json_number_value(json_object_get(rs, "original_max_position_embeddings"));
    if (orig < 1 || orig >= 0x1p62) /* (size_t)orig is undefined beyond SIZE_MAX */
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: rope scaling original_max_position_embeddings must be a positive "
                        "size, got %g", src, orig);
    s->original_max_position_embeddings = (size_t)orig;
    return KVZ_OK;
}

/* rope_theta and rope scaling, transformers 4 ("rope_theta", "rope_scaling")
 * or 5 ("rope_parameters" holding both). */
static int parse_rope(const json_t *root, const char *src, kvz_model_config *cfg, kvz_error *err)
{
    const json_t *params = json_object_get(root, "rope_parameters");
    const json_t *scaling = json_object_get(root, "rope_scaling");
    if (params && !json_is_null(params) && !json_is_object(params))
        return kvz_fail(err, KVZ_EFORMAT, "%s: 'rope_parameters' must be an object", src);
    if (scaling && !json_is_null(scaling) && !json_is_object(scaling))
        return kvz_fail(err, KVZ_EFORMAT, "%s: 'rope_scaling' must be an object or null", src);
    double nested = 10000.0;
    int rc = cfg_real(params, "rope_theta", 10000.0, &nested, src, err);
    if (!rc)
        rc = cfg_real(root, "rope_theta", nested, &cfg->rope_theta, src, err);
    if (rc)
        return rc;
    const json_t *rs = json_is_object(scaling) ? scaling : params;
    if (!json_is_object(rs))
        return KVZ_OK;
    const json_t *type = json_object_get(rs, "rope_type");
    if (!type)
        type = json_object_get(rs, "type");
    const char *t = json_string_value(type);
    if (!t || !strcmp(t, "default"))
        return KVZ_OK;
    if (!strcmp(t, "llama3"))
        return parse_llama3_scaling(rs, src, cfg, err);
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "%s: rope scaling type '%s' is not supported (supported: llama3)", src, t);
}

static int parse_flags(const json_t *root, const char *src, kvz_model_config *cfg, kvz_error *err)
{
    int attn_bias = 0, use_sw = 0, rc;
    size_t sw = 0;
    if ((rc = cfg_flag(root, "tie_word_embeddings", 0, &cfg->tie_word_embeddings, src, err)) ||
        (rc = cfg_flag(root, "attention_bias", 0, &attn_bias, src, err)) ||
        (rc = cfg_flag(root, "mlp_bias", 0, &cfg->mlp_bias, src, err)) ||
        (rc = cfg_flag(root, "use_sliding_window", 0, &use_sw, src, err)) ||
        (rc = cfg_size(root, "max_window_layers", 0, 28, &cfg->max_window_layers, src, err)))
        return rc;
    const json_t *swv = json_object_get(root, "sliding_window");
    if ((rc = cfg_size(root, "sliding_window", 0, (swv ? 0 : 4096), &sw, src, err)))
        return rc;
    switch (cfg->arch) {
    case KVZ_ARCH_LLAMA:
        cfg->qkv_bias = cfg->o_bias = attn_bias;
        break;
    case KVZ_ARCH_QWEN3:
        cfg->qkv_bias = cfg->o_bias = attn_bias;
        cfg->qk_norm = 1;
        cfg->mlp_bias = 0;
        break;
    case KVZ_ARCH_QWEN2:
        cfg->qkv_bias = 1;
        cfg->o_bias = cfg->mlp_bias = 0;
        break;
    case KVZ_ARCH_MISTRAL:
        cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = 0;
        break;
    }
    if (cfg->arch == KVZ_ARCH_MISTRAL)
        cfg->sliding_window = sw;
    else if (cfg->arch != KVZ_ARCH_LLAMA && use_sw)
        cfg->sliding_window = sw;
    if (cfg->arch != KVZ_ARCH_QWEN2 && cfg->arch != KVZ_ARCH_QWEN3)
        cfg->max_window_layers = 0;
    return KVZ_OK;
}

static int parse_token_ids(const json_t *root, const char *src, kvz_model_config *cfg,
                           kvz_error *err)
{
    const json_t *bos = json_object_get(root, "bos_token_id");
    cfg->bos_token_id = json_is_integer(bos) ? (long)json_integer_value(bos) : -1;
    const json_t *eos = json_object_get(root, "eos_token_id");
    if (json_is_integer(eos)) {
        cfg->eos_token_ids[cfg->n_eos++] = (long)json_integer_value(eos);
        return KVZ_OK;
    }
    if (!json_is_array(eos))
        return KVZ_OK;
    for (size_t i = 0; i < json_array_size(eos) && cfg->n_eos < KVZ_MAX_EOS_IDS; i++) {
        const json_t *e = json_array_get(eos, i);
        if (!json_is_integer(e))
            return kvz_fail(err, KVZ_EFORMAT, "%s: 'eos_token_id' entries must be integers", src);
        cfg->eos_token_ids[cfg->n_eos++] = (long)json_integer_value(e);
    }
    return KVZ_OK;
}

static int parse_misc(const json_t *root, const char *src, kvz_model_config *cfg, kvz_error *err)
{
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (act && strcmp(act, "silu"))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: hidden_act '%s' is not supported (supported: silu)", src, act);
    const char *dt = json_string_value(json_object_get(root, "dtype"));
    if (!dt)
        dt = json_string_value(json_object_get(root, "torch_dtype"));
    snprintf(cfg->dtype, sizeof cfg->dtype, "%s", dt ? dt : "");
    return parse_token_ids(root, src, cfg, err);
}

int kvz_model_config_parse_json(const char *text, size_t len, const char *source,
                                kvz_model_config *cfg, kvz_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = -1;
    json_error_t jerr;
    /* a failed allocation inside jansson may also leave a mangled value
     * behind a successful load (kvz_json.h) */
    kvz_json_begin();
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (kvz_json_failed() || (!root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(root);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", source);
    }
    if (!root)
        return kvz_fail(err, KVZ_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", source,
                        jerr.text, jerr.line, jerr.column);
    int rc;
    size_t slot = 0;
    if (!json_is_object(root))
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: not a JSON object", source);
    else if (!(rc = parse_arch(root, source, cfg, &slot, err)) &&
             !(rc = parse_sizes(root, source, slot, cfg, err)) &&
             !(rc = parse_rope(root, source, cfg, err)) &&
             !(rc = parse_flags(root, source, cfg, err)))
        rc = parse_misc(root, source, cfg, err);
    json_decref(root);
    return rc ? rc : kvz_model_config_validate(cfg, source, err);
}

int kvz_model_config_load_json(const char *path, kvz_model_config *cfg, kvz_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = kvz_file_read_all(path, &text, &len, err);
    if (!rc)
        rc = kvz_model_config_parse_json(text, len, path, cfg, err);
    free(text);
    return rc;
}

/* ---------- validation ---------- */

static int check_positive(const kvz_model_config *c, const char *src, kvz_error *err)
{
    const struct {
        const char *what;
        size_t v;
    } sizes[] = {{"number of layers", c->n_layers},  {"hidden size", c->d_model},
                 {"attention heads", c->n_heads},    {"KV heads", c->n_kv_heads},
                 {"head dim", c->head_dim},          {"FFN size", c->d_ff},
                 {"vocab size", c->vocab_size},      {"context length", c->max_position_embeddings}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v == 0)
            return kvz_fail(err, KVZ_EFORMAT, "%s: %s must be positive", src, sizes[i].what);
    return KVZ_OK;
}

int kvz_model_config_validate(const kvz_model_config *c, const char *src, kvz_error *err)
{
    if (!c->head_dim_given && c->n_heads && c->d_model % c->n_heads)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: hidden size %zu is not a multiple of the %zu attention heads", src,
                        c->d_model, c->n_heads);
    int rc = check_positive(c, src, err);
    if (rc)
        return rc;
    if (c->n_heads % c->n_kv_heads)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: %zu attention heads are not a multiple of the %zu KV heads", src,
                        c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return kvz_fail(err, KVZ_EFORMAT, "%s: head dim %zu is odd (RoPE needs pairs)", src,
                        c->head_dim);
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
        return kvz_fail(err, KVZ_EFORMAT, "%s: rms_norm_eps and rope_theta must be positive", src);
    const kvz_rope_scaling *s = &c->rope_scaling;
    if (s->type == KVZ_ROPE_SCALING_LLAMA3 &&
        (!(s->factor > 0) || !(s->low_freq_factor > 0) || !(s->high_freq_factor > s->low_freq_factor)))
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0",
                        src);
    return KVZ_OK;
}

/* ---------- GGUF metadata ---------- */

/* <arch>.<key> as a size; absent and not required -> dflt. */
static int gguf_size(const kvz_gguf *g, const char *arch, const char *key, int required,
                     size_t dflt, size_t *out, kvz_error *err)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint64_t v = 0;
    int rc = kvz_gguf_get_u64(g, full, &v, err);
    if (rc == KVZ_ENOTFOUND && !required) {
        *out = dflt;
        return KVZ_OK;
    }
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing required metadata key '%s'",
                        kvz_gguf_path(g), full);
    *out = (size_t)v;
    return rc;
}

static int gguf_real(const kvz_gguf *g, const char *arch, const char *key, double dflt,
                     double *out, kvz_error *err)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = kvz_gguf_get_f64(g, full, out, err);
    if (rc == KVZ_ENOTFOUND) {
        *out = dflt;
        return KVZ_OK;
    }
    return rc;
}

static int gguf_arch(const kvz_gguf *g, kvz_model_config *cfg, kvz_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc = kvz_gguf_get_str(g, "general.architecture", &s, &len, err);
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_EFORMAT, "%s: missing metadata key 'general.architecture'",
                        kvz_gguf_path(g));
    if (rc)
        return rc;
    snprintf(cfg->architecture, sizeof cfg->architecture, "%.*s", (int)(len < 63 ? len : 63), s);
    static const kvz_arch GGUF_ARCHS[] = {KVZ_ARCH_LLAMA, KVZ_ARCH_QWEN2, KVZ_ARCH_QWEN3};
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(cfg->architecture, kvz_arch_name(GGUF_ARCHS[i]))) {
            cfg->arch = GGUF_ARCHS[i];
            return KVZ_OK;
        }
    return kvz_fail(err, KVZ_EUNSUPPORTED,
                    "%s: architecture '%s' is not supported (supported: llama, qwen2, qwen3)",
                    kvz_gguf_path(g), cfg->architecture);
}

static int gguf_sizes(const kvz_gguf *g, const char *a, kvz_model_config *cfg, kvz_error *err)
{
    int rc;
    size_t key_len = 0;
    if ((rc = gguf_size(g, a, "block_count", 1, 0, &cfg->n_layers, err)) ||
        (rc = gguf_size(g, a, "embedding_length", 1, 0, &cfg->d_model, err)) ||
        (rc = gguf_size(g, a, "feed_forward_length", 1, 0, &cfg->d_ff, err)) ||
        (rc = gguf_size(g, a, "attention.head_count", 1, 0, &cfg->n_heads, err)) ||
        (rc = gguf_size(g, a, "attention.head_count_kv", 0, cfg->n_heads, &cfg->n_kv_heads, err)) ||
        (rc = gguf_size(g, a, "attention.key_length", 0, 0, &key_len, err)) ||
        (rc = gguf_size(g, a, "context_length", 1, 0, &cfg->max_position_embeddings, err)) ||
        (rc = gguf_size(g, a, "attention.sliding_window", 0, 0, &cfg->sliding_window, err)) ||
        (rc = gguf_real(g, a, "attention.layer_norm_rms_epsilon", 1e-6, &cfg->rms_norm_eps, err)) ||
        (rc = gguf_real(g, a, "rope.freq_base", 10000.0, &cfg->rope_theta, err)))
        return rc;
    cfg->head_dim_given = key_len != 0;
    cfg->head_dim = key_len ? key_len : (cfg->n_heads ? cfg->d_model / cfg->n_heads : 0);
    return KVZ_OK;
}

/* Vocab: tokenizer.ggml.tokens count, else <arch>.vocab_size, else token_embd rows. */
static int gguf_vocab(const kvz_gguf *g, const char *a, kvz_model_config *cfg, kvz_error *err)
{
    size_t count = 0;
    int rc = kvz_gguf_get_array(g, "tokenizer.ggml.tokens", NULL, &count, err);
    if (rc != KVZ_ENOTFOUND) {
        cfg->vocab_size = count;
        return rc;
    }
    rc = gguf_size(g, a, "vocab_size", 0, 0, &cfg->vocab_size, err);
    const kvz_gguf_tensor_info *emb = kvz_gguf_find_tensor(g, "token_embd.weight");
    if (!rc && !cfg->vocab_size && emb && emb->n_dims == 2)
        cfg->vocab_size = (size_t)emb->ne[1];
    return rc;
}

/* llama.cpp writes rope.scaling.* for linear/yarn and a rope_freqs tensor for
 * llama3; none of these is supported from GGUF. */
static int gguf_rope_scaling(const kvz_gguf *g, const char *a, kvz_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    const char *s = NULL;
    size_t len = 0;
    int rc = kvz_gguf_get_str(g, key, &s, &len, err);
    if (rc == KVZ_OK && !(len == 4 && !memcmp(s, "none", 4)))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: rope scaling type '%.*s' is not supported for GGUF", kvz_gguf_path(g),
                        (int)len, s);
    if (rc != KVZ_OK && rc != KVZ_ENOTFOUND)
        return rc;
    if (kvz_gguf_find_tensor(g, "rope_freqs.weight"))
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: rope frequency factors (rope_freqs.weight, llama3 rope scaling) are not supported for GGUF; use the HF safetensors checkpoint",
                        kvz_gguf_path(g));
    return KVZ_OK;
}

static void gguf_flags(const kvz_gguf *g, kvz_model_config *cfg)
{
    cfg->tie_word_embeddings = kvz_gguf_find_tensor(g, "output.weight") == NULL;
    cfg->qkv_bias = cfg->arch == KVZ_ARCH_QWEN2 || kvz_gguf_find_tensor(g, "blk.0.attn_q.bias");
    cfg->o_bias = kvz_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    cfg->mlp_bias = kvz_gguf_find_tensor(g, "blk.0.ffn_up.bias") != NULL;
    cfg->qk_norm = cfg->arch == KVZ_ARCH_QWEN3;
    int64_t id = -1;
    cfg->bos_token_id = -1;
    if (kvz_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &id, NULL) == KVZ_OK)
        cfg->bos_token_id = (long)id;
    if (kvz_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &id, NULL) == KVZ_OK)
        cfg->eos_token_ids[cfg->n_eos++] = (long)id;
}

int kvz_model_config_from_gguf(const kvz_gguf *g, kvz_model_config *cfg, kvz_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = gguf_arch(g, cfg, err);
    const char *a = kvz_arch_name(cfg->arch);
    if (!rc && !(rc = gguf_sizes(g, a, cfg, err)) && !(rc = gguf_vocab(g, a, cfg, err)))
        rc = gguf_rope_scaling(g, a, err);
    if (rc)
        return rc;
    gguf_flags(g, cfg);
    return kvz_model_config_validate(cfg, kvz_gguf_path(g), err);
}

/* ---------- JSON summary ---------- */

static json_t *config_to_json_object(const kvz_model_config *c)
{
    json_t *eos = json_array();
    for (size_t i = 0; i < c->n_eos; i++)
        json_array_append_new(eos, json_integer(c->eos_token_ids[i]));
    json_t *rs = json_null();
    if (c->rope_scaling.type == KVZ_ROPE_SCALING_LLAMA3)
        rs = json_pack("{s:s, s:f, s:f, s:f, s:I}", "type", "llama3", "factor",
                       c->rope_scaling.factor, "low_freq_factor", c->rope_scaling.low_freq_factor,
                       "high_freq_factor", c->rope_scaling.high_freq_factor,
                       "original_max_position_embeddings",
                       (json_int_t)c->rope_scaling.original_max_position_embeddings);
    return json_pack(
        "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:b, s:b, s:b, s:b, "
        "s:b, s:I, s:s, s:I, s:o}",
        "architecture", kvz_arch_name(c->arch), "architecture_class", c->architecture, "layers",
        (json_int_t)c->n_layers, "hidden_size", (json_int_t)c->d_model, "heads",
        (json_int_t)c->n_heads, "kv_heads", (json_int_t)c->n_kv_heads, "head_dim",
        (json_int_t)c->head_dim, "ffn_size", (json_int_t)c->d_ff, "vocab_size",
        (json_int_t)c->vocab_size, "context_length", (json_int_t)c->max_position_embeddings,
        "rope_theta", c->rope_theta, "rms_norm_eps", c->rms_norm_eps, "rope_scaling", rs,
        "tie_word_embeddings", c->tie_word_embeddings, "qkv_bias", c->qkv_bias, "o_bias",
        c->o_bias, "mlp_bias", c->mlp_bias, "qk_norm", c->qk_norm, "sliding_window",
        (json_int_t)c->sliding_window, "dtype", c->dtype, "bos_token_id",
        (json_int_t)c->bos_token_id, "eos_token_ids", eos);
}

char *kvz_model_config_to_json(const kvz_model_config *c)
{
    json_t *j = config_to_json_object(c);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return text;
}
