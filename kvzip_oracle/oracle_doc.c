/* oracle_doc: one document through the single-pass KVzip+ oracle: the repeat
 * prompt and its P/R ranges (spec 1.1), seeded position sampling (1.4), and
 * the forward pass whose taps give hidden states and log-scores (1.2/1.3).
 *
 * P/R (1.1): the rendered prompt is split on t = strip(text) into
 * prefix, middle, rest (t must occur exactly twice, as Python's
 * `prefix, middle, rest = prompt.split(t)` requires); with m[k] the start of
 * token k in code points (m[n] = total length), each range bound is the first
 * k with m[k] >= the boundary's code-point offset. */
#include "oracle_doc.h"

#include <stdlib.h>
#include <string.h>

#include "../common/kvz_utf8.h"
#include "kvzip_score.h"

/* ---------- prompt (spec 1.1) ---------- */

/* Byte offset of the next occurrence of needle in hay[from..), or SIZE_MAX. */
static size_t find_from(const char *hay, size_t hay_len, size_t from, const char *needle,
                        size_t needle_len)
{
    for (size_t i = from; i + needle_len <= hay_len; i++)
        if (memcmp(hay + i, needle, needle_len) == 0)
            return i;
    return SIZE_MAX;
}

/* Number of code points in s[0..len) (s valid UTF-8). */
static size_t count_code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* First k with m[k] >= offset (m[n] = total), m in code points. */
static size_t first_token_at(const kvz_tokens *toks, size_t offset)
{
    for (size_t k = 0; k < toks->n; k++)
        if (toks->spans[k].start >= offset)
            return k;
    return toks->n;
}

/* Byte offsets of the two copies of t in the rendering, or an error. */
static int locate_copies(const char *rendered, size_t rlen, const char *t, size_t tlen,
                         size_t *first, size_t *second, kvz_error *err)
{
    size_t a = find_from(rendered, rlen, 0, t, tlen);
    size_t b = a == SIZE_MAX ? SIZE_MAX : find_from(rendered, rlen, a + tlen, t, tlen);
    size_t c = b == SIZE_MAX ? SIZE_MAX : find_from(rendered, rlen, b + tlen, t, tlen);
    if (b == SIZE_MAX)
        return kvz_fail(err, KVZ_EFORMAT,
                        "the text does not appear verbatim twice in the rendered repeat "
                        "prompt (the chat template changes it), so the copy cannot be located");
    if (c != SIZE_MAX)
        return kvz_fail(err, KVZ_EFORMAT,
                        "the text occurs more than twice in the rendered repeat prompt (it is "
                        "part of the template text), so the copy cannot be located");
    *first = a;
    *second = b;
    return KVZ_OK;
}

static int ranges_from_offsets(const kvz_tokens *toks, const char *rendered, size_t a, size_t b,
                               size_t tlen, kvz_oracle_prompt *out, kvz_error *err)
{
    size_t cp_prefix = count_code_points(rendered, a);
    size_t cp_t = count_code_points(rendered + a, tlen);
    size_t cp_middle = count_code_points(rendered + a + tlen, b - a - tlen);
    out->context_start = first_token_at(toks, cp_prefix);
    out->context_end = first_token_at(toks, cp_prefix + cp_t);
    out->repeat_start = first_token_at(toks, cp_prefix + cp_t + cp_middle);
    out->repeat_end = first_token_at(toks, cp_prefix + 2 * cp_t + cp_middle);
    if (out->context_end <= out->context_start || out->repeat_end <= out->repeat_start)
        return kvz_fail(err, KVZ_EFORMAT, "the repeat prompt has an empty context or repeat range");
    return KVZ_OK;
}

int kvz_oracle_prompt_build(const kvz_tokenizer *tok, const kvz_chat_template *tpl,
                            const char *text, size_t len, kvz_oracle_prompt *out,
                            kvz_error *err)
{
    memset(out, 0, sizeof *out);
    if (!tok || !tpl || !text)
        return kvz_fail(err, KVZ_EINVAL, "kvz_oracle_prompt_build: NULL argument");
    if (memchr(text, 0, len))
        return kvz_fail(err, KVZ_EFORMAT, "the text contains a NUL byte");
    size_t b0, b1;
    kvz_py_strip_span(text, len, &b0, &b1);
    if (b1 <= b0)
        return kvz_fail(err, KVZ_EINVAL, "the text is empty after stripping whitespace");
    char *t = malloc(b1 - b0 + 1), *rendered = NULL;
    if (!t)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory");
    memcpy(t, text + b0, b1 - b0);
    t[b1 - b0] = '\0';
    kvz_tokens toks = {0};
    int rc = kvz_chat_render_repeat_prompt(tpl, t, &rendered, err);
    size_t rlen = rendered ? strlen(rendered) : 0, a = 0, b = 0;
    rc = rc ? rc : locate_copies(rendered, rlen, t, b1 - b0, &a, &b, err);
    rc = rc ? rc : kvz_tokenize(tok, rendered, rlen, 1, &toks, err);
    rc = rc ? rc : ranges_from_offsets(&toks, rendered, a, b, b1 - b0, out, err);
    if (rc == KVZ_OK) {
        out->ids = toks.ids;
        out->n_ids = toks.n;
        toks.ids = NULL;
    }
    kvz_tokens_free(&toks);
    free(rendered);
    free(t);
    return rc;
}

void kvz_oracle_prompt_free(kvz_oracle_prompt *p)
{
    if (!p)
        return;
    free(p->ids);
    memset(p, 0, sizeof *p);
}

/* ---------- sampling (spec 1.4) ---------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Knuth's selection sampling (Algorithm S): each subset of size k equally
 * likely, output already ascending, no memory. */
size_t kvz_oracle_sample_positions(size_t p0, size_t p1, size_t n_tokens, uint64_t seed,
                                   uint64_t doc_key, size_t *out)
{
    size_t m = p1 > p0 ? p1 - p0 : 0, k = n_tokens < m ? n_tokens : m, chosen = 0;
    uint64_t state = seed ^ (doc_key * 0xD1B54A32D192ED03ull);
    for (size_t i = 0; i < m && chosen < k; i++) {
        double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53;
        if ((double)(m - i) * u < (double)(k - chosen))
            out[chosen++] = p0 + i;
    }
    return chosen;
}

/* ---------- scoring (spec 1.2/1.3) ---------- */

typedef struct score_ctx {
    const kvz_oracle_prompt *p;
    const kvz_model_config *cfg;
    const size_t *positions;
    size_t n_pos;
    float *out_hidden;    /* [L, n_pos, D] or NULL */
    float *out_logscores; /* [L, n_pos, Hkv] */
    float *all_scores;    /* [|P|, Hkv] scratch */
    kvz_kvzip_ws ws;      /* the score's scratch, kept across layers */
} score_ctx;

static int score_tap(const kvz_layer_tap *tap, void *user, kvz_error *err)
{
    score_ctx *c = user;
    const kvz_oracle_prompt *p = c->p;
    size_t D = c->cfg->d_model, Hkv = c->cfg->n_kv_heads, l = tap->layer;
    int rc = kvz_kvzip_score_layer(tap, c->cfg, p->context_start, p->context_end, p->repeat_start,
                                   p->repeat_end, KVZ_F32, &c->ws, c->all_scores, err);
    if (rc)
        return rc;
    float *scores = c->out_logscores + l * c->n_pos * Hkv;
    float *hidden = c->out_hidden ? c->out_hidden + l * c->n_pos * D : NULL;
    for (size_t s = 0; s < c->n_pos; s++) {
        size_t i = c->positions[s];
        memcpy(scores + s * Hkv, c->all_scores + (i - p->context_start) * Hkv, Hkv * sizeof(float));
        if (hidden)
            memcpy(hidden + s * D, tap->x + i * D, D * sizeof(float));
    }
    return KVZ_OK;
}

int kvz_oracle_check_positions(const kvz_oracle_prompt *p, const size_t *positions,
                               size_t n_pos, kvz_error *err)
{
    for (size_t s = 0; s < n_pos; s++) {
        if (positions[s] < p->context_start || positions[s] >= p->context_end ||
            (s > 0 && positions[s] <= positions[s - 1]))
            return kvz_fail(err, KVZ_EINVAL,
                            "sample position %zu (#%zu) is not ascending within the context "
                            "[%zu, %zu)",
                            positions[s], s, p->context_start, p->context_end);
    }
    return KVZ_OK;
}

int kvz_oracle_score_single(kvz_forward *f, const kvz_oracle_prompt *p, const size_t *positions,
                            size_t n_pos, float *out_hidden, float *out_logscores,
                            kvz_error *err)
{
    if (!f || !p || !p->ids || !out_logscores || (n_pos && !positions))
        return kvz_fail(err, KVZ_EINVAL, "kvz_oracle_score_single: NULL argument");
    int rc = kvz_oracle_check_positions(p, positions, n_pos, err);
    if (rc)
        return rc;
    const kvz_model_config *cfg = kvz_forward_config(f);
    if (!kvz_backend_host_memory(kvz_forward_backend(f)))
        return kvz_fail(err, KVZ_EINVAL, "kvz_oracle_score_single: the forward runs on %s; "
                        "this needs host memory (the oracle engine runs any backend)",
                        kvz_backend_name(kvz_forward_backend(f)));
    size_t nP = p->context_end - p->context_start;
    score_ctx c = {p, cfg, positions, n_pos, out_hidden, out_logscores, NULL, {0}};
    c.all_scores = malloc(nP * cfg->n_kv_heads * sizeof(float));
    if (!c.all_scores)
        return kvz_fail(err, KVZ_ENOMEM, "out of memory (%zu context scores)", nP);
    kvz_forward_reset(f);
    rc = kvz_forward_run(f, p->ids, p->n_ids, score_tap, &c, KVZ_LOGITS_NONE, NULL, err);
    kvz_forward_reset(f);
    kvz_kvzip_ws_free(&c.ws);
    free(c.all_scores);
    return rc;
}
