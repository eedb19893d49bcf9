/* model_config: the architecture description of a decoder-only checkpoint
 * (kvz_model_config), read from an HF config.json or from GGUF metadata, with
 * the defaults transformers applies when a key is absent, and validated for
 * consistency. Supported: llama (incl. SmolLM2), mistral, qwen2, qwen3.
 * Notes on fields transformers derives:
 *  - head_dim: config "head_dim" when present; else Qwen3Config's default 128
 *    (as transformers does); else hidden_size / num_attention_heads.
 *  - rope_theta: top-level "rope_theta" (transformers 4) or
 *    "rope_parameters"."rope_theta" (transformers 5); default 10000.
 *  - biases: llama/qwen3 q,k,v,o follow "attention_bias"; qwen2 always has
 *    q,k,v biases and no o bias; mistral none. llama "mlp_bias" is recorded.
 *  - sliding_window: the window transformers would apply, 0 for none.
 *    Mistral: "sliding_window" (absent -> 4096, transformers' default; null ->
 *    none). Qwen2/Qwen3: only when "use_sliding_window" is true, and then only
 *    in layers >= max_window_layers. It only changes results for sequences
 *    longer than the window; users of the config must check that. */
#ifndef KVZ_MODEL_CONFIG_H
#define KVZ_MODEL_CONFIG_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "gguf.h"

typedef enum kvz_arch {
    KVZ_ARCH_LLAMA = 0,
    KVZ_ARCH_MISTRAL = 1,
    KVZ_ARCH_QWEN2 = 2,
    KVZ_ARCH_QWEN3 = 3
} kvz_arch;

typedef enum kvz_rope_scaling_type {
    KVZ_ROPE_SCALING_NONE = 0,
    KVZ_ROPE_SCALING_LLAMA3 = 1
} kvz_rope_scaling_type;

typedef struct kvz_rope_scaling {
    kvz_rope_scaling_type type;
    double factor, low_freq_factor, high_freq_factor;   /* llama3 */
    size_t original_max_position_embeddings;            /* llama3 */
} kvz_rope_scaling;

#define KVZ_MAX_EOS_IDS 8

typedef struct kvz_model_config {
    kvz_arch arch;
    char architecture[64]; /* "LlamaForCausalLM"; from GGUF the general.architecture */
    size_t n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab_size;
    size_t max_position_embeddings;
    int head_dim_given;    /* head_dim came from the config, not hidden/heads */
    double rms_norm_eps, rope_theta;
    kvz_rope_scaling rope_scaling;
    int tie_word_embeddings;
    int qkv_bias, o_bias, mlp_bias; /* which projections carry a bias */
    int qk_norm;                    /* Qwen3: RMSNorm on q and k per head */
    size_t sliding_window;          /* 0: full attention everywhere */
    size_t max_window_layers;       /* Qwen: window only in layers >= this */
    char dtype[16];                 /* "float32", "bfloat16", ...; "" unknown */
    long bos_token_id;              /* -1 when absent */
    size_t n_eos;
    long eos_token_ids[KVZ_MAX_EOS_IDS];
} kvz_model_config;

/* The config as one compact JSON object (architecture, layers, hidden_size,
 * heads, kv_heads, head_dim, ffn_size, vocab_size, context_length, rope and
 * norm parameters, biases, dtype, bos/eos ids); malloc'ed, NULL on OOM. */
char *kvz_model_config_to_json(const kvz_model_config *c);

/* "llama", "mistral", "qwen2", "qwen3". */
const char *kvz_arch_name(kvz_arch arch);

/* Reads and validates path (a config.json). */
int kvz_model_config_load_json(const char *path, kvz_model_config *cfg, kvz_error *err);
/* Parses config.json text; source names it in messages. */
int kvz_model_config_parse_json(const char *text, size_t len, const char *source,
                                kvz_model_config *cfg, kvz_error *err);
/* From GGUF metadata (general.architecture llama/qwen2/qwen3 and <arch>.*);
 * vocab from tokenizer.ggml.tokens or token_embd's shape. */
int kvz_model_config_from_gguf(const kvz_gguf *g, kvz_model_config *cfg, kvz_error *err);

/* Positive sizes, n_heads % n_kv_heads == 0, d_model % n_heads == 0 when
 * head_dim was not given, even head_dim, sane rope scaling. */
int kvz_model_config_validate(const kvz_model_config *cfg, const char *source, kvz_error *err);

#endif
