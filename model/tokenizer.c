/* tokenizer: the tokenizer handle: construction shared by the loaders
 * (tokenizer_json.c, tokenizer_gguf.c), the vocabulary map, lookups, the
 * description line, and kvz_tokenizer_load, which picks the loader from the
 * path (GGUF file, HF directory or tokenizer.json). Encoding and decoding
 * live in tokenizer_encode.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kvz_file.h"
#include "checkpoint.h" /* kvz_model_locate */
#include "tokenizer_internal.h"

kvz_tokenizer *tok_new(const char *source)
{
    kvz_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->source = strdup(source ? source : "(tokenizer)");
    if (!t->source) {
        free(t);
        return NULL;
    }
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    return t;
}

static int grow_ids(kvz_tokenizer *t, size_t need)
{
    if (need <= t->cap_ids) {
        if (need > t->n_ids)
            t->n_ids = need;
        return KVZ_OK;
    }
    size_t cap = t->cap_ids ? t->cap_ids : 1024;
    while (cap < need)
        cap *= 2;
    char **tok = realloc(t->token, cap * sizeof *tok);
    if (!tok)
        return KVZ_ENOMEM;
    t->token = tok;
    size_t *len = realloc(t->token_len, cap * sizeof *len);
    if (!len)
        return KVZ_ENOMEM;
    t->token_len = len;
    int32_t *ao = realloc(t->added_of, cap * sizeof *ao);
    if (!ao)
        return KVZ_ENOMEM;
    t->added_of = ao;
    for (size_t i = t->cap_ids; i < cap; i++) {
        t->token[i] = NULL;
        t->token_len[i] = 0;
        t->added_of[i] = -1;
    }
    t->cap_ids = cap;
    t->n_ids = need;
    return KVZ_OK;
}

int tok_set_token(kvz_tokenizer *t, int32_t id, const char *s, size_t len, kvz_error *err)
{
    if (id < 0 || id > 0x7FFFFFFE)
        return kvz_fail(err, KVZ_EFORMAT, "%s: token id %ld is out of range", t->source, (long)id);
    if (grow_ids(t, (size_t)id + 1))
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
    char *copy = malloc(len + 1);
    if (!copy)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
    memcpy(copy, s, len);
    copy[len] = '\0';
    if (!t->token[id])
        t->n_vocab++;
    free(t->token[id]);
    t->token[id] = copy;
    t->token_len[id] = len;
    return KVZ_OK;
}

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

int tok_vocab_build(kvz_tokenizer *t, kvz_error *err)
{
    size_t cap = 64;
    while (cap < 2 * t->n_vocab + 1)
        cap *= 2;
    free(t->vocab.slots);
    t->vocab.slots = calloc(cap, sizeof *t->vocab.slots);
    if (!t->vocab.slots)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
    t->vocab.mask = cap - 1;
    for (size_t id = 0; id < t->n_ids; id++) {
        if (!t->token[id])
            continue;
        size_t i = (size_t)hash_bytes(t->token[id], t->token_len[id]) & t->vocab.mask;
        while (t->vocab.slots[i]) {
            uint32_t o = t->vocab.slots[i] - 1;
            if (t->token_len[o] == t->token_len[id] && !memcmp(t->token[o], t->token[id], t->token_len[id]))
                break;
            i = (i + 1) & t->vocab.mask;
        }
        t->vocab.slots[i] = (uint32_t)id + 1;
    }
    return KVZ_OK;
}

int32_t tok_vocab_find(const kvz_tokenizer *t, const char *s, size_t len)
{
    if (!t->vocab.slots)
        return -1;
    size_t i = (size_t)hash_bytes(s, len) & t->vocab.mask;
    while (t->vocab.slots[i]) {
        uint32_t id = t->vocab.slots[i] - 1;
        if (t->token_len[id] == len && !memcmp(t->token[id], s, len))
            return (int32_t)id;
        i = (i + 1) & t->vocab.mask;
    }
    return -1;
}

int tok_add_added(kvz_tokenizer *t, const tok_added *a, kvz_error *err)
{
    if (a->id < 0 || a->id > 0x7FFFFFFE)
        return kvz_fail(err, KVZ_EFORMAT, "%s: added token '%s' has id %ld out of range", t->source,
                        a->content, (long)a->id);
    if (a->len == 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: added token %ld has empty content", t->source, (long)a->id);
    if (grow_ids(t, (size_t)a->id + 1))
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
    tok_added copy = *a;
    copy.content = malloc(a->len + 1);
    if (!copy.content)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
    memcpy(copy.content, a->content, a->len);
    copy.content[a->len] = '\0';
    copy.match = NULL;
    copy.match_len = 0;
    int32_t existing = t->added_of[a->id];
    if (existing >= 0) { /* the same id twice: the later definition wins */
        free(t->added[existing].content);
        t->added[existing] = copy;
        return KVZ_OK;
    }
    if (t->n_added == t->cap_added) {
        size_t cap = t->cap_added ? 2 * t->cap_added : 64;
        tok_added *v = realloc(t->added, cap * sizeof *v);
        if (!v) {
            free(copy.content);
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
        }
        t->added = v;
        t->cap_added = cap;
    }
    t->added_of[a->id] = (int32_t)t->n_added;
    t->added[t->n_added++] = copy;
    return KVZ_OK;
}

/* What the added-token scan searches for: the content, or its NFC form for
 * normalized tokens when the tokenizer normalizes. */
static int set_match_strings(kvz_tokenizer *t, kvz_error *err)
{
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (a->normalized && t->nfc) {
            tok_normalized n;
            if (tok_nfc(a->content, 0, a->len, &n))
                return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", t->source);
            a->match = n.text;
            a->match_len = n.len;
            n.text = NULL;
            tok_normalized_free(&n);
        } else {
            a->match = a->content;
            a->match_len = a->len;
        }
    }
    return KVZ_OK;
}

static void describe(kvz_tokenizer *t)
{
    char extra[160] = "";
    if (t->n_prefix && t->bos_id >= 0 && t->prefix_ids[0] == t->bos_id)
        snprintf(extra, sizeof extra, ", adds BOS %s", kvz_tokenizer_token(t, t->bos_id));
    else if (t->n_prefix)
        snprintf(extra, sizeof extra, ", adds %zu leading special token(s)", t->n_prefix);
    else
        snprintf(extra, sizeof extra, ", adds no BOS");
    snprintf(t->describe, sizeof t->describe, "byte-level BPE, pre-tokenizer %s, %zu tokens, %s%s",
             t->pre_name ? t->pre_name : "custom", t->n_ids, t->nfc ? "NFC" : "no normalizer", extra);
}

int tok_finish(kvz_tokenizer *t, kvz_error *err)
{
    int rc = tok_vocab_build(t, err);
    if (rc)
        return rc;
    for (int b = 0; b < 256; b++) {
        char spell[4];
        unsigned char byte = (unsigned char)b;
        size_t n = tok_bytes_to_bytelevel(&byte, 1, spell);
        t->byte_id[b] = tok_vocab_find(t, spell, n);
    }
    rc = set_match_strings(t, err);
    if (rc == KVZ_OK)
        rc = tok_added_set_build(&t->raw_set, t->added, t->n_added, 0, err);
    if (rc == KVZ_OK)
        rc = tok_added_set_build(&t->norm_set, t->added, t->n_added, 1, err);
    if (rc == KVZ_OK)
        describe(t);
    /* A token covers at most this many non-whitespace bytes of the text it
     * came from: a vocabulary string is never shorter than the bytes it
     * stands for (byte-level spells each byte with 1-2 bytes, SentencePiece
     * spells a space with 3), an added token covers its match plus stripped
     * whitespace, the unknown token one code point. */
    t->max_token_bytes = 4;
    for (size_t i = 0; i < t->n_ids; i++)
        if (t->token[i] && t->token_len[i] > t->max_token_bytes)
            t->max_token_bytes = t->token_len[i];
    for (size_t i = 0; i < t->n_added; i++) {
        size_t n = t->added[i].match_len > t->added[i].len ? t->added[i].match_len : t->added[i].len;
        if (n > t->max_token_bytes)
            t->max_token_bytes = n;
    }
    return rc;
}

void kvz_tokenizer_free(kvz_tokenizer *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_ids; i++)
        free(t->token[i]);
    free(t->token);
    free(t->token_len);
    free(t->added_of);
    free(t->vocab.slots);
    tok_merges_free(&t->merges);
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].match != t->added[i].content)
            free(t->added[i].match);
        free(t->added[i].content);
    }
    free(t->added);
    tok_added_set_free(&t->raw_set);
    tok_added_set_free(&t->norm_set);
    for (size_t i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    free(t->prefix_ids);
    free(t->suffix_ids);
    free(t->pre_name);
    free(t->source);
    free(t);
}

/* ------------------------------------------------------------- lookups */

size_t kvz_tokenizer_vocab_size(const kvz_tokenizer *t)
{
    return t->n_ids;
}

const char *kvz_tokenizer_token(const kvz_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_ids)
        return NULL;
    if (t->added_of[id] >= 0)
        return t->added[t->added_of[id]].content;
    return t->token[id];
}

int32_t kvz_tokenizer_token_id(const kvz_tokenizer *t, const char *token, size_t len)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && !memcmp(t->added[i].content, token, len))
            return t->added[i].id;
    return tok_vocab_find(t, token, len);
}

int kvz_tokenizer_is_special(const kvz_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_ids || t->added_of[id] < 0)
        return 0;
    return t->added[t->added_of[id]].special;
}

int32_t kvz_tokenizer_bos_id(const kvz_tokenizer *t)
{
    return t->bos_id;
}

int32_t kvz_tokenizer_eos_id(const kvz_tokenizer *t)
{
    return t->eos_id;
}

int kvz_tokenizer_adds_bos(const kvz_tokenizer *t)
{
    return t->n_prefix > 0 && t->bos_id >= 0 && t->prefix_ids[0] == t->bos_id;
}

int kvz_tokenizer_adds_eos(const kvz_tokenizer *t)
{
    return t->n_suffix > 0 && t->eos_id >= 0 && t->suffix_ids[t->n_suffix - 1] == t->eos_id;
}

const char *kvz_tokenizer_describe(const kvz_tokenizer *t)
{
    return t->describe;
}

const char *kvz_tokenizer_source(const kvz_tokenizer *t)
{
    return t->source;
}

/* ------------------------------------------------------------- loading */

int kvz_tokenizer_from_json(const char *json_path, const char *config_path, kvz_tokenizer **out,
                            kvz_error *err)
{
    return tok_load_json(json_path, config_path, out, err);
}

int kvz_tokenizer_from_gguf(const kvz_gguf *g, kvz_tokenizer **out, kvz_error *err)
{
    return tok_load_gguf(g, out, err);
}

static int file_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

static int load_gguf_path(const char *path, kvz_tokenizer **out, kvz_error *err)
{
    kvz_gguf *g = NULL;
    int rc = kvz_gguf_open(path, &g, err);
    if (rc)
        return rc;
    rc = tok_load_gguf(g, out, err);
    kvz_gguf_close(g);
    return rc;
}

/* tokenizer.json with its sibling tokenizer_config.json when present. */
static int load_json_in(const char *dir, const char *json_path, kvz_tokenizer **out, kvz_error *err)
{
    char *config = kvz_path_join(dir, "tokenizer_config.json");
    if (!config)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", json_path);
    int rc = tok_load_json(json_path, kvz_path_exists(config) ? config : NULL, out, err);
    free(config);
    return rc;
}

static int load_located(const char *path, kvz_tokenizer **out, kvz_error *err);

int kvz_tokenizer_load(const char *spec, kvz_tokenizer **out, kvz_error *err)
{
    *out = NULL;
    char *path = NULL; /* a file, a directory, or an HF id's cached snapshot */
    int rc = kvz_model_locate(spec, &path, err);
    rc = rc ? rc : load_located(path, out, err);
    free(path);
    return rc;
}

static int load_located(const char *path, kvz_tokenizer **out, kvz_error *err)
{
    if (!kvz_path_exists(path))
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: no such file or directory", path);
    if (kvz_path_is_dir(path)) {
        char *json = kvz_path_join(path, "tokenizer.json");
        if (!json)
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
        int rc = kvz_path_exists(json)
                     ? load_json_in(path, json, out, err)
                     : kvz_fail(err, KVZ_ENOTFOUND,
                                "%s: no tokenizer.json in this directory (an HF model directory "
                                "needs one; or pass a GGUF file)",
                                path);
        free(json);
        return rc;
    }
    if (file_is_gguf(path))
        return load_gguf_path(path, out, err);
    char *dir = strdup(path);
    if (!dir)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    else
        strcpy(dir, ".");
    int rc = load_json_in(dir, path, out, err);
    free(dir);
    return rc;
}
