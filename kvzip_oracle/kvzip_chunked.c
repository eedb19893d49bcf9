/* kvzip_chunked: the prompt of chunked KVzip+ scoring (spec section 2) and
 * the chunk plan; the scoring passes live in kvzip_chunked_score.c.
 *
 * What kvpress does (NVIDIA/kvpress: kvpress/pipeline.py preprocess,
 * kvpress/presses/kvzip_press.py), restated in our words:
 * - Context ids. The pipeline renders [user: context + separator] with
 *   add_generation_prompt=True and enable_thinking=False (separator: '#'
 *   repeated len(context)+10 times), cuts the rendering at the separator and
 *   tokenizes the part before it with add_special_tokens=False. Whatever BOS
 *   the template writes as text is there; the tokenizer adds none. The part
 *   after the separator is the "question suffix".
 * - prefix_length = number of tokens of the template prefix alone (the text
 *   before the content, found with a dummy content), add_special_tokens=False.
 *   Context positions are [prefix_length, n_ids). We locate the prefix in the
 *   same rendering and check that the joint tokenization really splits there.
 * - Suffix ids: the tokens of what follows the user content when rendering
 *   with a generation prompt and thinking disabled (for ChatML:
 *   "<|im_end|>\n<|im_start|>assistant\n").
 * - Chunks: chunk_size context tokens each (kvpress: 2048), the last one
 *   shorter. Repeat input of chunk 0: tokens of "\n\nRepeat the previous
 *   context exactly."; of chunk c > 0: tokens of "\n\nRepeat the part of the
 *   previous context exactly, starting with" then the last 8 ids of chunk
 *   c-1 (fewer if it is shorter). Then the suffix ids, then the chunk's ids.
 *   All instruction texts are tokenized with add_special_tokens=False.
 * - The repeat input is an ordinary forward over the whole cache (prefix,
 *   all context, its own causal keys) at positions n_ids.. ; only the
 *   scoring softmax is restricted. After each layer kvpress cuts the cache
 *   back to the context (we truncate after the pass: same keys).
 * - Scoring keys, per chunk starting at absolute position s: the sinks
 *   [0, min(4, s)) (absolute cache positions: template-prefix tokens for chat
 *   models), the chunk [s, e), and the repeat input's own keys with a causal
 *   mask among themselves. Softmax over that subset only, per query row.
 * - Queries: every row of the repeat input (instruction, previous-chunk
 *   tail, suffix and the copied chunk alike), every query head of the KV
 *   group; the score of key i is the max over both.
 * - KVzip+ (kvzip_plus_normalization=True): each weight a[j,i] is divided by
 *   ||x_j|| (the attention input of repeat row j, post input-RMSNorm) and
 *   multiplied by ||W_O^g v_i||, before the max.
 * - First 4 positions: kvpress initialises score 1.0 at ABSOLUTE positions
 *   0..3 and then overwrites [prefix_length, n_ids) chunk by chunk, so the
 *   1.0 only survives on template-prefix tokens; every context position gets
 *   its computed score (also when prefix_length < 4). We output context
 *   positions only, so we force nothing. (Spec section 2's "first 4 context
 *   positions get 1.0" does not match kvpress; we follow kvpress.) kvpress
 *   0.5.5 on PyPI instead sets absolute positions 0..3 to max + 1 after
 *   scoring (never evicted): again only template tokens for chat models; it
 *   also makes chunk_size a press parameter. Its scores match ours (the
 *   reference script cross-checks them).
 * - Hidden states for the surrogate: the prefill pass's x at the positions. */
#include "kvzip_chunked.h"

#include <stdlib.h>
#include <string.h>

#include "../common/kvz_utf8.h"

static int tokenize_plain(const kvz_tokenizer *tok, const char *s, size_t len, kvz_tokens *out,
                          const char *what, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = kvz_tokenize(tok, s, len, 0, out, err);
    if (rc != KVZ_OK)
        return kvz_fail(err, rc, "kvzip chunked: tokenizing the %s: %s", what, err->msg);
    return KVZ_OK;
}

/* rendered = template(user: t + sep, generation prompt, no thinking). */
static int render_with_separator(const kvz_chat_template *tpl, const char *t, size_t tlen,
                                 char **rendered, char **sep_out, kvz_error *err)
{
    size_t slen = tlen + 10;
    char *content = malloc(tlen + slen + 1);
    char *sep = malloc(slen + 1);
    if (!content || !sep) {
        free(content);
        free(sep);
        return kvz_fail(err, KVZ_ENOMEM, "kvzip chunked: out of memory rendering the prompt");
    }
    memcpy(content, t, tlen);
    memset(content + tlen, '#', slen);
    content[tlen + slen] = '\0';
    memset(sep, '#', slen);
    sep[slen] = '\0';
    kvz_chat_message msg = {"user", content};
    kvz_chat_options opt = {1, 1, NULL};
    int rc = kvz_chat_render(tpl, &msg, 1, &opt, rendered, err);
    free(content);
    if (rc != KVZ_OK) {
        free(sep);
        return rc;
    }
    *sep_out = sep;
    return KVZ_OK;
}

/* The byte offset where t + sep starts in rendered, or -1. */
static long locate_text(const char *rendered, const char *t, size_t tlen, const char *sep)
{
    size_t slen = strlen(sep);
    for (const char *p = strstr(rendered, sep); p; p = strstr(p + 1, sep)) {
        size_t at = (size_t)(p - rendered);
        if (at >= tlen && memcmp(p - tlen, t, tlen) == 0 &&
            (size_t)(p - rendered) + slen <= strlen(rendered))
            return (long)(at - tlen);
    }
    return -1;
}

/* Tokenizes prefix+text (ids) and the prefix alone; checks the split. */
static int tokenize_context(const kvz_tokenizer *tok, const char *rendered, size_t prefix_len,
                            size_t tlen, kvz_chunked_prompt *out, kvz_error *err)
{
    kvz_tokens all, pre;
    int rc = tokenize_plain(tok, rendered, prefix_len + tlen, &all, "context", err);
    if (rc == KVZ_OK)
        rc = tokenize_plain(tok, rendered, prefix_len, &pre, "template prefix", err);
    else
        memset(&pre, 0, sizeof pre);
    if (rc == KVZ_OK) {
        size_t n = pre.n;
        int clean = n < all.n && (n == 0 || memcmp(all.ids, pre.ids, n * sizeof *pre.ids) == 0) &&
                    all.spans[n].byte_start == prefix_len;
        if (!clean)
            rc = kvz_fail(err, KVZ_EFORMAT,
                          "kvzip chunked: text not locatable: the %zu-token template prefix "
                          "(%zu bytes) does not end on a token boundary of the rendered context",
                          n, prefix_len);
        else if (!(out->ids = malloc(all.n * sizeof *out->ids)))
            rc = kvz_fail(err, KVZ_ENOMEM, "kvzip chunked: out of memory");
        else {
            memcpy(out->ids, all.ids, all.n * sizeof *out->ids);
            out->n_ids = all.n;
            out->context_start = n;
            out->context_end = all.n;
        }
    }
    kvz_tokens_free(&all);
    kvz_tokens_free(&pre);
    return rc;
}

static int tokenize_suffix(const kvz_tokenizer *tok, const char *suffix, kvz_chunked_prompt *out,
                           kvz_error *err)
{
    kvz_tokens s;
    int rc = tokenize_plain(tok, suffix, strlen(suffix), &s, "template suffix", err);
    if (rc == KVZ_OK && s.n) {
        out->suffix_ids = malloc(s.n * sizeof *out->suffix_ids);
        if (!out->suffix_ids)
            rc = kvz_fail(err, KVZ_ENOMEM, "kvzip chunked: out of memory");
        else
            memcpy(out->suffix_ids, s.ids, s.n * sizeof *s.ids);
        out->n_suffix = out->suffix_ids ? s.n : 0;
    }
    kvz_tokens_free(&s);
    return rc;
}

static int check_text(const char *text, size_t len, size_t *b, size_t *e, kvz_error *err)
{
    size_t bad = 0;
    const char *why = NULL;
    if (!text)
        return kvz_fail(err, KVZ_EINVAL, "kvzip chunked: NULL text");
    if (kvz_utf8_validate(text, len, &bad, &why) != KVZ_OK)
        return kvz_fail(err, KVZ_EFORMAT, "kvzip chunked: text: invalid UTF-8 at byte %zu (%s)",
                        bad, why ? why : "bad sequence");
    if (memchr(text, '\0', len))
        return kvz_fail(err, KVZ_EFORMAT,
                        "kvzip chunked: text not locatable: it contains a NUL byte");
    kvz_py_strip_span(text, len, b, e);
    if (*b == *e)
        return kvz_fail(err, KVZ_EFORMAT,
                        "kvzip chunked: text not locatable: it is empty after strip "
                        "(%zu bytes of whitespace)",
                        len);
    return KVZ_OK;
}

int kvz_chunked_prompt_build(const kvz_tokenizer *tok, const kvz_chat_template *tpl,
                             const char *text, size_t len, kvz_chunked_prompt *out,
                             kvz_error *err)
{
    if (!out)
        return kvz_fail(err, KVZ_EINVAL, "kvzip chunked: NULL output prompt");
    memset(out, 0, sizeof *out);
    if (!tok || !tpl)
        return kvz_fail(err, KVZ_EINVAL, "kvzip chunked: NULL tokenizer or chat template");
    size_t b, e;
    int rc = check_text(text, len, &b, &e, err);
    if (rc != KVZ_OK)
        return rc;
    const char *t = text + b;
    size_t tlen = e - b;
    char *rendered = NULL, *sep = NULL;
    rc = render_with_separator(tpl, t, tlen, &rendered, &sep, err);
    if (rc != KVZ_OK)
        return rc;
    long at = locate_text(rendered, t, tlen, sep);
    if (at < 0)
        rc = kvz_fail(err, KVZ_EFORMAT,
                      "kvzip chunked: text not locatable: the %s template does not render the "
                      "%zu-byte text verbatim",
                      kvz_chat_family_name(kvz_chat_template_family(tpl)), tlen);
    else
        rc = tokenize_context(tok, rendered, (size_t)at, tlen, out, err);
    if (rc == KVZ_OK)
        rc = tokenize_suffix(tok, rendered + (size_t)at + tlen + strlen(sep), out, err);
    free(rendered);
    free(sep);
    if (rc != KVZ_OK)
        kvz_chunked_prompt_free(out);
    return rc;
}

void kvz_chunked_prompt_free(kvz_chunked_prompt *p)
{
    if (!p)
        return;
    free(p->ids);
    free(p->suffix_ids);
    memset(p, 0, sizeof *p);
}
