/* test_oracle_doc: the single-pass oracle's per-document pieces that the
 * parity fixtures do not pin down: P/R ranges hold exactly the text's two
 * copies (detokenized), position sampling is deterministic, ascending,
 * distinct and uniform, and bad texts fail with a clear message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "../kvzip_oracle/oracle_doc.h"

static kvz_tokenizer *tok;
static kvz_chat_template *tpl;

static char *detok(const int32_t *ids, size_t n)
{
    char *s = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_detokenize(tok, ids, n, 0, &s, &err), err);
    return s;
}

/* The text's copies: both ranges decode to strip(text). */
static void check_ranges(const char *text)
{
    kvz_oracle_prompt p;
    kvz_error err = {0};
    int rc = kvz_oracle_prompt_build(tok, tpl, text, strlen(text), &p, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    char *stripped = kvz_py_strip(text);
    char *ctx = detok(p.ids + p.context_start, p.context_end - p.context_start);
    char *rep = detok(p.ids + p.repeat_start, p.repeat_end - p.repeat_start);
    KVZ_CHECK(ctx && strcmp(ctx, stripped) == 0, "context decodes to '%s'", ctx ? ctx : "");
    KVZ_CHECK(rep && strcmp(rep, stripped) == 0, "repeat decodes to '%s'", rep ? rep : "");
    KVZ_CHECK(p.context_end <= p.repeat_start && p.repeat_end <= p.n_ids, "ranges ordered");
    free(stripped);
    free(ctx);
    free(rep);
    kvz_oracle_prompt_free(&p);
}

static void test_ranges(void)
{
    check_ranges("The cache grows with every token.");
    check_ranges("  \n\tLeading and trailing whitespace is stripped.\n\n  ");
    check_ranges("Ünïcödé façade: naïve café, 東京, emoji 🙂 at the end 🙂");
    check_ranges("def f(x):\n    return x * 2  # code\n");
}

static void test_bad_texts(void)
{
    kvz_oracle_prompt p;
    kvz_error err = {0};
    KVZ_CHECK(kvz_oracle_prompt_build(tok, tpl, " \n\t ", 4, &p, &err) == KVZ_EINVAL,
              "blank text refused");
    KVZ_CHECK(strstr(err.msg, "empty") != NULL, "message: %s", err.msg);
    /* "user" is part of the ChatML template text: three or more occurrences */
    KVZ_CHECK(kvz_oracle_prompt_build(tok, tpl, "user", 4, &p, &err) == KVZ_EFORMAT,
              "text inside the template refused");
    KVZ_CHECK(strstr(err.msg, "cannot be located") != NULL, "message: %s", err.msg);
}

static void test_sampling(void)
{
    size_t a[600], b[600];
    size_t n = kvz_oracle_sample_positions(10, 1010, 500, 7, 42, a);
    KVZ_CHECK(n == 500, "500 sampled, got %zu", n);
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= a[i] >= 10 && a[i] < 1010 && (i == 0 || a[i] > a[i - 1]);
    KVZ_CHECK(ok, "ascending, distinct, in range");
    KVZ_CHECK(kvz_oracle_sample_positions(10, 1010, 500, 7, 42, b) == 500 &&
                  memcmp(a, b, sizeof(size_t) * 500) == 0,
              "same seed and key: same positions");
    kvz_oracle_sample_positions(10, 1010, 500, 8, 42, b);
    KVZ_CHECK(memcmp(a, b, sizeof(size_t) * 500) != 0, "another seed: other positions");
    n = kvz_oracle_sample_positions(3, 300, 500, 7, 42, a);
    ok = n == 297;
    for (size_t i = 0; ok && i < n; i++)
        ok = a[i] == 3 + i;
    KVZ_CHECK(ok, "short context: every position once (%zu)", n);
    /* uniformity: each of 40 positions drawn 10 of 40 at a time over 4000 keys */
    double counts[40] = {0};
    for (uint64_t key = 0; key < 4000; key++) {
        size_t m = kvz_oracle_sample_positions(0, 40, 10, 1, key, a);
        for (size_t i = 0; i < m; i++)
            counts[a[i]] += 1;
    }
    double chi2 = 0, expect = 1000.0;
    for (int i = 0; i < 40; i++)
        chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
    KVZ_CHECK(chi2 < 80.0, "chi-square over 40 cells %.1f (df 39; p < 1e-4 above 80)", chi2);
}

int main(void)
{
    kvz_error err = {0};
    const char *model = getenv("KVZAP_DEFAULT_MODEL");
    if (!model)
        kvz_test_skip("KVZAP_DEFAULT_MODEL not set");
    KVZ_CHECK_OK(kvz_tokenizer_load(model, &tok, &err), err);
    KVZ_CHECK_OK(kvz_chat_template_load(model, NULL, &tpl, &err), err);
    if (tok && tpl) {
        test_ranges();
        test_bad_texts();
    }
    test_sampling();
    kvz_tokenizer_free(tok);
    kvz_chat_template_free(tpl);
    return kvz_test_done();
}
