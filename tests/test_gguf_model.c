/* test_gguf_model: the GGUF reader on the real default model
 * ($KVZAP_DEFAULT_MODEL, SmolLM2-135M-Instruct.Q4_1.gguf): header and llama
 * hyper-parameters, tensor count and per-type counts, tokenizer arrays, and
 * dequantized values of a few tensors (Q8_0, Q4_1, F32) against values
 * recorded from gguf-py in tests/fixtures/gguf/default_model.json (first and
 * last 16 values bit-exact; the float64 sum to 1e-9 relative, since only the
 * summation order differs from numpy's pairwise sum). Prints a summary.
 * Skips (77) when the model file is absent. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "model/dequant.h"
#include "model/gguf.h"

static void check_keys(kvz_gguf *g, json_t *keys)
{
    kvz_error err = {0};
    const char *s;
    size_t len;
    KVZ_CHECK_OK(kvz_gguf_get_str(g, "general.architecture", &s, &len, &err), err);
    KVZ_CHECK(len == 5 && !memcmp(s, "llama", 5), "architecture %.*s", (int)len, s);
    const char *key;
    json_t *v;
    json_object_foreach(keys, key, v) {
        if (!json_is_integer(v))
            continue;
        uint64_t got = 0;
        KVZ_CHECK_OK(kvz_gguf_get_u64(g, key, &got, &err), err);
        KVZ_CHECK(got == (uint64_t)json_integer_value(v), "%s = %" PRIu64, key, got);
    }
    uint64_t u;
    KVZ_CHECK(kvz_gguf_get_u64(g, "llama.block_count", &u, &err) == KVZ_OK && u == 30, "blocks");
    KVZ_CHECK(kvz_gguf_get_u64(g, "llama.embedding_length", &u, &err) == KVZ_OK && u == 576, "D");
    KVZ_CHECK(kvz_gguf_get_u64(g, "llama.attention.head_count", &u, &err) == KVZ_OK && u == 9,
              "heads");
    KVZ_CHECK(kvz_gguf_get_u64(g, "llama.attention.head_count_kv", &u, &err) == KVZ_OK && u == 3,
              "kv heads");
    double eps = 0;
    KVZ_CHECK_OK(kvz_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &eps, &err), err);
    KVZ_CHECK(eps > 0 && eps < 1e-3, "rms eps %g", eps);
}

static void check_vocab(kvz_gguf *g, size_t want)
{
    kvz_error err = {0};
    kvz_gguf_type et;
    size_t n = 0;
    KVZ_CHECK_OK(kvz_gguf_get_array(g, "tokenizer.ggml.tokens", &et, &n, &err), err);
    KVZ_CHECK(et == KVZ_GGUF_STRING && n == want, "tokens: %zu", n);
    const char *s;
    size_t len;
    KVZ_CHECK_OK(kvz_gguf_array_str(g, "tokenizer.ggml.tokens", 0, &s, &len, &err), err);
    KVZ_CHECK(len == 13 && !memcmp(s, "<|endoftext|>", 13), "token 0 %.*s", (int)len, s);
    KVZ_CHECK_OK(kvz_gguf_array_str(g, "tokenizer.ggml.tokens", n - 1, &s, &len, &err), err);
    int64_t tt;
    KVZ_CHECK_OK(kvz_gguf_array_i64(g, "tokenizer.ggml.token_type", n - 1, &tt, &err), err);
}

static void check_types(kvz_gguf *g, json_t *want, size_t n_tensors)
{
    size_t count[64] = {0};
    KVZ_CHECK(kvz_gguf_n_tensors(g) == n_tensors, "tensors %zu", kvz_gguf_n_tensors(g));
    for (size_t i = 0; i < kvz_gguf_n_tensors(g); i++) {
        uint32_t t = kvz_gguf_tensor(g, i)->type;
        count[t < 64 ? t : 63]++;
    }
    printf("%s: GGUF v%u, %zu keys, %zu tensors:", kvz_gguf_path(g), kvz_gguf_version(g),
           kvz_gguf_n_kv(g), kvz_gguf_n_tensors(g));
    for (uint32_t t = 0; t < 64; t++)
        if (count[t])
            printf(" %zu x %s", count[t], kvz_ggml_type_name(t));
    printf("\n");
    const char *name;
    json_t *v;
    size_t total = 0;
    json_object_foreach(want, name, v) {
        size_t got = 0;
        for (uint32_t t = 0; t < 64; t++)
            if (count[t] && !strcmp(kvz_ggml_type_name(t), name))
                got = count[t];
        KVZ_CHECK(got == (size_t)json_integer_value(v), "%zu %s tensors", got, name);
        total += got;
    }
    KVZ_CHECK(total == kvz_gguf_n_tensors(g), "types cover all tensors");
}

static int bits_equal(float got, const char *hex)
{
    uint32_t u;
    memcpy(&u, &got, 4);
    return u == (uint32_t)strtoul(hex, NULL, 16);
}

static void check_sample(kvz_gguf *g, const char *name, json_t *s)
{
    const kvz_gguf_tensor_info *t = kvz_gguf_find_tensor(g, name);
    KVZ_CHECK(t != NULL, "tensor %s", name);
    if (!t)
        return;
    json_t *ne = json_object_get(s, "ne");
    for (size_t d = 0; d < json_array_size(ne); d++)
        KVZ_CHECK(t->ne[d] == (uint64_t)json_integer_value(json_array_get(ne, d)), "%s ne", name);
    KVZ_CHECK(!strcmp(kvz_ggml_type_name(t->type), json_string_value(json_object_get(s, "type"))),
              "%s type", name);
    float *out = malloc(t->numel * sizeof *out);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_tensor_to_f32(g, t, out, &err), err);
    json_t *first = json_object_get(s, "first16"), *last = json_object_get(s, "last16");
    for (size_t i = 0; i < 16; i++) {
        KVZ_CHECK(bits_equal(out[i], json_string_value(json_array_get(first, i))),
                  "%s[%zu] = %.9g", name, i, out[i]);
        size_t j = (size_t)t->numel - 16 + i;
        KVZ_CHECK(bits_equal(out[j], json_string_value(json_array_get(last, i))),
                  "%s[%zu] = %.9g", name, j, out[j]);
    }
    double sum = 0, want = json_real_value(json_object_get(s, "sum"));
    for (size_t i = 0; i < t->numel; i++)
        sum += out[i];
    KVZ_CHECK(fabs(sum - want) <= 1e-9 * fabs(want) + 1e-9, "%s sum %.17g vs %.17g", name, sum,
              want);
    printf("  %-24s %-5s ne=[%" PRIu64 ", %" PRIu64 "] sum %.9g (ref %.9g)\n", name,
           kvz_ggml_type_name(t->type), t->ne[0], t->ne[1], sum, want);
    free(out);
}

int main(void)
{
    const char *path = getenv("KVZAP_DEFAULT_MODEL");
    FILE *fp = path ? fopen(path, "rb") : NULL;
    if (!fp)
        kvz_test_skip("default model not found ($KVZAP_DEFAULT_MODEL)");
    fclose(fp);
    json_error_t jerr;
    json_t *doc = json_load_file(kvz_test_fixture("gguf/default_model.json"), 0, &jerr);
    KVZ_CHECK(doc != NULL, "default_model.json: %s", jerr.text);
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_open(path, &g, &err), err);
    if (g && doc) {
        KVZ_CHECK(kvz_gguf_version(g) == 3, "version");
        KVZ_CHECK(kvz_gguf_alignment(g) == 32, "default alignment");
        KVZ_CHECK(kvz_gguf_data_offset(g) ==
                      (uint64_t)json_integer_value(json_object_get(doc, "data_offset")),
                  "data offset");
        KVZ_CHECK(kvz_gguf_n_kv(g) == (size_t)json_integer_value(json_object_get(doc, "n_kv")),
                  "n_kv %zu", kvz_gguf_n_kv(g));
        check_keys(g, json_object_get(doc, "metadata"));
        check_vocab(g, (size_t)json_integer_value(json_object_get(doc, "n_vocab_tokens")));
        check_types(g, json_object_get(doc, "tensor_types"),
                    (size_t)json_integer_value(json_object_get(doc, "n_tensors")));
        const char *name;
        json_t *s;
        json_object_foreach(json_object_get(doc, "samples"), name, s)
            check_sample(g, name, s);
    }
    kvz_gguf_close(g);
    json_decref(doc);
    return kvz_test_done();
}
