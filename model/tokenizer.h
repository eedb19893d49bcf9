/* tokenizer: byte-level BPE tokenizer that reproduces Hugging Face
 * `tokenizers` (the fast tokenizer behind transformers' AutoTokenizer)
 * exactly: ids AND offsets, as tok(text, return_offsets_mapping=True) gives
 * them with the default add_special_tokens, and tok.decode(ids).
 *
 * Sources: a tokenizer.json (+ optional tokenizer_config.json), an HF model
 * directory holding them, or a GGUF file (tokenizer.ggml.* metadata; the
 * pipeline is chosen from tokenizer.ggml.pre).
 *
 * Pipeline, as HF runs it: added/special tokens are matched in the raw text
 * first (leftmost-longest; lstrip/rstrip/single_word/normalized honoured);
 * the text between them is normalized (none or NFC, offsets mapped back to
 * the original text), pre-tokenized (Split regex "Isolated", Digits,
 * ByteLevel with or without the GPT-2 regex), BPE-merged by merge rank, then
 * post-processed (ByteLevel offset trimming, TemplateProcessing BOS/EOS).
 *
 * Offsets: start/end in Unicode code points of the ORIGINAL text (what Python
 * reports), plus the same span in bytes. Special tokens added by the
 * post-processor get (0, 0). A token that covers only some bytes of a
 * character spans the whole character, as in HF. */
#ifndef KVZ_TOKENIZER_H
#define KVZ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../common/kvz_utf8.h"
#include "gguf.h"

typedef struct kvz_tokenizer kvz_tokenizer; /* opaque, immutable after load */

typedef struct kvz_token_span {
    size_t start, end;           /* code points in the original text */
    size_t byte_start, byte_end; /* bytes in the original text */
} kvz_token_span;

/* The result of kvz_tokenize; owned by the caller, freed with kvz_tokens_free. */
typedef struct kvz_tokens {
    size_t n;
    int32_t *ids;          /* [n] */
    kvz_token_span *spans; /* [n] */
    size_t cap;            /* internal */
} kvz_tokens;

/* model_path: a GGUF file, an HF model directory (tokenizer.json and, when
 * present, tokenizer_config.json), or a tokenizer.json file (its sibling
 * tokenizer_config.json is read when present). */
int kvz_tokenizer_load(const char *model_path, kvz_tokenizer **out, kvz_error *err);
int kvz_tokenizer_from_json(const char *tokenizer_json_path, const char *tokenizer_config_path_or_NULL,
                            kvz_tokenizer **out, kvz_error *err);
int kvz_tokenizer_from_gguf(const kvz_gguf *g, kvz_tokenizer **out, kvz_error *err);
void kvz_tokenizer_free(kvz_tokenizer *t);

/* text[0..len) must be valid UTF-8 (else KVZ_EFORMAT naming the byte offset
 * of the first bad byte). add_special: apply the tokenizer's BOS/EOS rule
 * (HF add_special_tokens=True). out is overwritten (call kvz_tokens_free on
 * it afterwards, whatever the status). */
int kvz_tokenize(const kvz_tokenizer *t, const char *text, size_t len, int add_special,
                 kvz_tokens *out, kvz_error *err);
void kvz_tokens_free(kvz_tokens *toks);

/* The number of tokens kvz_tokenize gives text, when that is at most limit;
 * otherwise *n = limit + 1 ("more than limit") -- decided without
 * tokenizing when a lower bound already exceeds limit, so the cost (time and
 * memory) is bounded by limit, not by len: every token covers at most
 * max_token_bytes non-whitespace bytes of the text (3x that under NFC, which
 * can shrink a sequence to a third), so a text with more non-whitespace
 * bytes than 3 * max_token_bytes * limit has more than limit tokens. A text
 * under the bound is tokenized in full (it is at most that long unless it is
 * mostly whitespace). Errors as kvz_tokenize. */
int kvz_tokenize_count(const kvz_tokenizer *t, const char *text, size_t len, int add_special,
                       size_t limit, size_t *n, kvz_error *err);

/* tokenizer.decode(ids, skip_special_tokens=skip_special): malloc'ed,
 * NUL-terminated UTF-8 (invalid byte sequences become U+FFFD as Rust's
 * from_utf8_lossy does; ids outside the vocabulary are dropped).
 * kvz_detokenize_bytes also gives the length (the text may contain NUL). */
int kvz_detokenize(const kvz_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                   kvz_error *err);
int kvz_detokenize_bytes(const kvz_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                         char **out, size_t *out_len, kvz_error *err);

/* --- lookups --- */
/* Ids run 0 .. vocab_size-1 (model vocabulary and added tokens together;
 * HF len(tokenizer)). */
size_t kvz_tokenizer_vocab_size(const kvz_tokenizer *t);
/* The token's string as HF stores it (byte-level spelling such as "Ġthe",
 * or an added token's content), NUL-terminated; NULL for an unused id. */
const char *kvz_tokenizer_token(const kvz_tokenizer *t, int32_t id);
/* Id of a token string (added tokens first, then the vocabulary), or -1. */
int32_t kvz_tokenizer_token_id(const kvz_tokenizer *t, const char *token, size_t len);
int kvz_tokenizer_is_special(const kvz_tokenizer *t, int32_t id);
int32_t kvz_tokenizer_bos_id(const kvz_tokenizer *t); /* -1 when none */
int32_t kvz_tokenizer_eos_id(const kvz_tokenizer *t); /* -1 when none */
/* Whether add_special prepends BOS / appends EOS. */
int kvz_tokenizer_adds_bos(const kvz_tokenizer *t);
int kvz_tokenizer_adds_eos(const kvz_tokenizer *t);
/* One line for `kvzap info`, e.g. "byte-level BPE, pre-tokenizer llama3,
 * 128256 tokens, no normalizer, adds BOS <|begin_of_text|>". */
const char *kvz_tokenizer_describe(const kvz_tokenizer *t);
/* Where it was loaded from (path). */
const char *kvz_tokenizer_source(const kvz_tokenizer *t);

/* kvz_tokenize rejects invalid UTF-8 with kvz_utf8_validate (common/kvz_utf8.h). */

#endif
