/* fuzz_gguf: model/gguf.h on arbitrary bytes (a .gguf file), walked the way
 * `kvzap gguf` dumps it: every metadata value through its typed getter
 * (arrays: the first elements and the last), the tensor table and lookups by
 * name, small tensors dequantized (all rows, then one row range). A file that
 * opens also goes through what `kvzap info` reads from a GGUF: the model
 * config, the checkpoint's tensor mapping, the tokenizer (then encoding and
 * decoding a fixed text) and the chat template (rendering a fixed
 * conversation). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/chat_template.h"
#include "model/checkpoint.h"
#include "model/dequant.h"
#include "model/gguf.h"
#include "model/model_config.h"
#include "model/tokenizer.h"

#define MAX_DEQUANT_NUMEL (1u << 18)
#define ARRAY_ELEMS 16

static void walk_value(const kvz_gguf *g, const char *key, kvz_gguf_type t, long i)
{
    kvz_error err = {0};
    size_t ix = i < 0 ? 0 : (size_t)i;
    const char *s;
    size_t len;
    int b;
    double d;
    uint64_t u;
    int64_t v;
    if (t == KVZ_GGUF_STRING) {
        if ((i < 0 ? kvz_gguf_get_str(g, key, &s, &len, &err)
                   : kvz_gguf_array_str(g, key, ix, &s, &len, &err)) == KVZ_OK &&
            len)
            (void)*(volatile const char *)&s[len - 1]; /* the string lies in the map */
    } else if (t == KVZ_GGUF_BOOL) {
        (void)(i < 0 ? kvz_gguf_get_bool(g, key, &b, &err) : kvz_gguf_array_bool(g, key, ix, &b, &err));
    } else if (t == KVZ_GGUF_FLOAT32 || t == KVZ_GGUF_FLOAT64) {
        (void)(i < 0 ? kvz_gguf_get_f64(g, key, &d, &err) : kvz_gguf_array_f64(g, key, ix, &d, &err));
    } else {
        (void)(i < 0 ? kvz_gguf_get_u64(g, key, &u, &err) : kvz_gguf_array_u64(g, key, ix, &u, &err));
        (void)(i < 0 ? kvz_gguf_get_i64(g, key, &v, &err) : kvz_gguf_array_i64(g, key, ix, &v, &err));
        (void)(i < 0 ? kvz_gguf_get_f64(g, key, &d, &err) : kvz_gguf_array_f64(g, key, ix, &d, &err));
    }
}

static void walk_metadata(const kvz_gguf *g)
{
    for (size_t i = 0; i < kvz_gguf_n_kv(g); i++) {
        const char *key = kvz_gguf_key_name(g, i);
        kvz_gguf_type t = kvz_gguf_kv_type(g, i);
        if (kvz_gguf_find_key(g, key) < 0)
            abort(); /* a listed key must be found */
        if (t != KVZ_GGUF_ARRAY) {
            walk_value(g, key, t, -1);
            continue;
        }
        kvz_gguf_type et;
        size_t n;
        kvz_error err = {0};
        if (kvz_gguf_get_array(g, key, &et, &n, &err) != KVZ_OK)
            continue;
        for (size_t k = 0; k < n && k < ARRAY_ELEMS; k++)
            walk_value(g, key, et, (long)k);
        if (n > ARRAY_ELEMS)
            walk_value(g, key, et, (long)(n - 1));
        walk_value(g, key, et, (long)n); /* one past the end: an error, not a read */
    }
}

static void walk_tensors(const kvz_gguf *g)
{
    for (size_t i = 0; i < kvz_gguf_n_tensors(g); i++) {
        const kvz_gguf_tensor_info *t = kvz_gguf_tensor(g, i);
        (void)kvz_ggml_type_name(t->type);
        (void)kvz_gguf_tensor_offset(g, t);
        (void)kvz_gguf_find_tensor(g, t->name);
        if (!kvz_ggml_type_supported(t->type) || t->numel == 0 || t->numel > MAX_DEQUANT_NUMEL)
            continue;
        float *out = malloc((size_t)t->numel * sizeof *out);
        if (!out)
            abort();
        kvz_error err = {0};
        kvz_gguf_tensor_to_f32(g, t, out, &err);
        size_t rows = t->ne[0] ? (size_t)(t->numel / t->ne[0]) : 0;
        if (rows > 1)
            kvz_gguf_tensor_rows_to_f32(g, t, rows / 2, rows - rows / 2, out, &err);
        kvz_gguf_tensor_rows_to_f32(g, t, rows, 1, out, &err); /* out of range */
        free(out);
    }
}

static void use_tokenizer(const kvz_gguf *g)
{
    static const char TEXT[] = "Hello world! 123 <|im_start|>user\n  caf\xc3\xa9 \xe4\xb8\xad";
    kvz_tokenizer *tok = NULL;
    kvz_error err = {0};
    if (kvz_tokenizer_from_gguf(g, &tok, &err) != KVZ_OK)
        return;
    (void)kvz_tokenizer_describe(tok);
    kvz_tokens toks;
    if (kvz_tokenize(tok, TEXT, sizeof TEXT - 1, 1, &toks, &err) == KVZ_OK) {
        char *text = NULL;
        size_t len = 0;
        if (kvz_detokenize_bytes(tok, toks.ids, toks.n, 0, &text, &len, &err) == KVZ_OK)
            free(text);
    }
    kvz_tokens_free(&toks);
    for (int32_t id = 0; id < 8 && (size_t)id < kvz_tokenizer_vocab_size(tok); id++)
        (void)kvz_tokenizer_token(tok, id);
    kvz_tokenizer_free(tok);
}

static void use_chat_template(const char *path)
{
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    if (kvz_chat_template_load(path, NULL, &t, &err) != KVZ_OK)
        return;
    kvz_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "Hello."}};
    char *out = NULL;
    if (kvz_chat_render(t, msgs, 2, NULL, &out, &err) == KVZ_OK)
        free(out);
    kvz_chat_template_free(t);
}

static void use_checkpoint(const char *path)
{
    kvz_checkpoint *ck = NULL;
    kvz_error err = {0};
    if (kvz_checkpoint_open(path, &ck, &err) != KVZ_OK)
        return;
    kvz_checkpoint_summary s;
    kvz_checkpoint_describe(ck, &s);
    char *json = kvz_model_config_to_json(kvz_checkpoint_config(ck));
    free(json);
    for (size_t i = 0; i < kvz_checkpoint_n_tensors(ck); i++) {
        kvz_tensor_desc d;
        if (kvz_checkpoint_tensor_at(ck, i, &d) != KVZ_OK || d.numel == 0 ||
            d.numel > MAX_DEQUANT_NUMEL)
            continue;
        float *out = malloc((size_t)d.numel * sizeof *out);
        if (!out)
            abort();
        kvz_checkpoint_read_f32(ck, d.name, out, (size_t)d.numel, &err);
        free(out);
    }
    kvz_checkpoint_close(ck);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("model.gguf", path, sizeof path), data, size);
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    if (kvz_gguf_open(path, &g, &err) != KVZ_OK) {
        kvz_gguf_close(g);
        return 0;
    }
    (void)kvz_gguf_version(g);
    (void)kvz_gguf_alignment(g);
    (void)kvz_gguf_data_offset(g);
    walk_metadata(g);
    walk_tensors(g);
    kvz_model_config cfg;
    if (kvz_model_config_from_gguf(g, &cfg, &err) == KVZ_OK)
        free(kvz_model_config_to_json(&cfg));
    use_tokenizer(g);
    kvz_gguf_close(g);
    use_chat_template(path);
    use_checkpoint(path);
    return 0;
}
