/* kvzip_chunked: chunked KVzip+ scoring (spec section 2, kvpress's KVzip
 * press with the KVzip+ normalization) for documents longer than one
 * repeat-the-text pass should take.
 *
 * The prefill sequence is the chat-templated user turn holding the text
 * (template prefix + text, as kvpress's pipeline renders the context); the
 * context P = [context_start, context_end) is the text's tokens (prefix
 * excluded). The context is prefilled once; then for each chunk of
 * chunk_size context tokens the repeat input (instruction, for chunk c > 0
 * followed by the last 8 ids of chunk c-1; then the template suffix ids;
 * then the chunk's own ids) runs on top of the cache, is scored against the
 * sink + chunk + own keys only (softmax over that subset), and is dropped
 * from the cache (kvz_forward_truncate). Sinks are the first min(4, chunk
 * start) ABSOLUTE cache positions (template-prefix tokens for chat models).
 * Every context position gets its computed score: kvpress's "score 1.0 for
 * the first 4 positions" applies to absolute positions 0..3, which it then
 * overwrites wherever they are context, so no context position keeps it (spec
 * section 2 says otherwise; we follow kvpress). Exact details follow kvpress
 * (see the notes in kvzip_chunked.c). */
#ifndef KVZ_KVZIP_CHUNKED_H
#define KVZ_KVZIP_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../model/chat_template.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"

typedef struct kvz_chunked_prompt {
    int32_t *ids;        /* [n_ids] the prefill sequence */
    size_t n_ids;
    size_t context_start, context_end; /* P within ids */
    int32_t *suffix_ids; /* [n_suffix] template suffix used in every repeat input */
    size_t n_suffix;
} kvz_chunked_prompt;

/* Renders and tokenizes `text` (stripped like Python str.strip()) as
 * kvpress's pipeline does: [user: text] with a generation prompt and thinking
 * disabled, cut after the text; tokenized without added special tokens.
 * context_start = token count of the template prefix; context_end = n_ids.
 * Errors: KVZ_EFORMAT when the text cannot be located (empty after strip, a
 * NUL byte, not rendered verbatim, or the prefix does not end on a token
 * boundary) or is not valid UTF-8; KVZ_EINVAL for NULL arguments; the chat
 * renderer's and tokenizer's own errors. On error *out is empty. */
int kvz_chunked_prompt_build(const kvz_tokenizer *tok, const kvz_chat_template *tpl,
                             const char *text, size_t len, kvz_chunked_prompt *out,
                             kvz_error *err);
void kvz_chunked_prompt_free(kvz_chunked_prompt *p);

/* Scores the sampled context positions (ascending, absolute, within P).
 * out_hidden: [L, n_pos, D] the prefill pass's x (post input-RMSNorm) at those
 * positions, or NULL. out_logscores: [L, n_pos, Hkv], natural-log KVzip+
 * scores. Resets f first; f must have capacity for the context plus one
 * repeat input (about chunk_size + 30 tokens); on success the cache holds
 * exactly the prompt ids. chunk_size: context tokens per chunk (kvpress: 2048).
 * Errors: KVZ_EINVAL for chunk_size 0, positions outside P or not strictly
 * ascending, NULL arguments, a bad prompt; kvz_forward_run's errors (e.g.
 * KVZ_EINVAL when the capacity is too small); KVZ_ENOMEM. */
int kvz_kvzip_chunked_score(kvz_forward *f, const kvz_tokenizer *tok,
                            const kvz_chunked_prompt *p, size_t chunk_size,
                            const size_t *positions, size_t n_pos, float *out_hidden,
                            float *out_logscores, kvz_error *err);

#endif
