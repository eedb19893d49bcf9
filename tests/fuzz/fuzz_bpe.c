/* fuzz_bpe: byte-level BPE encoding of arbitrary text with fixed tokenizers
 * from tests/fixtures. The first input byte picks the tokenizer (bits 0-1:
 * the synthetic one with every pre-tokenizer feature, the tiny Llama-3
 * directory with its tokenizer_config.json, the tiny Qwen3 one, or the
 * synthetic one with string merges) and add_special (bit 7); the rest is the
 * text (invalid UTF-8 must be refused, not read past). Checks the encoding
 * contracts of fuzz_tok_check.h. */
#include <stdlib.h>

#include "fuzz_common.h"
#include "fuzz_tok_check.h"

static const char *const TOKENIZERS[] = {
    "tokenizer/synthetic/tokenizer.json",
    "tiny/llama3_f32",
    "tiny/qwen3_f16",
    "tokenizer/synthetic/tokenizer_string_merges.json",
};
#define N_TOK (sizeof TOKENIZERS / sizeof TOKENIZERS[0])
static kvz_tokenizer *g_tok[N_TOK];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < N_TOK; i++) {
        char path[2048];
        kvz_error err = {0};
        if (kvz_tokenizer_load(kvz_fuzz_fixture_path(TOKENIZERS[i], path, sizeof path), &g_tok[i],
                               &err) != KVZ_OK) {
            fprintf(stderr, "fuzz_bpe: %s\n", err.msg);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const kvz_tokenizer *tok = g_tok[(data[0] & 3) % N_TOK];
    kvz_fuzz_tok_check(tok, (const char *)data + 1, size - 1, (data[0] & 0x80) != 0);
    return 0;
}
