/* test_forward_parity_safetensors: the default model (SmolLM2-135M-Instruct
 * GGUF, Q4_1) and a safetensors directory made from it without Python (a
 * config.json from the GGUF config + one fp32 model.safetensors holding
 * kvz_checkpoint_read_f32 of every tensor, written by a small writer here
 * into kvz_test_tmpdir(); ~540 MB of temporary disk) give the same logits on
 * one short prompt: ||delta||/||ref|| <= 1e-6 per position, same argmax. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "kvz_test.h"
#include "ops/ops.h"
#include "test_forward_parity_fixture.h"

#define TOL 1e-6

static json_t *config_json(const kvz_model_config *c)
{
    json_t *rope = json_pack("{s:f, s:s}", "rope_theta", c->rope_theta, "rope_type", "default");
    return json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b, s:o, s:I, s:I, s:s}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama",
                     "vocab_size", (json_int_t)c->vocab_size, "hidden_size", (json_int_t)c->d_model,
                     "intermediate_size", (json_int_t)c->d_ff, "num_hidden_layers", (json_int_t)c->n_layers,
                     "num_attention_heads", (json_int_t)c->n_heads,
                     "num_key_value_heads", (json_int_t)c->n_kv_heads, "head_dim", (json_int_t)c->head_dim,
                     "max_position_embeddings", (json_int_t)c->max_position_embeddings,
                     "rms_norm_eps", c->rms_norm_eps, "tie_word_embeddings", c->tie_word_embeddings,
                     "rope_parameters", rope, "bos_token_id", (json_int_t)c->bos_token_id,
                     "eos_token_id", (json_int_t)(c->n_eos ? c->eos_token_ids[0] : 2), "dtype", "float32");
}

/* The safetensors header: name -> {dtype F32, shape, data_offsets}. */
static json_t *safetensors_header(const kvz_checkpoint *ck)
{
    json_t *h = json_object();
    size_t off = 0;
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(ck); i++) {
        kvz_tensor_desc d;
        kvz_checkpoint_tensor_at(ck, i, &d);
        json_t *shape = json_array();
        for (uint32_t k = 0; k < d.n_dims; k++)
            json_array_append_new(shape, json_integer((json_int_t)d.shape[k]));
        size_t bytes = (size_t)d.numel * sizeof(float);
        json_object_set_new(h, d.name, json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape,
                                                 "data_offsets", (json_int_t)off, (json_int_t)(off + bytes)));
        off += bytes;
    }
    return h;
}

static int write_tensors(const kvz_checkpoint *ck, FILE *fp)
{
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(ck); i++) {
        kvz_tensor_desc d;
        kvz_error err = {0};
        kvz_checkpoint_tensor_at(ck, i, &d);
        float *buf = malloc((size_t)d.numel * sizeof *buf);
        int rc = buf ? kvz_checkpoint_read_f32(ck, d.name, buf, (size_t)d.numel, &err) : KVZ_ENOMEM;
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK && fwrite(buf, sizeof(float), (size_t)d.numel, fp) != (size_t)d.numel)
            rc = KVZ_EIO;
        free(buf);
        if (rc != KVZ_OK)
            return rc;
    }
    return KVZ_OK;
}

/* Writes dir/config.json and dir/model.safetensors (little-endian host assumed). */
static int dequantize_to_dir(const kvz_checkpoint *ck, const char *dir)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = config_json(kvz_checkpoint_config(ck));
    int rc = cfg && json_dump_file(cfg, path, JSON_INDENT(1)) == 0 ? KVZ_OK : KVZ_EIO;
    json_decref(cfg);
    KVZ_CHECK(rc == KVZ_OK, "cannot write %s", path);
    json_t *h = safetensors_header(ck);
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = rc == KVZ_OK && text ? fopen(path, "wb") : NULL;
    if (fp) {
        size_t len = strlen(text), padded = (len + 7) / 8 * 8;
        uint64_t n = padded;
        unsigned char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)(n >> (8 * i));
        fwrite(le, 1, 8, fp);
        fwrite(text, 1, len, fp);
        for (size_t i = len; i < padded; i++)
            fputc(' ', fp);
        rc = write_tensors(ck, fp);
        if (fclose(fp) != 0)
            rc = KVZ_EIO;
    } else {
        rc = KVZ_EIO;
    }
    free(text);
    KVZ_CHECK(rc == KVZ_OK, "cannot write %s", path);
    return rc;
}

static float *logits_all(const char *path, const int32_t *ids, size_t n, size_t *vocab)
{
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    kvz_forward *f = NULL;
    float *logits = NULL;
    kvz_forward_options opt = {.n_threads = 2, .max_tokens = 0, .attn_block = 0};
    int rc = kvz_checkpoint_open(path, &ck, &err);
    if (rc == KVZ_OK)
        rc = kvz_forward_create(ck, &opt, &f, &err);
    kvz_checkpoint_close(ck);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        *vocab = kvz_forward_config(f)->vocab_size;
        logits = malloc(n * *vocab * sizeof *logits);
        rc = kvz_forward_run(f, ids, n, NULL, NULL, KVZ_LOGITS_ALL, logits, &err);
        KVZ_CHECK_OK(rc, err);
    }
    kvz_forward_free(f);
    if (rc != KVZ_OK) {
        free(logits);
        return NULL;
    }
    return logits;
}

static void compare(const float *a, const float *b, size_t T, size_t V)
{
    double worst = 0.0;
    for (size_t t = 0; t < T; t++) {
        char what[96];
        snprintf(what, sizeof what, "GGUF vs dequantized safetensors logits at position %zu", t);
        fwd_check_rel(what, b + t * V, a + t * V, V, TOL, &worst);
        KVZ_CHECK(kvz_argmax(a + t * V, V) == kvz_argmax(b + t * V, V), "position %zu: argmax differs", t);
    }
    printf("GGUF vs safetensors: worst ||delta||/||ref|| over %zu positions: %.3g\n", T, worst);
}

int main(void)
{
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (!gguf || !*gguf)
        kvz_test_skip("KVZAP_DEFAULT_MODEL unset");
    fwd_fixture fx;
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", kvz_test_tmpdir());
    if (fwd_fixture_load("smollm2", &fx) == 0) {
        fwd_array ids = fwd_get(&fx, "prose", "ids");
        int rc = kvz_checkpoint_open(gguf, &ck, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK && ids.data && dequantize_to_dir(ck, dir) == KVZ_OK) {
            size_t V = 0, V2 = 0;
            float *a = logits_all(gguf, ids.data, ids.numel, &V);
            float *b = logits_all(dir, ids.data, ids.numel, &V2);
            if (a && b && V == V2)
                compare(a, b, ids.numel, V);
            free(a);
            free(b);
        }
        kvz_checkpoint_close(ck);
    }
    fwd_fixture_free(&fx);
    return kvz_test_done();
}
