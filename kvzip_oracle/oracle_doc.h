/* oracle_doc: one document through the single-pass KVzip+ oracle (spec 1):
 * the repeat prompt and its P/R ranges (1.1), the sampled positions (1.4),
 * and one forward pass whose layer taps yield the sampled hidden states and
 * log-scores (1.2/1.3). */
#ifndef KVZ_ORACLE_DOC_H
#define KVZ_ORACLE_DOC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../model/chat_template.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"

typedef struct kvz_oracle_prompt {
    int32_t *ids;  /* [n_ids] the tokenized repeat prompt */
    size_t n_ids;
    size_t context_start, context_end; /* P = [context_start, context_end) */
    size_t repeat_start, repeat_end;   /* R = [repeat_start, repeat_end) */
} kvz_oracle_prompt;

/* Spec 1.1: t = strip(text); render [user: t + instruction, assistant: t];
 * tokenize (add_special = 1); split the rendering on t and map character
 * offsets to token starts. Errors: KVZ_EINVAL (empty text after strip),
 * KVZ_EFORMAT ("the text does not appear verbatim twice in the rendered
 * prompt" when templating changes it; empty P or R). */
int kvz_oracle_prompt_build(const kvz_tokenizer *tok, const kvz_chat_template *tpl,
                            const char *text, size_t len, kvz_oracle_prompt *out,
                            kvz_error *err);
void kvz_oracle_prompt_free(kvz_oracle_prompt *p);

/* Spec 1.4: min(n_tokens, p1 - p0) distinct positions of [p0, p1), uniform
 * without replacement, ascending, determined by (seed, doc_key) alone.
 * out: [min(n_tokens, p1 - p0)]; returns that count. */
size_t kvz_oracle_sample_positions(size_t p0, size_t p1, size_t n_tokens, uint64_t seed,
                                   uint64_t doc_key, size_t *out);

/* KVZ_EINVAL unless positions[n_pos] ascend strictly inside P (what the
 * scoring passes accept; the message names the first bad one). */
int kvz_oracle_check_positions(const kvz_oracle_prompt *p, const size_t *positions,
                               size_t n_pos, kvz_error *err);

/* One causal pass over p->ids (f is reset first) on a host-memory backend
 * (cpu; the oracle engine runs any backend). positions: ascending,
 * absolute, within P. out_hidden: [L, n_pos, D] x of each layer at those
 * positions (NULL to skip); out_logscores: [L, n_pos, Hkv] y = ln s. */
int kvz_oracle_score_single(kvz_forward *f, const kvz_oracle_prompt *p, const size_t *positions,
                            size_t n_pos, float *out_hidden, float *out_logscores,
                            kvz_error *err);

#endif
