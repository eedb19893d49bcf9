/* fuzz_tok_check: encoding checks the tokenizer targets share (header-only):
 * kvz_tokenize, then the contracts tokenizer.h states and a fuzzer can check
 * without a reference: every span lies inside the text (start <= end, byte
 * offsets within len, on code-point counts that do not exceed the text's),
 * every id is in the vocabulary, kvz_tokenize_count agrees with the count
 * (limit = n gives n, limit = n - 1 gives n, "more than limit"), and decoding
 * the ids works. abort() on a broken contract. */
#ifndef KVZ_FUZZ_TOK_CHECK_H
#define KVZ_FUZZ_TOK_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "model/tokenizer.h"

static void kvz_fuzz_tok_fail(const char *what, size_t i)
{
    fprintf(stderr, "fuzz: tokenizer contract broken: %s (token %zu)\n", what, i);
    abort();
}

static void kvz_fuzz_tok_check(const kvz_tokenizer *tok, const char *text, size_t len,
                               int add_special)
{
    kvz_tokens toks;
    kvz_error err = {0};
    int rc = kvz_tokenize(tok, text, len, add_special, &toks, &err);
    if (rc != KVZ_OK) {
        kvz_tokens_free(&toks);
        return;
    }
    size_t n_cp = 0;
    for (size_t i = 0; i < len; i++)
        n_cp += ((unsigned char)text[i] & 0xc0) != 0x80;
    size_t vocab = kvz_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < toks.n; i++) {
        const kvz_token_span *s = &toks.spans[i];
        if (s->byte_start > s->byte_end || s->byte_end > len)
            kvz_fuzz_tok_fail("byte span outside the text", i);
        if (s->start > s->end || s->end > n_cp)
            kvz_fuzz_tok_fail("code-point span outside the text", i);
        if (toks.ids[i] < 0 || (size_t)toks.ids[i] >= vocab)
            kvz_fuzz_tok_fail("id outside the vocabulary", i);
    }
    size_t n = 0;
    if (kvz_tokenize_count(tok, text, len, add_special, toks.n, &n, &err) != KVZ_OK ||
        n != toks.n)
        kvz_fuzz_tok_fail("kvz_tokenize_count(limit = n) differs from kvz_tokenize", toks.n);
    if (toks.n > 0 &&
        (kvz_tokenize_count(tok, text, len, add_special, toks.n - 1, &n, &err) != KVZ_OK ||
         n != toks.n))
        kvz_fuzz_tok_fail("kvz_tokenize_count(limit = n - 1) is not n", toks.n);
    char *out = NULL;
    size_t out_len = 0;
    if (kvz_detokenize_bytes(tok, toks.ids, toks.n, 0, &out, &out_len, &err) == KVZ_OK)
        free(out);
    out = NULL;
    if (kvz_detokenize(tok, toks.ids, toks.n, 1, &out, &err) == KVZ_OK)
        free(out);
    kvz_tokens_free(&toks);
}

#endif
