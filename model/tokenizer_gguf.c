/* tokenizer_gguf: loading a tokenizer from GGUF metadata (llama.cpp keys):
 * tokenizer.ggml.model must be "gpt2" (byte-level BPE); tokens, merges
 * ("a b"), token_type (3 CONTROL -> special added token, 4 USER_DEFINED ->
 * non-special added token), bos/eos ids and add_bos_token/add_eos_token.
 * A GGUF carries no pre-tokenizer description, only tokenizer.ggml.pre; we
 * map it to the pipeline of the REAL HF tokenizer of that family:
 *   smollm                 Digits(individual) + ByteLevel(GPT-2 regex)
 *   gpt2 / default         ByteLevel(GPT-2 regex)
 *   llama-bpe, llama3, ... Split(Llama-3 regex) + ByteLevel
 *   qwen2, ...             NFC + Split(Qwen2 regex) + ByteLevel
 * (transformers' own GGUF conversion drops SmolLM2's Digits step and Qwen2's
 * NFC; see tests/reference/make_tokenizer_fixtures.py.) */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef struct gguf_family {
    const char *pre;     /* tokenizer.ggml.pre value */
    const char *name;    /* our pipeline name */
    const char *regex;   /* Split regex or NULL */
    int digits, nfc, default_bos;
} gguf_family;

static const gguf_family FAMILIES[] = {
    {"smollm", "smollm", NULL, 1, 0, 0},
    {"gpt2", "gpt2", NULL, 0, 0, 0},
    {"default", "gpt2", NULL, 0, 0, 0},
    {"llama-bpe", "llama3", TOK_LLAMA3_REGEX, 0, 0, 1},
    {"llama3", "llama3", TOK_LLAMA3_REGEX, 0, 0, 1},
    {"llama-v3", "llama3", TOK_LLAMA3_REGEX, 0, 0, 1},
    {"smaug-bpe", "llama3", TOK_LLAMA3_REGEX, 0, 0, 1},
    {"qwen2", "qwen2", TOK_QWEN2_REGEX, 0, 1, 0},
    {"deepseek-r1-qwen", "qwen2", TOK_QWEN2_REGEX, 0, 1, 0},
};

static const gguf_family *find_family(const char *pre, size_t len)
{
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
        if (strlen(FAMILIES[i].pre) == len && !memcmp(FAMILIES[i].pre, pre, len))
            return &FAMILIES[i];
    return NULL;
}

static int check_model(const kvz_gguf *g, const char *path, kvz_error *err)
{
    const char *s;
    size_t len;
    kvz_error sub;
    int rc = kvz_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, &sub);
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no tokenizer metadata (tokenizer.ggml.model is missing)", path);
    if (rc)
        return kvz_fail(err, rc, "%s", sub.msg);
    if (len != 4 || memcmp(s, "gpt2", 4) != 0)
        return kvz_fail(err, KVZ_EUNSUPPORTED,
                        "%s: tokenizer.ggml.model '%.*s' is not supported (only byte-level BPE, 'gpt2')", path,
                        (int)(len > 64 ? 64 : len), s);
    return KVZ_OK;
}

static int load_tokens(kvz_tokenizer *t, const kvz_gguf *g, const char *path, size_t *count, kvz_error *err)
{
    kvz_gguf_type type;
    int rc = kvz_gguf_get_array(g, "tokenizer.ggml.tokens", &type, count, err);
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no tokenizer.ggml.tokens", path);
    if (rc)
        return rc;
    if (type != KVZ_GGUF_STRING)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.ggml.tokens is not a string array", path);
    for (size_t i = 0; i < *count && rc == KVZ_OK; i++) {
        const char *s;
        size_t len;
        rc = kvz_gguf_array_str(g, "tokenizer.ggml.tokens", i, &s, &len, err);
        if (rc == KVZ_OK)
            rc = tok_set_token(t, (int32_t)i, s, len, err);
    }
    return rc == KVZ_OK ? tok_vocab_build(t, err) : rc;
}

static int merge_ids(kvz_tokenizer *t, const char *path, size_t i, const char *s, size_t len, int32_t ids[3],
                     kvz_error *err)
{
    const char *sp = memchr(s, ' ', len);
    if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s)))
        return kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.ggml.merges[%zu] ('%.*s') is not two tokens separated "
                        "by one space", path, i, (int)(len > 100 ? 100 : len), s);
    size_t na = (size_t)(sp - s);
    ids[0] = tok_vocab_find(t, s, na);
    ids[1] = tok_vocab_find(t, sp + 1, len - na - 1);
    char *joined = malloc(len);
    if (!joined)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    memcpy(joined, s, na);
    memcpy(joined + na, sp + 1, len - na - 1);
    ids[2] = tok_vocab_find(t, joined, len - 1);
    free(joined);
    const char *part = ids[0] < 0 ? s : sp + 1;
    size_t plen = ids[0] < 0 ? na : len - na - 1;
    if (ids[0] < 0 || ids[1] < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.ggml.merges[%zu] ('%.*s') uses token '%.*s', which is "
                        "not in the vocabulary", path, i, (int)(len > 100 ? 100 : len), s,
                        (int)(plen > 100 ? 100 : plen), part);
    if (ids[2] < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.ggml.merges[%zu] ('%.*s') makes a token that is not in "
                        "the vocabulary", path, i, (int)(len > 100 ? 100 : len), s);
    return KVZ_OK;
}

static int load_merges(kvz_tokenizer *t, const kvz_gguf *g, const char *path, kvz_error *err)
{
    kvz_gguf_type type;
    size_t count;
    int rc = kvz_gguf_get_array(g, "tokenizer.ggml.merges", &type, &count, err);
    if (rc == KVZ_ENOTFOUND)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: no tokenizer.ggml.merges (a BPE vocabulary without merges "
                        "is not supported)", path);
    if (rc)
        return rc;
    if (type != KVZ_GGUF_STRING)
        return kvz_fail(err, KVZ_EFORMAT, "%s: tokenizer.ggml.merges is not a string array", path);
    if (tok_merges_init(&t->merges, count))
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < count && rc == KVZ_OK; i++) {
        const char *s;
        size_t len;
        int32_t ids[3] = {-1, -1, -1};
        rc = kvz_gguf_array_str(g, "tokenizer.ggml.merges", i, &s, &len, err);
        if (rc == KVZ_OK)
            rc = merge_ids(t, path, i, s, len, ids, err);
        if (rc == KVZ_OK && tok_merges_put(&t->merges, ids[0], ids[1], (int32_t)i, ids[2]))
            rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return rc;
}

/* CONTROL (3) tokens become special added tokens, USER_DEFINED (4) plain ones. */
static int load_added(kvz_tokenizer *t, const kvz_gguf *g, size_t count, kvz_error *err)
{
    kvz_gguf_type type;
    size_t n;
    if (kvz_gguf_get_array(g, "tokenizer.ggml.token_type", &type, &n, NULL) != KVZ_OK)
        return KVZ_OK;
    for (size_t i = 0; i < n && i < count; i++) {
        int64_t kind;
        int rc = kvz_gguf_array_i64(g, "tokenizer.ggml.token_type", i, &kind, err);
        if (rc)
            return rc;
        if ((kind != 3 && kind != 4) || !t->token[i] || t->token_len[i] == 0)
            continue;
        tok_added a = {.content = t->token[i], .len = t->token_len[i], .id = (int32_t)i, .special = kind == 3};
        rc = tok_add_added(t, &a, err);
        if (rc)
            return rc;
    }
    return KVZ_OK;
}

static int load_pipeline(kvz_tokenizer *t, const kvz_gguf *g, const char *path, const gguf_family **fam,
                         kvz_error *err)
{
    const char *pre = "default";
    size_t len = strlen(pre);
    if (kvz_gguf_find_key(g, "tokenizer.ggml.pre") >= 0) {
        int rc = kvz_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &len, err);
        if (rc)
            return rc;
    }
    *fam = find_family(pre, len);
    if (!*fam)
        return kvz_fail(err, KVZ_EUNSUPPORTED, "%s: tokenizer.ggml.pre '%.*s' is not supported (known: smollm, "
                        "gpt2, llama-bpe/llama3, qwen2)", path, (int)(len > 64 ? 64 : len), pre);
    const gguf_family *f = *fam;
    t->nfc = f->nfc;
    int rc = KVZ_OK;
    if (f->regex) {
        tok_pre_step s = {.kind = TOK_PRE_SPLIT};
        rc = tok_regex_compile(f->regex, strlen(f->regex), 0, path, &s.re, err);
        t->pre[t->n_pre++] = s;
    }
    if (f->digits)
        t->pre[t->n_pre++] = (tok_pre_step){.kind = TOK_PRE_DIGITS, .individual = 1};
    tok_pre_step bl = {.kind = TOK_PRE_BYTELEVEL};
    if (rc == KVZ_OK && !f->regex)
        rc = tok_regex_compile(TOK_GPT2_REGEX, strlen(TOK_GPT2_REGEX), 0, path, &bl.re, err);
    t->pre[t->n_pre++] = bl;
    t->pre_name = strdup(f->name);
    return rc == KVZ_OK && !t->pre_name ? kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path) : rc;
}

static int32_t get_id(const kvz_gguf *g, const char *key, size_t count)
{
    int64_t v;
    if (kvz_gguf_get_i64(g, key, &v, NULL) != KVZ_OK || v < 0 || (uint64_t)v >= count)
        return -1;
    return (int32_t)v;
}

static int get_flag(const kvz_gguf *g, const char *key, int dflt)
{
    int v;
    return kvz_gguf_get_bool(g, key, &v, NULL) == KVZ_OK ? v : dflt;
}

static int load_specials(kvz_tokenizer *t, const kvz_gguf *g, const gguf_family *f, size_t count)
{
    t->bos_id = get_id(g, "tokenizer.ggml.bos_token_id", count);
    t->eos_id = get_id(g, "tokenizer.ggml.eos_token_id", count);
    if (get_flag(g, "tokenizer.ggml.add_bos_token", f->default_bos) && t->bos_id >= 0) {
        t->prefix_ids = malloc(sizeof *t->prefix_ids);
        if (!t->prefix_ids)
            return KVZ_ENOMEM;
        t->prefix_ids[0] = t->bos_id;
        t->n_prefix = 1;
    }
    if (get_flag(g, "tokenizer.ggml.add_eos_token", 0) && t->eos_id >= 0) {
        t->suffix_ids = malloc(sizeof *t->suffix_ids);
        if (!t->suffix_ids)
            return KVZ_ENOMEM;
        t->suffix_ids[0] = t->eos_id;
        t->n_suffix = 1;
    }
    return KVZ_OK;
}

int tok_load_gguf(const kvz_gguf *g, kvz_tokenizer **out, kvz_error *err)
{
    *out = NULL;
    const char *path = kvz_gguf_path(g);
    int rc = check_model(g, path, err);
    if (rc)
        return rc;
    kvz_tokenizer *t = tok_new(path);
    if (!t)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    size_t count = 0;
    const gguf_family *fam = NULL;
    rc = load_tokens(t, g, path, &count, err);
    if (rc == KVZ_OK)
        rc = load_merges(t, g, path, err);
    if (rc == KVZ_OK)
        rc = load_added(t, g, count, err);
    if (rc == KVZ_OK)
        rc = load_pipeline(t, g, path, &fam, err);
    if (rc == KVZ_OK && load_specials(t, g, fam, count))
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    if (rc == KVZ_OK)
        rc = tok_finish(t, err);
    if (rc != KVZ_OK) {
        kvz_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return KVZ_OK;
}
