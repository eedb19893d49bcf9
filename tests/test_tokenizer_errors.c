/* test_tokenizer_errors: the tokenizer's error paths and API edges:
 * invalid UTF-8 (truncated, overlong, surrogate, above U+10FFFF, stray
 * continuation) rejected with the offset of the first bad byte and a reason;
 * load errors (no tokenizer.json in a directory, a GGUF without tokenizer
 * metadata); empty input and BOS rules; special-token lookups; and
 * pathological inputs (very long whitespace runs and words) that must not
 * fail or crawl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvz_test.h"
#include "model/tokenizer.h"

typedef struct bad_utf8 {
    const char *bytes;
    size_t len, offset;
    const char *reason;
} bad_utf8;

static const bad_utf8 BAD[] = {
    {"caf\xc3", 4, 3, "truncated sequence at end of text"},
    {"\xe2\x82x", 3, 0, "missing continuation byte"},
    {"ab\xc0\xaf", 4, 2, "overlong encoding"},
    {"a\xe0\x80\xaf", 4, 1, "overlong encoding"},
    {"\xf0\x80\x80\xaf", 4, 0, "overlong encoding"},
    {"abcd\xed\xa0\x80z", 8, 4, "UTF-16 surrogate"},
    {"\xed\xbf\xbf", 3, 0, "UTF-16 surrogate"},
    {"\xf4\x90\x80\x80", 4, 0, "above U+10FFFF"},
    {"a\x80" "b", 3, 1, "unexpected continuation byte"},
    {"ok \xff", 4, 3, "never appears in UTF-8"},
    {"\xf0\x9f\x98", 3, 0, "truncated sequence"},
};

static const char *asset(const char *rel, char *buf, size_t cap)
{
    const char *a = getenv("KVZ_ASSETS");
    snprintf(buf, cap, "%s/%s", a ? a : ".", rel);
    return buf;
}

static kvz_tokenizer *load(const char *path)
{
    kvz_tokenizer *t = NULL;
    kvz_error err = {0};
    int rc = kvz_tokenizer_load(path, &t, &err);
    KVZ_CHECK_OK(rc, err);
    return t;
}

static void check_invalid_utf8(const kvz_tokenizer *t)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        size_t off = 999;
        const char *why = NULL;
        int rc = kvz_utf8_validate(BAD[i].bytes, BAD[i].len, &off, &why);
        KVZ_CHECK(rc == KVZ_EFORMAT && off == BAD[i].offset && why && strstr(why, BAD[i].reason),
                  "case %zu: rc %d offset %zu reason '%s' (want offset %zu, '%s')", i, rc, off, why ? why : "",
                  BAD[i].offset, BAD[i].reason);
        kvz_tokens toks;
        kvz_error err = {0};
        rc = kvz_tokenize(t, BAD[i].bytes, BAD[i].len, 1, &toks, &err);
        char want[64];
        snprintf(want, sizeof want, "at byte offset %zu", BAD[i].offset);
        KVZ_CHECK(rc == KVZ_EFORMAT && strstr(err.msg, want) && strstr(err.msg, BAD[i].reason),
                  "case %zu: tokenize gave %d '%s'", i, rc, err.msg);
        kvz_tokens_free(&toks);
    }
    const char good[] = "\xef\xbf\xbd \xef\xb7\x90 \xef\xbf\xbf \xf4\x8f\xbf\xbd \xf0\x9f\x98\x80";
    KVZ_CHECK(kvz_utf8_validate(good, sizeof good - 1, NULL, NULL) == KVZ_OK, "valid odd UTF-8 rejected");
}

static void check_empty_and_bos(const kvz_tokenizer *llama, const kvz_tokenizer *qwen)
{
    kvz_tokens toks;
    kvz_error err = {0};
    int rc = kvz_tokenize(llama, "", 0, 1, &toks, &err);
    KVZ_CHECK(rc == KVZ_OK && toks.n == 1 && toks.ids[0] == 128000 && toks.spans[0].start == 0 &&
                  toks.spans[0].end == 0, "llama3: empty text is [BOS] (0, 0)");
    kvz_tokens_free(&toks);
    rc = kvz_tokenize(llama, "hi", 2, 0, &toks, &err);
    KVZ_CHECK(rc == KVZ_OK && toks.n == 1 && toks.ids[0] != 128000, "llama3: no BOS without add_special");
    kvz_tokens_free(&toks);
    KVZ_CHECK(kvz_tokenizer_adds_bos(llama) && !kvz_tokenizer_adds_eos(llama), "llama3 adds BOS only");
    KVZ_CHECK(!kvz_tokenizer_adds_bos(qwen) && !kvz_tokenizer_adds_eos(qwen), "qwen3 adds nothing");
    int32_t im = kvz_tokenizer_token_id(qwen, "<|im_start|>", 12);
    int32_t think = kvz_tokenizer_token_id(qwen, "<think>", 7);
    KVZ_CHECK(im == 151644 && kvz_tokenizer_is_special(qwen, im), "qwen3 <|im_start|> is special %d", im);
    KVZ_CHECK(think == 151667 && !kvz_tokenizer_is_special(qwen, think), "qwen3 <think> is added, not special");
    KVZ_CHECK(kvz_tokenizer_token(qwen, -1) == NULL && kvz_tokenizer_token(qwen, 1 << 30) == NULL,
              "out-of-range ids have no token");
    KVZ_CHECK(kvz_tokenizer_token_id(qwen, "no such token here", 18) == -1, "unknown token string -> -1");
}

static void check_load_errors(void)
{
    kvz_tokenizer *t = NULL;
    kvz_error err = {0};
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hfdir", kvz_test_tmpdir());
    mkdir(dir, 0755);
    int rc = kvz_tokenizer_load(dir, &t, &err);
    KVZ_CHECK(rc == KVZ_ENOTFOUND && strstr(err.msg, "no tokenizer.json") && strstr(err.msg, "hfdir"),
              "directory without tokenizer.json: %d %s", rc, err.msg);
    rc = kvz_tokenizer_load(kvz_test_fixture("gguf/all_types.gguf"), &t, &err);
    KVZ_CHECK(rc == KVZ_ENOTFOUND && strstr(err.msg, "all_types.gguf: no tokenizer metadata"),
              "GGUF without tokenizer keys: %d %s", rc, err.msg);
    rc = kvz_tokenizer_load("/nonexistent/tokenizer.json", &t, &err);
    KVZ_CHECK(rc == KVZ_EIO && strstr(err.msg, "/nonexistent/tokenizer.json"), "missing file: %s", err.msg);
    KVZ_CHECK(t == NULL, "no tokenizer on failure");
}

/* Long runs exercise the regex engine's limits and the BPE heap. */
static void check_pathological(const kvz_tokenizer *t, const char *name)
{
    size_t n = 300000;
    char *s = malloc(n + 1);
    const char fills[] = {' ', 'a', '\n', '7'};
    for (size_t f = 0; f < sizeof fills; f++) {
        memset(s, fills[f], n);
        s[n] = '\0';
        kvz_tokens toks;
        kvz_error err = {0};
        int rc = kvz_tokenize(t, s, n, 0, &toks, &err);
        KVZ_CHECK(rc == KVZ_OK && toks.n > 0, "%s: %zu x 0x%02x: %s", name, n, fills[f], err.msg);
        size_t covered = rc == KVZ_OK ? toks.spans[toks.n - 1].end : 0;
        KVZ_CHECK(covered == n, "%s: last token of the 0x%02x run ends at %zu", name, fills[f], covered);
        kvz_tokens_free(&toks);
    }
    free(s);
}

int main(void)
{
    char a[1024], b[1024];
    kvz_tokenizer *llama = load(asset("tokenizers/llama3", a, sizeof a));
    kvz_tokenizer *qwen = load(asset("tokenizers/qwen3", b, sizeof b));
    const char *def = getenv("KVZAP_DEFAULT_MODEL");
    kvz_tokenizer *smol = def ? load(def) : NULL;
    if (llama)
        check_invalid_utf8(llama);
    if (llama && qwen)
        check_empty_and_bos(llama, qwen);
    check_load_errors();
    if (llama)
        check_pathological(llama, "llama3");
    if (qwen)
        check_pathological(qwen, "qwen3");
    if (smol)
        check_pathological(smol, "smollm2");
    kvz_tokenizer_free(llama);
    kvz_tokenizer_free(qwen);
    kvz_tokenizer_free(smol);
    return kvz_test_done();
}
