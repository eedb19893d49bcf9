/* test_tokenizer: model/tokenizer*.c against the HF reference, EXACTLY.
 * For each fixture (tests/fixtures/tokenizer/<model>.json, written by
 * tests/reference/make_tokenizer_fixtures.py): the real tokenizer (Llama-3
 * and Qwen3 from $KVZ_ASSETS/tokenizers/<model>, SmolLM2 from the default
 * GGUF) must give the same ids and code-point offsets for every text (the
 * first mismatch is shown with context), the same decode() and
 * decode(skip_special_tokens=True), and the same decodings of id prefixes
 * that cut a character. Also: lookups, and the speed of ~1 MB of text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kvz_test.h"
#include "model/tokenizer.h"

typedef struct model_case {
    const char *fixture;
    const char *asset; /* under $KVZ_ASSETS ("fixture:" prefix: under
                          $KVZ_FIXTURES), or NULL: the default GGUF */
} model_case;

/* synthetic: a tiny trained tokenizer with lstrip/rstrip/single_word/
 * normalized added tokens, ignore_merges, Digits(contiguous), trim_offsets
 * and BOS+EOS; loaded with merges as pairs and as "a b" strings. */
static const model_case MODELS[] = {
    {"smollm2", NULL},
    {"llama3", "tokenizers/llama3"},
    {"qwen3", "tokenizers/qwen3"},
    {"synthetic", "fixture:tokenizer/synthetic/tokenizer.json"},
    {"synthetic", "fixture:tokenizer/synthetic/tokenizer_string_merges.json"},
};
#define N_MODELS (sizeof MODELS / sizeof MODELS[0])

static const char *model_path(const model_case *m, char *buf, size_t cap)
{
    const char *assets = getenv("KVZ_ASSETS");
    if (!m->asset) {
        const char *def = getenv("KVZAP_DEFAULT_MODEL");
        if (def)
            return def;
        snprintf(buf, cap, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", assets ? assets : ".");
        return buf;
    }
    if (!strncmp(m->asset, "fixture:", 8)) {
        snprintf(buf, cap, "%s", kvz_test_fixture(m->asset + 8));
        return buf;
    }
    snprintf(buf, cap, "%s/%s", assets ? assets : ".", m->asset);
    return buf;
}

static json_t *load_fixture(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/%s.json", name);
    json_error_t jerr;
    json_t *root = json_load_file(kvz_test_fixture(rel), JSON_ALLOW_NUL, &jerr);
    KVZ_CHECK(root != NULL, "cannot load fixture %s: %s", rel, jerr.text);
    return root;
}

static void show_token(const kvz_tokenizer *t, const char *who, int32_t id, long s, long e)
{
    const char *tok = kvz_tokenizer_token(t, id);
    fprintf(stderr, "    %s: id %d '%s' offsets (%ld, %ld)\n", who, id, tok ? tok : "?", s, e);
}

/* Prints the first token where got and want differ, with the text there. */
static void show_mismatch(const kvz_tokenizer *t, const char *name, const char *text, const kvz_tokens *got,
                          json_t *ids, json_t *offs)
{
    size_t n = json_array_size(ids), i = 0;
    for (; i < n && i < got->n; i++) {
        json_t *o = json_array_get(offs, i);
        if (got->ids[i] != json_integer_value(json_array_get(ids, i)) ||
            (long)got->spans[i].start != json_integer_value(json_array_get(o, 0)) ||
            (long)got->spans[i].end != json_integer_value(json_array_get(o, 1)))
            break;
    }
    fprintf(stderr, "  %s: first mismatch at token %zu (got %zu tokens, want %zu)\n", name, i, got->n, n);
    if (i < got->n)
        show_token(t, "got ", got->ids[i], (long)got->spans[i].start, (long)got->spans[i].end);
    if (i < n) {
        json_t *o = json_array_get(offs, i);
        show_token(t, "want", (int32_t)json_integer_value(json_array_get(ids, i)),
                   (long)json_integer_value(json_array_get(o, 0)), (long)json_integer_value(json_array_get(o, 1)));
    }
    size_t at = i < got->n ? got->spans[i].byte_start : 0;
    size_t from = at > 30 ? at - 30 : 0;
    fprintf(stderr, "    text near byte %zu: ...%.60s...\n", at, text + from);
}

static void check_case(const kvz_tokenizer *t, const char *model, json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    json_t *jt = json_object_get(c, "text");
    const char *text = json_string_value(jt);
    size_t len = json_string_length(jt);
    json_t *ids = json_object_get(c, "ids"), *offs = json_object_get(c, "offsets");
    char what[128];
    snprintf(what, sizeof what, "%s/%s", model, name);

    kvz_tokens got;
    kvz_error err = {0};
    int rc = kvz_tokenize(t, text, len, 1, &got, &err);
    KVZ_CHECK_OK(rc, err);
    int same = rc == KVZ_OK && got.n == json_array_size(ids);
    for (size_t i = 0; same && i < got.n; i++) {
        json_t *o = json_array_get(offs, i);
        same = got.ids[i] == json_integer_value(json_array_get(ids, i)) &&
               (long)got.spans[i].start == json_integer_value(json_array_get(o, 0)) &&
               (long)got.spans[i].end == json_integer_value(json_array_get(o, 1));
    }
    KVZ_CHECK(same, "%s: ids/offsets differ from HF", what);
    if (!same && rc == KVZ_OK)
        show_mismatch(t, what, text, &got, ids, offs);

    for (int skip = 0; skip <= 1 && rc == KVZ_OK; skip++) {
        json_t *want = json_object_get(c, skip ? "decoded_skip_special" : "decoded");
        char *dec = NULL;
        size_t dlen = 0;
        int drc = kvz_detokenize_bytes(t, got.ids, got.n, skip, &dec, &dlen, &err);
        KVZ_CHECK_OK(drc, err);
        KVZ_CHECK(drc == KVZ_OK && dlen == json_string_length(want) && !memcmp(dec, json_string_value(want), dlen),
                  "%s: decode(skip_special=%d) differs: got '%.80s' want '%.80s'", what, skip, dec ? dec : "",
                  json_string_value(want));
        free(dec);
    }
    kvz_tokens_free(&got);
}

static void check_decode_cases(const kvz_tokenizer *t, const char *model, json_t *cases)
{
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i), *ids = json_object_get(c, "ids"), *want = json_object_get(c, "text");
        size_t n = json_array_size(ids);
        int32_t *v = malloc((n ? n : 1) * sizeof *v);
        for (size_t k = 0; k < n; k++)
            v[k] = (int32_t)json_integer_value(json_array_get(ids, k));
        char *dec = NULL;
        size_t dlen = 0;
        kvz_error err = {0};
        int rc = kvz_detokenize_bytes(t, v, n, json_is_true(json_object_get(c, "skip_special")), &dec, &dlen, &err);
        KVZ_CHECK_OK(rc, err);
        KVZ_CHECK(rc == KVZ_OK && dlen == json_string_length(want) && !memcmp(dec, json_string_value(want), dlen),
                  "%s: decode case %zu differs: got '%s' want '%s'", model, i, dec ? dec : "",
                  json_string_value(want));
        free(dec);
        free(v);
    }
}

static void check_lookups(const kvz_tokenizer *t, const char *model, json_t *fx)
{
    KVZ_CHECK((long)kvz_tokenizer_vocab_size(t) == json_integer_value(json_object_get(fx, "vocab_size")),
              "%s: vocab size %zu, HF len(tokenizer) %lld", model, kvz_tokenizer_vocab_size(t),
              (long long)json_integer_value(json_object_get(fx, "vocab_size")));
    json_t *bos = json_object_get(fx, "bos_id"), *eos = json_object_get(fx, "eos_id");
    KVZ_CHECK(kvz_tokenizer_bos_id(t) == (json_is_integer(bos) ? json_integer_value(bos) : -1),
              "%s: bos id %d", model, kvz_tokenizer_bos_id(t));
    KVZ_CHECK(kvz_tokenizer_eos_id(t) == (json_is_integer(eos) ? json_integer_value(eos) : -1),
              "%s: eos id %d", model, kvz_tokenizer_eos_id(t));
    for (int32_t id = 0; id < 300; id += 37) {
        const char *s = kvz_tokenizer_token(t, id);
        KVZ_CHECK(s && kvz_tokenizer_token_id(t, s, strlen(s)) == id, "%s: token/token_id round trip of %d", model,
                  id);
    }
    printf("%s: %s\n", model, kvz_tokenizer_describe(t));
}

/* ~1 MB of the long fixture document: must take well under a second. */
static void check_speed(const kvz_tokenizer *t, const char *model, json_t *cases)
{
    const char *doc = NULL;
    for (size_t i = 0; i < json_array_size(cases); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(cases, i), "name")), "long_document"))
            doc = json_string_value(json_object_get(json_array_get(cases, i), "text"));
    if (!doc)
        return;
    size_t dlen = strlen(doc), total = 0, cap = (1 << 20) + dlen;
    char *big = malloc(cap + 1);
    while (total + dlen <= cap - dlen) {
        memcpy(big + total, doc, dlen);
        total += dlen;
    }
    kvz_tokens got;
    kvz_error err = {0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = kvz_tokenize(t, big, total, 1, &got, &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    KVZ_CHECK_OK(rc, err);
    printf("%s: %zu bytes -> %zu tokens in %.3f s\n", model, total, got.n, s);
    KVZ_CHECK(s < 10.0, "%s: tokenizing %zu bytes took %.2f s", model, total, s);
    kvz_tokens_free(&got);
    free(big);
}

/* kvz_tokenize_count (issue 14.5): for every fixture text, and for the
 * texts repeated 50x, at limits n-1, n, n+1 and 0 around the true count n:
 * the exact count when n <= limit, else limit + 1; never "over" when the
 * text fits (the lower bound must be sound, also for whitespace-heavy texts
 * and added tokens that strip whitespace). */
static void check_count(const kvz_tokenizer *t, const char *model, json_t *cases)
{
    int bad = 0;
    for (size_t i = 0; i < json_array_size(cases) && bad < 5; i++) {
        json_t *jt = json_object_get(json_array_get(cases, i), "text");
        size_t len = json_string_length(jt);
        for (int rep = 1; rep <= 50; rep += 49) {
            char *text = malloc(len * (size_t)rep + 1);
            for (int r = 0; r < rep; r++)
                memcpy(text + len * (size_t)r, json_string_value(jt), len);
            size_t n_text = len * (size_t)rep;
            kvz_tokens all;
            kvz_error err = {0};
            if (kvz_tokenize(t, text, n_text, 1, &all, &err) != KVZ_OK) {
                kvz_tokens_free(&all);
                free(text);
                continue;
            }
            size_t n = all.n, limits[4] = {n ? n - 1 : 0, n, n + 1, 0};
            kvz_tokens_free(&all);
            for (int k = 0; k < 4; k++) {
                size_t got = 0, want = n <= limits[k] ? n : limits[k] + 1;
                int rc = kvz_tokenize_count(t, text, n_text, 1, limits[k], &got, &err);
                if (rc != KVZ_OK || got != want) {
                    bad++;
                    fprintf(stderr, "  %s case %zu x%d limit %zu: count %zu, want %zu (%s)\n",
                            model, i, rep, limits[k], got, want, err.msg);
                }
            }
            free(text);
        }
    }
    /* a huge text is refused from the bound alone: fast, no tokenizing */
    size_t big = 64u << 20;
    char *text = malloc(big);
    for (size_t i = 0; i < big; i++)
        text[i] = "abcdefghij"[i % 10];
    size_t got = 0;
    kvz_error err = {0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = kvz_tokenize_count(t, text, big, 1, 1250, &got, &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    free(text);
    KVZ_CHECK(rc == KVZ_OK && got == 1251, "%s: 64 MiB text counted as over 1250: %zu", model, got);
    KVZ_CHECK(dt < 2.0, "%s: 64 MiB text over the limit took %.2f s (limit 2 s)", model, dt);
    KVZ_CHECK(bad == 0, "%s: kvz_tokenize_count agrees with kvz_tokenize", model);
}

int main(void)
{
    int tested = 0;
    for (size_t m = 0; m < N_MODELS; m++) {
        char buf[1024];
        const char *path = model_path(&MODELS[m], buf, sizeof buf);
        kvz_tokenizer *t = NULL;
        kvz_error err = {0};
        int rc = kvz_tokenizer_load(path, &t, &err);
        KVZ_CHECK_OK(rc, err);
        json_t *fx = load_fixture(MODELS[m].fixture);
        if (rc != KVZ_OK || !fx) {
            json_decref(fx);
            continue;
        }
        json_t *cases = json_object_get(fx, "cases");
        for (size_t i = 0; i < json_array_size(cases); i++)
            check_case(t, MODELS[m].fixture, json_array_get(cases, i));
        check_decode_cases(t, MODELS[m].fixture, json_object_get(fx, "decode_cases"));
        check_lookups(t, MODELS[m].fixture, fx);
        check_speed(t, MODELS[m].fixture, cases);
        check_count(t, MODELS[m].fixture, cases);
        json_decref(fx);
        kvz_tokenizer_free(t);
        tested++;
    }
    KVZ_CHECK(tested == (int)N_MODELS, "tested %d of %zu tokenizers", tested, N_MODELS);
    return kvz_test_done();
}
