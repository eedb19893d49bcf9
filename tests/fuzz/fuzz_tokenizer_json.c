/* fuzz_tokenizer_json: model/tokenizer.h loading an arbitrary tokenizer.json
 * (model vocab and merges in both spellings, added tokens, normalizer,
 * pre-tokenizer and post-processor sections), then, when it loads, lookups
 * and the encoding checks of fuzz_tok_check.h on a fixed text that exercises
 * digits, punctuation, whitespace runs, added-token spellings, NFC and
 * multi-byte characters. */
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_tok_check.h"

static const char TEXT[] =
    "Hello, world!  It's 2024-05-01: 12345 tokens\n\n\tcaf\xc3\xa9 cafe\xcc\x81 "
    "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 <|im_start|>user <s></s> <|endoftext|> ab abab";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("tokenizer.json", path, sizeof path), data, size);
    kvz_tokenizer *tok = NULL;
    kvz_error err = {0};
    if (kvz_tokenizer_from_json(path, NULL, &tok, &err) != KVZ_OK) {
        kvz_tokenizer_free(tok);
        return 0;
    }
    (void)kvz_tokenizer_describe(tok);
    (void)kvz_tokenizer_bos_id(tok);
    (void)kvz_tokenizer_eos_id(tok);
    size_t vocab = kvz_tokenizer_vocab_size(tok);
    for (size_t id = 0; id < vocab && id < 64; id++) {
        const char *s = kvz_tokenizer_token(tok, (int32_t)id);
        if (s)
            (void)kvz_tokenizer_token_id(tok, s, strlen(s));
        (void)kvz_tokenizer_is_special(tok, (int32_t)id);
    }
    kvz_fuzz_tok_check(tok, TEXT, sizeof TEXT - 1, 1);
    kvz_fuzz_tok_check(tok, TEXT, sizeof TEXT - 1, 0);
    kvz_tokenizer_free(tok);
    return 0;
}
