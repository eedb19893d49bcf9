/* test_checkpoint: the checkpoint handle on the tiny fixtures. Every tensor
 * transformers held (tests/fixtures/tiny/reference.json) must read back
 * bit-exactly as fp32 through kvz_checkpoint_read_f32, from the HF
 * directories (f32, bf16, f16, sharded) AND from the GGUF copies (llama's
 * q/k rows permuted as llama.cpp does, so this checks the un-permutation).
 * Also: opening variants (file, dir, dir with one .gguf), required-tensor
 * errors (missing, wrong shape, unreadable dtype), describe counts. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "model/checkpoint.h"

static const char *tiny(const char *rel)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", kvz_test_fixture("tiny"), rel);
    return path;
}

static void check_tensor(const kvz_checkpoint *ck, const char *what, const char *tname,
                         const json_t *tr)
{
    kvz_tensor_desc d;
    kvz_error err = {0};
    int rc = kvz_checkpoint_find(ck, tname, &d, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    const json_t *shape = json_object_get(tr, "shape");
    int same = d.n_dims == json_array_size(shape);
    for (size_t k = 0; same && k < d.n_dims; k++)
        same = d.shape[k] == (uint64_t)json_integer_value(json_array_get(shape, k));
    KVZ_CHECK(same, "%s: %s shape", what, tname);
    float *buf = malloc(d.numel * sizeof *buf);
    rc = kvz_checkpoint_read_f32(ck, tname, buf, d.numel, &err);
    KVZ_CHECK_OK(rc, err);
    uint64_t want = strtoull(json_string_value(json_object_get(tr, "checksum")), NULL, 10);
    KVZ_CHECK(!rc && kvz_test_checksum_f32(buf, d.numel) == want, "%s: %s bit-exact (%s)", what, tname,
              d.type_name);
    const json_t *first = json_object_get(tr, "first_bits");
    for (size_t i = 0; !rc && i < json_array_size(first) && i < d.numel; i++) {
        uint32_t bits;
        memcpy(&bits, &buf[i], sizeof bits);
        KVZ_CHECK(bits == strtoul(json_string_value(json_array_get(first, i)), NULL, 16),
                  "%s: %s element %zu bits", what, tname, i);
    }
    free(buf);
}

static void check_checkpoint(const char *path, const json_t *rec, kvz_checkpoint_format fmt)
{
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    int rc = kvz_checkpoint_open(path, &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    KVZ_CHECK(kvz_checkpoint_format_of(ck) == fmt, "%s: format", path);
    const kvz_model_config *c = kvz_checkpoint_config(ck);
    const json_t *rc_cfg = json_object_get(rec, "config");
    KVZ_CHECK(c->n_layers == (size_t)json_integer_value(json_object_get(rc_cfg, "n_layers")) &&
                  c->head_dim == (size_t)json_integer_value(json_object_get(rc_cfg, "head_dim")),
              "%s: config", path);
    const json_t *tensors = json_object_get(rec, "tensors");
    const char *tname;
    json_t *tr;
    json_object_foreach((json_t *)tensors, tname, tr) check_tensor(ck, path, tname, tr);
    KVZ_CHECK(kvz_checkpoint_n_tensors(ck) == json_object_size(tensors),
              "%s: %zu tensors (reference %zu)", path, kvz_checkpoint_n_tensors(ck),
              json_object_size(tensors));
    KVZ_CHECK(kvz_checkpoint_has(ck, "lm_head.weight") == !c->tie_word_embeddings,
              "%s: lm_head present iff untied", path);
    kvz_checkpoint_close(ck);
}

static void test_reference_reads(void)
{
    json_error_t jerr;
    json_t *ref = json_load_file(tiny("reference.json"), 0, &jerr);
    KVZ_CHECK(ref != NULL, "reference.json: %s", jerr.text);
    const json_t *cks = json_object_get(ref, "checkpoints");
    const char *name;
    json_t *rec;
    json_object_foreach((json_t *)cks, name, rec) check_checkpoint(tiny(name), rec, KVZ_CKPT_SAFETENSORS);
    check_checkpoint(tiny("llama3_f32.gguf"), json_object_get(cks, "llama3_f32"), KVZ_CKPT_GGUF);
    check_checkpoint(tiny("qwen3_f16.gguf"), json_object_get(cks, "qwen3_f16"), KVZ_CKPT_GGUF);
    json_decref(ref);
}

/* ---------- opening variants and describe ---------- */

static void run(const char *cmd)
{
    KVZ_CHECK(system(cmd) == 0, "shell: %s", cmd);
}

static void test_open_variants(void)
{
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    char cmd[2048];
    const char *tmp = kvz_test_tmpdir();
    /* a directory holding exactly one .gguf */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/g && cp %s %s/g/", tmp, tiny("qwen3_f16.gguf"), tmp);
    run(cmd);
    snprintf(cmd, sizeof cmd, "%s/g", tmp);
    int rc = kvz_checkpoint_open(cmd, &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        KVZ_CHECK(kvz_checkpoint_gguf(ck) != NULL && !strcmp(kvz_checkpoint_dir(ck), cmd),
                  "gguf dir: handle and dir");
        kvz_checkpoint_summary s;
        kvz_checkpoint_describe(ck, &s);
        KVZ_CHECK(s.format == KVZ_CKPT_GGUF && s.n_files == 1 && s.n_tensors == 24 &&
                      s.n_params == 119232 && s.n_types == 2 && s.file_bytes > 0,
                  "describe gguf: %zu tensors %llu params %zu types", s.n_tensors,
                  (unsigned long long)s.n_params, s.n_types);
        kvz_checkpoint_close(ck);
    }
    /* two .gguf: ambiguous */
    snprintf(cmd, sizeof cmd, "cp %s %s/g/other.gguf", tiny("llama3_f32.gguf"), tmp);
    run(cmd);
    snprintf(cmd, sizeof cmd, "%s/g", tmp);
    rc = kvz_checkpoint_open(cmd, &ck, &err);
    KVZ_CHECK(rc != KVZ_OK && strstr(err.msg, "2 .gguf files"), "two ggufs: %s", err.msg);
    /* the safetensors file itself, and the sharded index file */
    rc = kvz_checkpoint_open(tiny("qwen2_bf16/model.safetensors"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        kvz_checkpoint_summary s;
        kvz_checkpoint_describe(ck, &s);
        KVZ_CHECK(s.n_types == 1 && !strcmp(s.types[0].type_name, "BF16") &&
                      s.types[0].n_tensors == 27,
                  "describe bf16");
        KVZ_CHECK(kvz_checkpoint_has(ck, "model.layers.1.self_attn.k_proj.bias"), "qwen2 bias");
        kvz_checkpoint_close(ck);
    }
    rc = kvz_checkpoint_open(tiny("mistral_sharded/model.safetensors.index.json"), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        KVZ_CHECK(kvz_checkpoint_n_files(ck) == 5, "sharded: 5 files");
        float x[4];
        rc = kvz_checkpoint_read_f32(ck, "model.norm.weight", x, 4, &err);
        KVZ_CHECK(rc == KVZ_EINVAL, "short destination refused");
        rc = kvz_checkpoint_read_f32(ck, "model.nope", x, 4, &err);
        KVZ_CHECK(rc == KVZ_ENOTFOUND && strstr(err.msg, "model.nope"), "absent: %s", err.msg);
        kvz_checkpoint_close(ck);
    }
    rc = kvz_checkpoint_open("/nonexistent/model", &ck, &err);
    KVZ_CHECK(rc == KVZ_EIO && ck == NULL, "missing path: %s", err.msg);
}

/* ---------- required-tensor errors on edited copies ---------- */

static void expect_open_error(const char *what, const char *setup, const char *needle)
{
    char cmd[4096], dir[512];
    snprintf(dir, sizeof dir, "%s/case", kvz_test_tmpdir());
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s && cd %s && %s", dir, tiny("llama3_f32"),
             dir, dir, setup);
    run(cmd);
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    int rc = kvz_checkpoint_open(dir, &ck, &err);
    KVZ_CHECK(rc != KVZ_OK && strstr(err.msg, needle), "%s: '%s' should mention '%s'", what,
              err.msg, needle);
    kvz_checkpoint_close(ck);
}

static void test_required(void)
{
    expect_open_error("k_proj rows", "sed -i 's/\"num_key_value_heads\": 2/\"num_key_value_heads\": 1/' config.json",
                      "tensor model.layers.0.self_attn.k_proj.weight has shape [32, 64] but config.json implies [16, 64]");
    expect_open_error("extra layer", "sed -i 's/\"num_hidden_layers\": 2/\"num_hidden_layers\": 3/' config.json",
                      "missing tensor 'model.layers.2.");
    expect_open_error("untied needs lm_head", "sed -i 's/\"tie_word_embeddings\": true/\"tie_word_embeddings\": false/' config.json",
                      "missing tensor 'lm_head.weight'");
    expect_open_error("no config", "rm config.json", "no config.json");
    expect_open_error("no weights", "rm model.safetensors", "no weights");
    expect_open_error("I32 weight",
                      "python3 -c \"import json,struct;d=open('model.safetensors','rb').read();n=struct.unpack('<Q',d[:8])[0];"
                      "h=json.loads(d[8:8+n]);h['model.norm.weight']['dtype']='I32';"
                      "b=json.dumps(h).encode();open('model.safetensors','wb').write(struct.pack('<Q',len(b))+b+d[8+n:])\"",
                      "tensor 'model.norm.weight' has dtype I32, which cannot be read as weights");
}

int main(void)
{
    test_reference_reads();
    test_open_variants();
    test_required();
    return kvz_test_done();
}
