/* tokenizer_json: loading a tokenizer from HF tokenizer.json (+ optional
 * tokenizer_config.json). Supported: model BPE (vocab object; merges as
 * "a b" strings or ["a", "b"] pairs; ignore_merges; unk_token), added_tokens,
 * normalizer null/NFC, pre-tokenizers Split (Regex or String, Isolated),
 * Digits, ByteLevel (add_prefix_space false) and Sequence of them,
 * post-processors ByteLevel / TemplateProcessing / Sequence, decoder
 * ByteLevel. Anything else is KVZ_EUNSUPPORTED with the name of the thing.
 * tokenizer_config.json gives bos_token/eos_token and, as transformers 5
 * does, an explicit add_bos_token/add_eos_token (or a missing
 * post_processor) replaces the post-processor by BOS? $A EOS?. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_json.h"
#include "tokenizer_internal.h"

typedef struct json_ctx {
    kvz_tokenizer *t;
    const char *path;
    kvz_error *err;
    int have_bytelevel, have_digits, have_bytelevel_regex;
    const char *split_regex;
    size_t n_split;
    int template_set;
} json_ctx;

static const char *type_of(const json_t *obj)
{
    const char *s = json_string_value(json_object_get(obj, "type"));
    return s ? s : "";
}

static int load_json_file(const char *path, json_t **root, kvz_error *err)
{
    json_error_t jerr;
    /* a failed allocation inside jansson may also leave a mangled value
     * behind a successful load (kvz_json.h) */
    kvz_json_begin();
    *root = json_load_file(path, 0, &jerr);
    if (kvz_json_failed() || (!*root && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(*root);
        *root = NULL;
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    if (*root)
        return KVZ_OK;
    if (jerr.line < 0 || strstr(jerr.text, "unable to open"))
        return kvz_fail(err, KVZ_EIO, "%s: cannot read: %s", path, jerr.text);
    return kvz_fail(err, KVZ_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", path, jerr.line,
                    jerr.column, jerr.text);
}

/* ---------------------------------------------------------------- model */

static int check_model_options(json_ctx *c, const json_t *m)
{
    const json_t *d = json_object_get(m, "dropout");
    if (d && !json_is_null(d) && json_number_value(d) != 0.0)
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: BPE dropout is not supported", c->path);
    if (json_is_true(json_object_get(m, "byte_fallback")))
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: BPE byte_fallback is not supported", c->path);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(m, keys[i]));
        if (s && *s)
            return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: BPE %s '%s' is not supported", c->path, keys[i], s);
    }
    c->t->ignore_merges = json_is_true(json_object_get(m, "ignore_merges"));
    return KVZ_OK;
}

static int load_vocab(json_ctx *c, const json_t *vocab)
{
    if (!json_is_object(vocab))
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: model.vocab is missing or not an object", c->path);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7FFFFFFE)
            return kvz_fail(c->err, KVZ_EFORMAT, "%s: model.vocab['%s'] is not a valid token id", c->path, key);
        int rc = tok_set_token(c->t, (int32_t)json_integer_value(v), key, strlen(key), c->err);
        if (rc)
            return rc;
    }
    return tok_vocab_build(c->t, c->err);
}

/* The two halves of merge i: "a b" or ["a", "b"]. */
static int merge_parts(json_ctx *c, const json_t *m, size_t i, const char **a, size_t *na, const char **b,
                       size_t *nb)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m), *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return kvz_fail(c->err, KVZ_EFORMAT, "%s: merge %zu ('%s') is not two tokens separated by one space",
                            c->path, i, s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = strlen(sp + 1);
        return KVZ_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *nb = json_string_length(json_array_get(m, 1));
        return KVZ_OK;
    }
    return kvz_fail(c->err, KVZ_EFORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", c->path, i);
}

static int lookup_merge_token(json_ctx *c, size_t i, const char *s, size_t n, int32_t *id)
{
    *id = tok_vocab_find(c->t, s, n);
    if (*id < 0)
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: merge %zu uses token '%.*s', which is not in the vocabulary",
                        c->path, i, (int)(n > 200 ? 200 : n), s);
    return KVZ_OK;
}

static int load_merges(json_ctx *c, const json_t *merges)
{
    if (!json_is_array(merges))
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: model.merges is missing or not an array", c->path);
    size_t n = json_array_size(merges);
    if (tok_merges_init(&c->t->merges, n))
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
    char *joined = NULL;
    size_t cap = 0;
    int rc = KVZ_OK;
    for (size_t i = 0; i < n && rc == KVZ_OK; i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        int32_t ia, ib, im;
        rc = merge_parts(c, json_array_get(merges, i), i, &a, &na, &b, &nb);
        if (rc == KVZ_OK)
            rc = lookup_merge_token(c, i, a, na, &ia);
        if (rc == KVZ_OK)
            rc = lookup_merge_token(c, i, b, nb, &ib);
        if (rc != KVZ_OK)
            break;
        if (na + nb + 1 > cap) {
            cap = 2 * (na + nb + 1);
            char *nj = realloc(joined, cap);
            if (!nj) {
                rc = kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
                break;
            }
            joined = nj;
        }
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        rc = lookup_merge_token(c, i, joined, na + nb, &im);
        if (rc == KVZ_OK && tok_merges_put(&c->t->merges, ia, ib, (int32_t)i, im))
            rc = kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
    }
    free(joined);
    return rc;
}

static int load_model(json_ctx *c, const json_t *root)
{
    const json_t *m = json_object_get(root, "model");
    if (!json_is_object(m))
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: no 'model' object", c->path);
    const char *type = type_of(m);
    if (!*type && json_object_get(m, "merges"))
        type = "BPE";
    if (strcmp(type, "BPE") != 0)
        return kvz_fail(c->err, KVZ_EUNSUPPORTED,
                        "%s: model type '%s' is not supported (only byte-level BPE)", c->path,
                        *type ? type : "(none)");
    int rc = check_model_options(c, m);
    if (rc == KVZ_OK)
        rc = load_vocab(c, json_object_get(m, "vocab"));
    if (rc == KVZ_OK)
        rc = load_merges(c, json_object_get(m, "merges"));
    const char *unk = json_string_value(json_object_get(m, "unk_token"));
    if (rc == KVZ_OK && unk) {
        c->t->unk_id = tok_vocab_find(c->t, unk, strlen(unk));
        if (c->t->unk_id < 0)
            rc = kvz_fail(c->err, KVZ_EFORMAT, "%s: unk_token '%s' is not in the vocabulary", c->path, unk);
    }
    return rc;
}

/* --------------------------------------------------------- added tokens */

static int load_added(json_ctx *c, const json_t *arr)
{
    if (!arr || json_is_null(arr))
        return KVZ_OK;
    if (!json_is_array(arr))
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: added_tokens is not an array", c->path);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *a = json_array_get(arr, i);
        const json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content))
            return kvz_fail(c->err, KVZ_EFORMAT, "%s: added_tokens[%zu] needs an integer id and a string content",
                            c->path, i);
        tok_added t = {
            .content = (char *)json_string_value(content),
            .len = json_string_length(content),
            .id = (int32_t)(json_integer_value(id) < 0 || json_integer_value(id) > 0x7FFFFFFE
                                ? -1 : json_integer_value(id)),
            .special = json_is_true(json_object_get(a, "special")),
            .normalized = json_is_true(json_object_get(a, "normalized")),
            .lstrip = json_is_true(json_object_get(a, "lstrip")),
            .rstrip = json_is_true(json_object_get(a, "rstrip")),
            .single_word = json_is_true(json_object_get(a, "single_word")),
        };
        int rc = tok_add_added(c->t, &t, c->err);
        if (rc)
            return rc;
    }
    return KVZ_OK;
}

/* ----------------------------------------------------- normalizer, pre */

static int load_normalizer(json_ctx *c, const json_t *n)
{
    if (!n || json_is_null(n))
        return KVZ_OK;
    const char *type = type_of(n);
    if (!strcmp(type, "NFC")) {
        c->t->nfc = 1;
        return KVZ_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = load_normalizer(c, json_array_get(list, i));
            if (rc)
                return rc;
        }
        return KVZ_OK;
    }
    return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: normalizer '%s' is not supported (only NFC)", c->path, type);
}

static int add_step(json_ctx *c, tok_pre_step step)
{
    if (c->t->n_pre == TOK_MAX_PRE_STEPS) {
        pcre2_code_free(step.re);
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: more than %d pre-tokenizer steps", c->path,
                        TOK_MAX_PRE_STEPS);
    }
    c->t->pre[c->t->n_pre++] = step;
    return KVZ_OK;
}

static int load_split(json_ctx *c, const json_t *p)
{
    const char *behavior = json_string_value(json_object_get(p, "behavior"));
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: Split behavior '%s' is not supported (only Isolated)",
                        c->path, behavior ? behavior : "(none)");
    if (json_is_true(json_object_get(p, "invert")))
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: Split with invert=true is not supported", c->path);
    const json_t *pat = json_object_get(p, "pattern");
    const json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    if (!json_is_string(re) && !json_is_string(lit))
        return kvz_fail(c->err, KVZ_EFORMAT, "%s: Split pattern is neither {\"Regex\": ...} nor {\"String\": ...}",
                        c->path);
    const json_t *s = re ? re : lit;
    tok_pre_step step = {.kind = TOK_PRE_SPLIT};
    int rc = tok_regex_compile(json_string_value(s), json_string_length(s), re == NULL, c->path, &step.re, c->err);
    if (rc)
        return rc;
    c->split_regex = json_string_value(s);
    c->n_split++;
    return add_step(c, step);
}

static int load_bytelevel(json_ctx *c, const json_t *p)
{
    if (json_is_true(json_object_get(p, "add_prefix_space")))
        return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: ByteLevel pre-tokenizer with add_prefix_space=true is "
                        "not supported", c->path);
    const json_t *ur = json_object_get(p, "use_regex");
    tok_pre_step step = {.kind = TOK_PRE_BYTELEVEL};
    if (!ur || json_is_true(ur)) { /* HF default: use_regex = true */
        int rc = tok_regex_compile(TOK_GPT2_REGEX, strlen(TOK_GPT2_REGEX), 0, c->path, &step.re, c->err);
        if (rc)
            return rc;
        c->have_bytelevel_regex = 1;
    }
    c->have_bytelevel = 1;
    return add_step(c, step);
}

static int load_pre(json_ctx *c, const json_t *p)
{
    if (!p || json_is_null(p))
        return KVZ_OK;
    const char *type = type_of(p);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "pretokenizers");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = load_pre(c, json_array_get(list, i));
            if (rc)
                return rc;
        }
        return KVZ_OK;
    }
    if (!strcmp(type, "Split"))
        return load_split(c, p);
    if (!strcmp(type, "ByteLevel"))
        return load_bytelevel(c, p);
    if (!strcmp(type, "Digits")) {
        int individual = json_is_true(json_object_get(p, "individual_digits"));
        c->have_digits = individual ? 1 : 2; /* 2: contiguous, not SmolLM2's */
        return add_step(c, (tok_pre_step){.kind = TOK_PRE_DIGITS, .individual = individual});
    }
    return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: pre-tokenizer '%s' is not supported", c->path, type);
}

/* ------------------------------------------------------ post, decoder */

static int set_ids(int32_t **dst, size_t *n, const int32_t *ids, size_t count)
{
    int32_t *v = realloc(*dst, (*n + count + 1) * sizeof *v);
    if (!v)
        return KVZ_ENOMEM;
    memcpy(v + *n, ids, count * sizeof *ids);
    *dst = v;
    *n += count;
    return KVZ_OK;
}

/* TemplateProcessing "single": specials before $A go first, after go last. */
static int load_template(json_ctx *c, const json_t *p)
{
    const json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
    int after = 0;
    c->t->n_prefix = c->t->n_suffix = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *item = json_array_get(single, i);
        const json_t *sp = json_object_get(item, "SpecialToken");
        if (!sp) {
            after = 1;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        const json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return kvz_fail(c->err, KVZ_EFORMAT, "%s: post_processor special token '%s' has no ids", c->path,
                            name ? name : "(none)");
        for (size_t k = 0; k < json_array_size(ids); k++) {
            int32_t id = (int32_t)json_integer_value(json_array_get(ids, k));
            if (set_ids(after ? &c->t->suffix_ids : &c->t->prefix_ids, after ? &c->t->n_suffix : &c->t->n_prefix,
                        &id, 1))
                return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
        }
    }
    c->template_set = 1;
    return KVZ_OK;
}

static int load_post(json_ctx *c, const json_t *p)
{
    if (!p || json_is_null(p))
        return KVZ_OK;
    const char *type = type_of(p);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "processors");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = load_post(c, json_array_get(list, i));
            if (rc)
                return rc;
        }
        return KVZ_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        const json_t *trim = json_object_get(p, "trim_offsets");
        c->t->trim_offsets = !trim || json_is_true(trim);
        const json_t *aps = json_object_get(p, "add_prefix_space");
        c->t->trim_add_prefix_space = !aps || json_is_true(aps);
        return KVZ_OK;
    }
    if (!strcmp(type, "TemplateProcessing"))
        return load_template(c, p);
    return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: post_processor '%s' is not supported", c->path, type);
}

static int check_decoder(json_ctx *c, const json_t *d)
{
    if (!d || json_is_null(d) || !strcmp(type_of(d), "ByteLevel"))
        return KVZ_OK;
    if (!strcmp(type_of(d), "Sequence")) {
        const json_t *list = json_object_get(d, "decoders");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int rc = check_decoder(c, json_array_get(list, i));
            if (rc)
                return rc;
        }
        return KVZ_OK;
    }
    return kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: decoder '%s' is not supported (only ByteLevel)", c->path,
                    type_of(d));
}

/* ---------------------------------------------------------------- config */

static int32_t config_token(json_ctx *c, const json_t *cfg, const char *key)
{
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    return kvz_tokenizer_token_id(c->t, json_string_value(v), json_string_length(v));
}

static int apply_config(json_ctx *c, const json_t *cfg, const json_t *post)
{
    kvz_tokenizer *t = c->t;
    if (cfg) {
        t->bos_id = config_token(c, cfg, "bos_token");
        t->eos_id = config_token(c, cfg, "eos_token");
    } else if (t->n_prefix) {
        t->bos_id = t->prefix_ids[0];
    }
    int explicit_flags = cfg && (json_object_get(cfg, "add_bos_token") || json_object_get(cfg, "add_eos_token"));
    if (!explicit_flags && post && !json_is_null(post))
        return KVZ_OK;
    /* transformers 5 replaces the post-processor: [BOS] $A [EOS] */
    t->n_prefix = t->n_suffix = 0;
    t->trim_offsets = 0;
    if (cfg && json_is_true(json_object_get(cfg, "add_bos_token")) && t->bos_id >= 0 &&
        set_ids(&t->prefix_ids, &t->n_prefix, &t->bos_id, 1))
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
    if (cfg && json_is_true(json_object_get(cfg, "add_eos_token")) && t->eos_id >= 0 &&
        set_ids(&t->suffix_ids, &t->n_suffix, &t->eos_id, 1))
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
    return KVZ_OK;
}

static const char *pre_name(const json_ctx *c)
{
    if (c->n_split == 1 && !c->have_digits && !c->have_bytelevel_regex) {
        if (!strcmp(c->split_regex, TOK_LLAMA3_REGEX))
            return "llama3";
        if (!strcmp(c->split_regex, TOK_QWEN2_REGEX))
            return "qwen2";
    }
    if (c->n_split == 0 && c->have_bytelevel_regex && c->have_digits != 2)
        return c->have_digits ? "smollm" : "gpt2";
    return "custom";
}

static int load_all(json_ctx *c, const json_t *root, const json_t *cfg)
{
    int rc = load_model(c, root);
    if (rc == KVZ_OK)
        rc = load_added(c, json_object_get(root, "added_tokens"));
    if (rc == KVZ_OK)
        rc = load_normalizer(c, json_object_get(root, "normalizer"));
    if (rc == KVZ_OK)
        rc = load_pre(c, json_object_get(root, "pre_tokenizer"));
    if (rc == KVZ_OK && !c->have_bytelevel)
        rc = kvz_fail(c->err, KVZ_EUNSUPPORTED, "%s: pre-tokenizer has no ByteLevel step (only byte-level BPE "
                      "is supported)", c->path);
    if (rc == KVZ_OK)
        rc = load_post(c, json_object_get(root, "post_processor"));
    if (rc == KVZ_OK)
        rc = check_decoder(c, json_object_get(root, "decoder"));
    if (rc == KVZ_OK)
        rc = apply_config(c, cfg, json_object_get(root, "post_processor"));
    if (rc == KVZ_OK) {
        c->t->pre_name = strdup(pre_name(c));
        rc = c->t->pre_name ? tok_finish(c->t, c->err) : kvz_fail(c->err, KVZ_ENOMEM, "out of memory");
    }
    return rc;
}

int tok_load_json(const char *json_path, const char *config_path, kvz_tokenizer **out, kvz_error *err)
{
    *out = NULL;
    json_t *root = NULL, *cfg = NULL;
    int rc = load_json_file(json_path, &root, err);
    if (rc == KVZ_OK && !json_is_object(root))
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: not a JSON object", json_path);
    if (rc == KVZ_OK && config_path)
        rc = load_json_file(config_path, &cfg, err);
    kvz_tokenizer *t = rc == KVZ_OK ? tok_new(json_path) : NULL;
    if (rc == KVZ_OK && !t)
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", json_path);
    if (rc == KVZ_OK) {
        json_ctx c = {.t = t, .path = json_path, .err = err};
        rc = load_all(&c, root, json_is_object(cfg) ? cfg : NULL);
    }
    json_decref(root);
    json_decref(cfg);
    if (rc != KVZ_OK) {
        kvz_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return KVZ_OK;
}
