/* test_checkpoint_default: the real default model ($KVZAP_DEFAULT_MODEL,
 * SmolLM2-135M-Instruct Q4_1 GGUF) through the C API and `kvzap info`.
 *  - config: llama, 30 layers, hidden 576, 9 heads, 3 KV heads, head dim 64,
 *    vocab 49152; every required tensor present.
 *  - q_proj/k_proj of layers 0 and 29 read through kvz_checkpoint_read_f32
 *    (dequantized, llama.cpp's q/k permutation undone) match what
 *    transformers' GGUF loader holds (tests/fixtures/tiny/smollm2_qk.json,
 *    written by tests/reference/make_tiny_checkpoints.py): first rows and
 *    per-row sums within 1e-6 relative.
 *  - `kvzap info` text and --json report the same facts.
 *  - if ~/.cache/kvzap/smollm2-safetensors exists (the reference script's
 *    optional dequantized copy), every tensor matches it. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "common/kvz_file.h"
#include "model/checkpoint.h"

static const char *model_path(void)
{
    const char *m = getenv("KVZAP_DEFAULT_MODEL");
    if (!m || !*m)
        kvz_test_skip("KVZAP_DEFAULT_MODEL is not set");
    return m;
}

static void test_config(const kvz_checkpoint *ck)
{
    const kvz_model_config *c = kvz_checkpoint_config(ck);
    KVZ_CHECK(c->arch == KVZ_ARCH_LLAMA, "llama");
    KVZ_CHECK(c->n_layers == 30 && c->d_model == 576 && c->n_heads == 9 && c->n_kv_heads == 3 &&
                  c->head_dim == 64 && c->vocab_size == 49152,
              "SmolLM2 shape: %zu layers %zu hidden %zu/%zu heads %zu head dim %zu vocab",
              c->n_layers, c->d_model, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size);
    KVZ_CHECK(c->tie_word_embeddings && !kvz_checkpoint_has(ck, "lm_head.weight"), "tied");
    kvz_tensor_desc d;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_checkpoint_find(ck, "model.layers.29.mlp.down_proj.weight", &d, &err), err);
    KVZ_CHECK(d.shape[0] == 576 && d.shape[1] == 1536 && !strcmp(d.stored_name, "blk.29.ffn_down.weight"),
              "down_proj [576, 1536] from blk.29.ffn_down");
}

static void compare_qk(const kvz_checkpoint *ck, const char *name, const json_t *ref)
{
    kvz_tensor_desc d;
    kvz_error err = {0};
    int rc = kvz_checkpoint_find(ck, name, &d, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    size_t rows = (size_t)d.shape[0], cols = (size_t)d.shape[1];
    const json_t *sums = json_object_get(ref, "row_sums"), *abs_sums = json_object_get(ref, "row_abs_sums");
    KVZ_CHECK(json_array_size(sums) == rows, "%s: %zu rows", name, rows);
    float *w = malloc(d.numel * sizeof *w);
    rc = kvz_checkpoint_read_f32(ck, name, w, d.numel, &err);
    KVZ_CHECK_OK(rc, err);
    size_t bad = 0;
    for (size_t r = 0; !rc && r < rows && r < json_array_size(sums); r++) {
        double s = 0;
        for (size_t k = 0; k < cols; k++)
            s += w[r * cols + k];
        double want = json_real_value(json_array_get(sums, r));
        double scale = json_real_value(json_array_get(abs_sums, r));
        if (fabs(s - want) > 1e-6 * scale + 1e-12)
            bad++;
    }
    KVZ_CHECK(bad == 0, "%s: %zu of %zu row sums differ from transformers", name, bad, rows);
    const json_t *first = json_object_get(ref, "first_rows");
    for (size_t r = 0; !rc && r < json_array_size(first); r++) {
        const json_t *row = json_array_get(first, r);
        float want[16];
        for (size_t k = 0; k < 16; k++)
            want[k] = (float)json_real_value(json_array_get(row, k));
        char what[160];
        snprintf(what, sizeof what, "%s row %zu", name, r);
        kvz_test_allclose(what, w + r * cols, want, 16, 1e-7, 1e-6);
    }
    free(w);
}

static void test_qk_against_transformers(const kvz_checkpoint *ck)
{
    json_error_t jerr;
    json_t *ref = json_load_file(kvz_test_fixture("tiny/smollm2_qk.json"), 0, &jerr);
    KVZ_CHECK(ref != NULL, "smollm2_qk.json: %s", jerr.text);
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(ref, "tensors"), name, v) compare_qk(ck, name, v);
    json_decref(ref);
}

/* ---------- the CLI ---------- */

static char *run_capture(const char *args)
{
    const char *kvzap = getenv("KVZAP");
    if (!kvzap)
        return NULL;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' info '%s' %s", kvzap, model_path(), args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    n = fread(buf, 1, cap - 1, p);
    buf[n] = '\0';
    int status = pclose(p);
    KVZ_CHECK(status == 0, "kvzap info %s exits 0", args);
    return buf;
}

static int has_line(const char *text, const char *key, const char *value)
{
    char want[256];
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        snprintf(want, sizeof want, "%s:", key);
        if (strncmp(line, want, strlen(want)))
            continue;
        const char *v = line + strlen(want);
        while (*v == ' ')
            v++;
        if (!strncmp(v, value, strlen(value)))
            return 1;
    }
    return 0;
}

static void test_cli(void)
{
    char *out = run_capture("");
    KVZ_CHECK(out != NULL, "kvzap info ran");
    if (out) {
        static const char *const LINES[][2] = {
            {"architecture", "llama"}, {"layers", "30"},    {"hidden size", "576"},
            {"heads", "9"},            {"KV heads", "3"},   {"head dim", "64"},
            {"vocab", "49152"},        {"tied embeddings", "yes"}, {"tokenizer", ""},
            {"chat template", ""}};
        for (size_t i = 0; i < sizeof LINES / sizeof LINES[0]; i++)
            KVZ_CHECK(has_line(out, LINES[i][0], LINES[i][1]), "info line '%s: %s'", LINES[i][0],
                      LINES[i][1]);
        KVZ_CHECK(strstr(out, "Q4_1 x ") != NULL, "tensor types list Q4_1");
    }
    free(out);
    out = run_capture("--json --tensors");
    json_error_t jerr;
    json_t *j = out ? json_loads(out, 0, &jerr) : NULL;
    KVZ_CHECK(j != NULL, "--json parses");
    const json_t *c = json_object_get(j, "config");
    KVZ_CHECK(json_integer_value(json_object_get(c, "layers")) == 30 &&
                  json_integer_value(json_object_get(c, "kv_heads")) == 3 &&
                  json_integer_value(json_object_get(c, "vocab_size")) == 49152 &&
                  !strcmp(json_string_value(json_object_get(c, "architecture")), "llama"),
              "--json config");
    KVZ_CHECK(json_array_size(json_object_get(j, "tensor_list")) == 272, "--tensors lists 272");
    json_decref(j);
    free(out);
}

/* ---------- optional: the dequantized safetensors copy ---------- */

static void test_safetensors_copy(const kvz_checkpoint *gg)
{
    char dir[512];
    const char *assets = getenv("KVZ_ASSETS");
    snprintf(dir, sizeof dir, "%s/smollm2-safetensors", assets ? assets : "");
    if (!assets || !kvz_path_is_dir(dir))
        return;
    kvz_checkpoint *st = NULL;
    kvz_error err = {0};
    int rc = kvz_checkpoint_open(dir, &st, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    size_t bad = 0;
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(gg); i++) {
        kvz_tensor_desc d;
        kvz_checkpoint_tensor_at(gg, i, &d);
        float *a = malloc(d.numel * sizeof *a), *b = malloc(d.numel * sizeof *b);
        if (kvz_checkpoint_read_f32(gg, d.name, a, d.numel, &err) ||
            kvz_checkpoint_read_f32(st, d.name, b, d.numel, &err) ||
            !kvz_test_allclose(d.name, a, b, d.numel, 1e-7, 1e-6))
            bad++;
        free(a);
        free(b);
    }
    KVZ_CHECK(bad == 0, "GGUF vs transformers' dequantized safetensors: %zu tensors differ (%s)",
              bad, err.msg);
    kvz_checkpoint_close(st);
}

int main(void)
{
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    int rc = kvz_checkpoint_open(model_path(), &ck, &err);
    KVZ_CHECK_OK(rc, err);
    if (!rc) {
        test_config(ck);
        test_qk_against_transformers(ck);
        test_safetensors_copy(ck);
        kvz_checkpoint_close(ck);
    }
    test_cli();
    return kvz_test_done();
}
