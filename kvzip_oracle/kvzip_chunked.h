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
 * from the cache (kvz_forward_truncate). The first 4 context positions score
 * 1.0 (log-score 0). Exact details follow kvpress (see the .c file's notes). */
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

/* Renders and tokenizes `text` (stripped like Python str.strip()). Errors:
 * KVZ_EFORMAT when the text cannot be located verbatim in the rendering. */
int kvz_chunked_prompt_build(const kvz_tokenizer *tok, const kvz_chat_template *tpl,
                             const char *text, size_t len, kvz_chunked_prompt *out,
                             kvz_error *err);
void kvz_chunked_prompt_free(kvz_chunked_prompt *p);

/* Scores the sampled context positions (ascending, absolute, within P).
 * out_hidden: [L, n_pos, D] the prefill pass's x (post input-RMSNorm) at those
 * positions, or NULL. out_logscores: [L, n_pos, Hkv]. Resets f first; f must
 * have capacity for the context plus one repeat input. */
int kvz_kvzip_chunked_score(kvz_forward *f, const kvz_tokenizer *tok,
                            const kvz_chunked_prompt *p, size_t chunk_size,
                            const size_t *positions, size_t n_pos, float *out_hidden,
                            float *out_logscores, kvz_error *err);

#endif
