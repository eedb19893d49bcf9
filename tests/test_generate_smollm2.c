/* test_generate_smollm2: greedy decoding through model/forward.c's KV cache
 * on the default model (SmolLM2-135M-Instruct GGUF) reproduces transformers'
 * model.generate(do_sample=False, max_new_tokens=40) token for token on the
 * chat prompts of tests/fixtures/forward/smollm2.json (made by
 * tests/reference/make_forward_fixtures.py). The rendered chat prompt and its
 * tokenization are checked against the fixture too (chat_template + tokenizer).
 * Pass: at least 32 identical tokens per prompt (all 40 expected; the count is
 * printed). The prompt is prefilled in one call, then one token per call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/chat_template.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"
#include "kvz_test.h"
#include "ops/ops.h"
#include "test_forward_parity_fixture.h"

#define MIN_MATCH 32

/* Greedy: prefill prompt, then feed each chosen token; fills got[n_new]. */
static int greedy(kvz_forward *f, const int32_t *prompt, size_t n_prompt, int32_t *got, size_t n_new)
{
    size_t V = kvz_forward_config(f)->vocab_size;
    float *logits = malloc(V * sizeof *logits);
    kvz_error err = {0};
    kvz_forward_reset(f);
    int rc = kvz_forward_run(f, prompt, n_prompt, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
    KVZ_CHECK_OK(rc, err);
    for (size_t i = 0; i < n_new && rc == KVZ_OK; i++) {
        got[i] = (int32_t)kvz_argmax(logits, V);
        if (i + 1 < n_new) {
            rc = kvz_forward_run(f, &got[i], 1, NULL, NULL, KVZ_LOGITS_LAST, logits, &err);
            KVZ_CHECK_OK(rc, err);
        }
    }
    free(logits);
    return rc;
}

/* The template renders the user message exactly as the fixture's text, and
 * the tokenizer gives the stored prompt ids. */
static void check_prompt(const kvz_chat_template *tpl, const kvz_tokenizer *tok, json_t *gen,
                         fwd_array prompt_ids)
{
    const char *name = json_string_value(json_object_get(gen, "name"));
    const char *text = json_string_value(json_object_get(gen, "text"));
    json_t *m0 = json_array_get(json_object_get(gen, "messages"), 0);
    kvz_chat_message msg = {json_string_value(json_object_get(m0, "role")),
                            json_string_value(json_object_get(m0, "content"))};
    kvz_chat_options opt = {0};
    opt.add_generation_prompt = 1;
    char *rendered = NULL;
    kvz_error err = {0};
    int rc = kvz_chat_render(tpl, &msg, 1, &opt, &rendered, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        KVZ_CHECK(strcmp(rendered, text) == 0, "%s: rendered chat prompt differs:\n%s\nvs\n%s", name,
                  rendered, text);
    free(rendered);
    kvz_tokens toks = {0};
    rc = kvz_tokenize(tok, text, strlen(text), 1, &toks, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        kvz_test_equal_i32(name, toks.ids, toks.n, prompt_ids.data, prompt_ids.numel);
    kvz_tokens_free(&toks);
}

static size_t n_matching(const int32_t *got, const int32_t *ref, size_t n)
{
    size_t i = 0;
    while (i < n && got[i] == ref[i])
        i++;
    return i;
}

static void check_generation(kvz_forward *f, const kvz_tokenizer *tok, const fwd_fixture *fx, json_t *gen,
                             const kvz_chat_template *tpl)
{
    const char *name = json_string_value(json_object_get(gen, "name"));
    fwd_array prompt = fwd_get(fx, name, "prompt_ids"), ref = fwd_get(fx, name, "generated");
    KVZ_CHECK(prompt.data && ref.data, "%s: fixture arrays missing", name);
    if (!prompt.data || !ref.data)
        return;
    check_prompt(tpl, tok, gen, prompt);
    int32_t *got = calloc(ref.numel, sizeof *got);
    if (greedy(f, prompt.data, prompt.numel, got, ref.numel) == KVZ_OK) {
        size_t same = n_matching(got, ref.data, ref.numel);
        char *text = NULL;
        kvz_error err = {0};
        if (kvz_detokenize(tok, got, ref.numel, 0, &text, &err) == KVZ_OK)
            printf("%s: %zu/%zu tokens identical to transformers: %s\n", name, same, ref.numel, text);
        free(text);
        KVZ_CHECK(same >= MIN_MATCH, "%s: only %zu identical greedy tokens (need %d)", name, same, MIN_MATCH);
        if (same < ref.numel)
            kvz_test_equal_i32(name, got, ref.numel, ref.data, ref.numel); /* prints where */
    }
    free(got);
}

int main(void)
{
    const char *gguf = getenv("KVZAP_DEFAULT_MODEL");
    if (!gguf || !*gguf)
        kvz_test_skip("KVZAP_DEFAULT_MODEL unset");
    fwd_fixture fx;
    kvz_error err = {0};
    kvz_checkpoint *ck = NULL;
    kvz_forward *f = NULL;
    kvz_tokenizer *tok = NULL;
    kvz_chat_template *tpl = NULL;
    int ok = fwd_fixture_load("smollm2", &fx) == 0;
    ok = ok && kvz_checkpoint_open(gguf, &ck, &err) == KVZ_OK;
    kvz_forward_options opt = {.n_threads = 2, .max_tokens = 0, .attn_block = 0};
    ok = ok && kvz_forward_create(ck, &opt, &f, &err) == KVZ_OK;
    ok = ok && kvz_tokenizer_load(gguf, &tok, &err) == KVZ_OK;
    ok = ok && kvz_chat_template_load(gguf, NULL, &tpl, &err) == KVZ_OK;
    KVZ_CHECK(ok, "setup: %s", err.msg);
    kvz_checkpoint_close(ck);
    json_t *gens = json_object_get(fx.index, "generations");
    KVZ_CHECK(!ok || json_array_size(gens) >= 2, "smollm2.json: fewer than 2 generations");
    for (size_t i = 0; ok && i < json_array_size(gens); i++)
        check_generation(f, tok, &fx, json_array_get(gens, i), tpl);
    kvz_chat_template_free(tpl);
    kvz_tokenizer_free(tok);
    kvz_forward_free(f);
    fwd_fixture_free(&fx);
    return kvz_test_done();
}
