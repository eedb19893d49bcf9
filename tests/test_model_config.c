/* test_model_config: config.json parsing (transformers 4 and 5 layouts,
 * defaults transformers applies, unsupported architectures and rope types,
 * consistency errors), the tiny fixtures' configs against what transformers
 * held (tests/fixtures/tiny/reference.json), and GGUF metadata configs. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "model/model_config.h"

#define BASE "\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4," \
             "\"intermediate_size\":96,\"vocab_size\":512"

static int parse(const char *json, kvz_model_config *c, kvz_error *err)
{
    return kvz_model_config_parse_json(json, strlen(json), "config.json", c, err);
}

static void expect_error(const char *what, const char *json, int code, const char *needle)
{
    kvz_model_config c;
    kvz_error err = {0};
    int rc = parse(json, &c, &err);
    KVZ_CHECK(rc == code, "%s: status %d (want %d): %s", what, rc, code, err.msg);
    KVZ_CHECK(strstr(err.msg, needle) != NULL, "%s: '%s' mentions '%s'", what, err.msg, needle);
    KVZ_CHECK(strncmp(err.msg, "config.json:", 12) == 0, "%s: message names the file", what);
}

static void test_transformers4_llama(void)
{
    kvz_model_config c;
    kvz_error err = {0};
    int rc = parse("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\"," BASE
                   ",\"num_key_value_heads\":2,\"rope_theta\":500000.0,\"rms_norm_eps\":1e-5,"
                   "\"rope_scaling\":{\"type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1.0,"
                   "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
                   "\"max_position_embeddings\":131072,\"torch_dtype\":\"bfloat16\","
                   "\"tie_word_embeddings\":true,\"bos_token_id\":128000,"
                   "\"eos_token_id\":[128001,128008,128009]}",
                   &c, &err);
    KVZ_CHECK_OK(rc, err);
    KVZ_CHECK(c.arch == KVZ_ARCH_LLAMA && c.n_layers == 2 && c.d_model == 64 && c.n_heads == 4 &&
                  c.n_kv_heads == 2 && c.head_dim == 16 && c.d_ff == 96 && c.vocab_size == 512,
              "llama sizes");
    KVZ_CHECK(c.rope_theta == 500000.0 && c.rms_norm_eps == 1e-5, "rope theta / eps");
    KVZ_CHECK(c.rope_scaling.type == KVZ_ROPE_SCALING_LLAMA3 && c.rope_scaling.factor == 32.0 &&
                  c.rope_scaling.high_freq_factor == 4.0 &&
                  c.rope_scaling.original_max_position_embeddings == 8192,
              "llama3 rope scaling via 'type'");
    KVZ_CHECK(!strcmp(c.dtype, "bfloat16") && c.tie_word_embeddings && c.bos_token_id == 128000 &&
                  c.n_eos == 3 && c.eos_token_ids[2] == 128009,
              "dtype, tie, bos/eos");
    KVZ_CHECK(!c.qkv_bias && !c.o_bias && !c.qk_norm && c.sliding_window == 0, "llama flags");
}

static void test_defaults(void)
{
    kvz_model_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(parse("{\"model_type\":\"llama\"," BASE "}", &c, &err), err);
    KVZ_CHECK(c.n_kv_heads == 4 && c.rope_theta == 10000.0 && c.max_position_embeddings == 2048 &&
                  c.rms_norm_eps == 1e-6 && !c.tie_word_embeddings && c.bos_token_id == -1 &&
                  c.rope_scaling.type == KVZ_ROPE_SCALING_NONE,
              "llama defaults (kv heads = heads, theta 10000)");
    /* Qwen3Config's head_dim default is 128, not hidden/heads */
    KVZ_CHECK_OK(parse("{\"architectures\":[\"Qwen3ForCausalLM\"]," BASE "}", &c, &err), err);
    KVZ_CHECK(c.arch == KVZ_ARCH_QWEN3 && c.head_dim == 128 && c.qk_norm, "qwen3 default head_dim");
    KVZ_CHECK_OK(parse("{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE
                       ",\"attention_bias\":false,\"use_sliding_window\":false,\"sliding_window\":4096}",
                       &c, &err),
                 err);
    KVZ_CHECK(c.qkv_bias && !c.o_bias && c.sliding_window == 0, "qwen2: qkv biases, window off");
    KVZ_CHECK_OK(parse("{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE
                       ",\"use_sliding_window\":true,\"sliding_window\":1024,\"max_window_layers\":1}",
                       &c, &err),
                 err);
    KVZ_CHECK(c.sliding_window == 1024 && c.max_window_layers == 1, "qwen2 window on");
    KVZ_CHECK_OK(parse("{\"architectures\":[\"MistralForCausalLM\"]," BASE "}", &c, &err), err);
    KVZ_CHECK(c.arch == KVZ_ARCH_MISTRAL && c.sliding_window == 4096 && !c.qkv_bias,
              "mistral default window 4096");
    KVZ_CHECK_OK(parse("{\"architectures\":[\"MistralForCausalLM\"]," BASE ",\"sliding_window\":null}",
                       &c, &err),
                 err);
    KVZ_CHECK(c.sliding_window == 0, "mistral null window");
    KVZ_CHECK_OK(parse("{\"model_type\":\"llama\"," BASE ",\"attention_bias\":true,\"head_dim\":32}",
                       &c, &err),
                 err);
    KVZ_CHECK(c.qkv_bias && c.o_bias && c.head_dim == 32, "llama attention_bias, explicit head_dim");
    KVZ_CHECK_OK(parse("{\"model_type\":\"llama\"," BASE ",\"rope_parameters\":{\"rope_theta\":"
                       "1234.0,\"rope_type\":\"default\"}}",
                       &c, &err),
                 err);
    KVZ_CHECK(c.rope_theta == 1234.0 && c.rope_scaling.type == KVZ_ROPE_SCALING_NONE,
              "transformers 5 rope_parameters");
}

static void test_errors(void)
{
    expect_error("gpt2", "{\"architectures\":[\"GPT2LMHeadModel\"],\"model_type\":\"gpt2\"}",
                 KVZ_EUNSUPPORTED,
                 "architecture 'GPT2LMHeadModel' is not supported (supported: llama, mistral, qwen2, qwen3)");
    expect_error("model_type only", "{\"model_type\":\"phi3\"}", KVZ_EUNSUPPORTED, "'phi3'");
    expect_error("no arch", "{" BASE "}", KVZ_EFORMAT, "architectures");
    expect_error("malformed", "{\"model_type\": \"llama\",", KVZ_EFORMAT, "not valid JSON");
    expect_error("missing hidden", "{\"model_type\":\"llama\",\"num_hidden_layers\":2}", KVZ_EFORMAT,
                 "'hidden_size'");
    expect_error("string size", "{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":\"2\"}",
                 KVZ_EFORMAT, "num_key_value_heads");
    expect_error("yarn", "{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\","
                 "\"factor\":4.0}}", KVZ_EUNSUPPORTED, "'yarn'");
    expect_error("llama3 incomplete", "{\"model_type\":\"llama\"," BASE
                 ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":4.0}}", KVZ_EFORMAT,
                 "low_freq_factor");
    expect_error("heads vs kv", "{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":3}",
                 KVZ_EFORMAT, "not a multiple of the 3 KV heads");
    expect_error("hidden vs heads", "{\"model_type\":\"llama\",\"hidden_size\":66,\"num_hidden_layers\":2,"
                 "\"num_attention_heads\":4,\"intermediate_size\":96,\"vocab_size\":512}",
                 KVZ_EFORMAT, "not a multiple of the 4 attention heads");
    expect_error("zero layers", "{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":0,"
                 "\"num_attention_heads\":4,\"intermediate_size\":96,\"vocab_size\":512}",
                 KVZ_EFORMAT, "number of layers must be positive");
    expect_error("gelu", "{\"model_type\":\"llama\"," BASE ",\"hidden_act\":\"gelu\"}",
                 KVZ_EUNSUPPORTED, "hidden_act 'gelu'");
    expect_error("not object", "[1]", KVZ_EFORMAT, "not a JSON object");
}

/* The fixture configs parse to what transformers held in memory. */
static void test_fixture_configs(void)
{
    json_error_t jerr;
    json_t *ref = json_load_file(kvz_test_fixture("tiny/reference.json"), 0, &jerr);
    KVZ_CHECK(ref != NULL, "reference.json: %s", jerr.text);
    const char *name;
    json_t *ck;
    json_object_foreach(json_object_get(ref, "checkpoints"), name, ck) {
        const json_t *r = json_object_get(ck, "config");
        char path[600];
        snprintf(path, sizeof path, "%s/%s/config.json", kvz_test_fixture("tiny"), name);
        kvz_model_config c;
        kvz_error err = {0};
        int rc = kvz_model_config_load_json(path, &c, &err);
        KVZ_CHECK_OK(rc, err);
#define REF_INT(k) ((size_t)json_integer_value(json_object_get(r, k)))
        KVZ_CHECK(!strcmp(kvz_arch_name(c.arch), json_string_value(json_object_get(r, "model_type"))),
                  "%s arch", name);
        KVZ_CHECK(c.n_layers == REF_INT("n_layers") && c.d_model == REF_INT("d_model") &&
                      c.n_heads == REF_INT("n_heads") && c.n_kv_heads == REF_INT("n_kv_heads") &&
                      c.head_dim == REF_INT("head_dim") && c.d_ff == REF_INT("d_ff") &&
                      c.vocab_size == REF_INT("vocab_size") &&
                      c.max_position_embeddings == REF_INT("max_position_embeddings"),
                  "%s sizes", name);
        KVZ_CHECK(c.rope_theta == json_number_value(json_object_get(r, "rope_theta")) &&
                      c.rms_norm_eps == json_number_value(json_object_get(r, "rms_norm_eps")),
                  "%s theta/eps", name);
        KVZ_CHECK(c.tie_word_embeddings == json_is_true(json_object_get(r, "tie_word_embeddings")),
                  "%s tie", name);
        int llama3 = !strcmp(json_string_value(json_object_get(r, "rope_type")), "llama3");
        KVZ_CHECK((c.rope_scaling.type == KVZ_ROPE_SCALING_LLAMA3) == llama3, "%s rope type", name);
        const json_t *sw = json_object_get(r, "sliding_window");
        KVZ_CHECK(c.sliding_window == (json_is_integer(sw) ? (size_t)json_integer_value(sw) : 0),
                  "%s sliding window %zu", name, c.sliding_window);
    }
    json_decref(ref);
}

static void test_gguf_configs(void)
{
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    kvz_model_config c;
    int rc = kvz_gguf_open(kvz_test_fixture("tiny/qwen3_f16.gguf"), &g, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        KVZ_CHECK_OK(kvz_model_config_from_gguf(g, &c, &err), err);
        KVZ_CHECK(c.arch == KVZ_ARCH_QWEN3 && c.head_dim == 32 && c.n_heads == 4 &&
                      c.n_kv_heads == 2 && c.vocab_size == 512 && c.qk_norm &&
                      c.tie_word_embeddings && c.rope_theta == 1e6 && c.d_ff == 96,
                  "tiny qwen3 GGUF config");
        kvz_gguf_close(g);
    }
    const char *model = getenv("KVZAP_DEFAULT_MODEL");
    if (!model || kvz_gguf_open(model, &g, &err) != KVZ_OK) {
        KVZ_CHECK(0, "default model opens: %s", err.msg);
        return;
    }
    KVZ_CHECK_OK(kvz_model_config_from_gguf(g, &c, &err), err);
    KVZ_CHECK(c.arch == KVZ_ARCH_LLAMA && c.n_layers == 30 && c.d_model == 576 && c.n_heads == 9 &&
                  c.n_kv_heads == 3 && c.head_dim == 64 && c.vocab_size == 49152 &&
                  c.d_ff == 1536 && c.tie_word_embeddings && c.max_position_embeddings == 8192,
              "SmolLM2 GGUF config");
    kvz_gguf_close(g);
}

int main(void)
{
    test_transformers4_llama();
    test_defaults();
    test_errors();
    test_fixture_configs();
    test_gguf_configs();
    return kvz_test_done();
}
