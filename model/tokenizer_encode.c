/* tokenizer_encode: kvz_tokenize and kvz_detokenize, the HF pipeline run
 * end to end: added tokens in the raw text, normalization (NFC with
 * alignments), normalized added tokens, pre-tokenizer steps, BPE, then the
 * post-processor (ByteLevel offset trimming, TemplateProcessing specials).
 * Offsets are kept in original bytes while encoding and converted to code
 * points at the end (a span that starts or ends inside a character widens to
 * the whole character, as HF's alignments do). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef struct enc_ctx {
    const kvz_tokenizer *t;
    const char *text;
    size_t len;
    kvz_tokens *out;
    tok_bpe_scratch *scratch;
    tok_bpe_out bpe;
    kvz_error *err;
} enc_ctx;

/* A normalized view: text[0..len), and per byte its original span (align),
 * or the identity shifted by base when align is NULL. */
typedef struct norm_view {
    const char *text;
    size_t len;
    const uint32_t *align;
    size_t base;
} norm_view;

static int emit(enc_ctx *c, int32_t id, size_t byte_start, size_t byte_end)
{
    kvz_tokens *o = c->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 256;
        int32_t *ids = realloc(o->ids, cap * sizeof *ids);
        if (!ids)
            return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
        o->ids = ids;
        kvz_token_span *sp = realloc(o->spans, cap * sizeof *sp);
        if (!sp)
            return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
        o->spans = sp;
        o->cap = cap;
    }
    o->ids[o->n] = id;
    o->spans[o->n++] = (kvz_token_span){0, 0, byte_start, byte_end};
    return KVZ_OK;
}

/* Original byte span of normalized bytes [a, b) (b > a). */
static void view_span(const norm_view *v, size_t a, size_t b, size_t *start, size_t *end)
{
    if (v->align) {
        *start = v->align[2 * a];
        *end = v->align[2 * (b - 1) + 1];
    } else {
        *start = v->base + a;
        *end = v->base + b;
    }
}

/* Pre-tokenize and BPE the normalized bytes [a, b). */
static int encode_words(enc_ctx *c, const norm_view *v, size_t a, size_t b)
{
    tok_ranges r = {0};
    int rc = tok_ranges_push(&r, a, b) ? kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory") : KVZ_OK;
    for (size_t s = 0; s < c->t->n_pre && rc == KVZ_OK; s++)
        rc = tok_pre_apply(&c->t->pre[s], v->text, &r, c->err);
    for (size_t i = 0; i < r.n && rc == KVZ_OK; i++) {
        c->bpe.n = 0;
        size_t w0 = r.v[i].start;
        if (tok_bpe_word(c->t, (const unsigned char *)v->text + w0, r.v[i].end - w0, c->scratch, &c->bpe)) {
            rc = kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
            break;
        }
        size_t pos = w0;
        for (size_t k = 0; k < c->bpe.n && rc == KVZ_OK; k++) {
            size_t s0, s1;
            view_span(v, pos, pos + c->bpe.lens[k], &s0, &s1);
            pos += c->bpe.lens[k];
            rc = emit(c, c->bpe.ids[k], s0, s1);
        }
    }
    tok_ranges_free(&r);
    return rc;
}

/* Normalized added tokens first, then the words between them. */
static int encode_normalized(enc_ctx *c, const norm_view *v)
{
    if (c->t->norm_set.n == 0)
        return encode_words(c, v, 0, v->len);
    tok_split *sp = NULL;
    size_t n = 0;
    if (tok_added_find(&c->t->norm_set, v->text, v->len, &sp, &n))
        return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
    int rc = KVZ_OK;
    for (size_t i = 0; i < n && rc == KVZ_OK; i++) {
        if (sp[i].id < 0) {
            rc = encode_words(c, v, sp[i].start, sp[i].end);
        } else {
            size_t s0, s1;
            view_span(v, sp[i].start, sp[i].end, &s0, &s1);
            rc = emit(c, sp[i].id, s0, s1);
        }
    }
    free(sp);
    return rc;
}

static int is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

/* Text between raw added tokens: normalize, then encode. */
static int encode_segment(enc_ctx *c, size_t start, size_t end)
{
    norm_view v = {c->text + start, end - start, NULL, start};
    if (!c->t->nfc || is_ascii(v.text, v.len))
        return encode_normalized(c, &v);
    tok_normalized n;
    if (tok_nfc(c->text, start, end, &n))
        return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
    v = (norm_view){n.text, n.len, n.align, 0};
    int rc = encode_normalized(c, &v);
    tok_normalized_free(&n);
    return rc;
}

static int encode_raw(enc_ctx *c)
{
    tok_split *sp = NULL;
    size_t n = 0;
    if (tok_added_find(&c->t->raw_set, c->text, c->len, &sp, &n))
        return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
    int rc = KVZ_OK;
    for (size_t i = 0; i < n && rc == KVZ_OK; i++)
        rc = sp[i].id < 0 ? encode_segment(c, sp[i].start, sp[i].end)
                          : emit(c, sp[i].id, sp[i].start, sp[i].end);
    free(sp);
    return rc;
}

/* --------------------------------------------------------- post-process */

/* Byte spans -> code-point spans, then bytes again from the code points
 * (so a span inside a character covers the whole character). */
static int to_char_offsets(enc_ctx *c)
{
    size_t n_chars = 0;
    uint32_t *b2c = malloc((c->len + 1) * sizeof *b2c);
    size_t *c2b = malloc((c->len + 1) * sizeof *c2b);
    if (!b2c || !c2b) {
        free(b2c);
        free(c2b);
        return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
    }
    for (size_t i = 0; i < c->len; i++) {
        if (((unsigned char)c->text[i] & 0xC0) != 0x80)
            c2b[n_chars++] = i;
        b2c[i] = (uint32_t)(n_chars - 1);
    }
    b2c[c->len] = (uint32_t)n_chars;
    c2b[n_chars] = c->len;
    for (size_t k = 0; k < c->out->n; k++) {
        kvz_token_span *s = &c->out->spans[k];
        if (s->byte_end <= s->byte_start) {
            s->start = s->end = b2c[s->byte_start];
            continue;
        }
        s->start = b2c[s->byte_start];
        s->end = (size_t)b2c[s->byte_end - 1] + 1;
        s->byte_start = c2b[s->start];
        s->byte_end = c2b[s->end];
    }
    free(b2c);
    free(c2b);
    return KVZ_OK;
}

static int is_trim_char(uint32_t cp)
{
    return cp == 0x120 /* the byte-level space, Ġ */ || tok_is_white_space(cp);
}

/* Counts leading (dir > 0) or trailing (dir < 0) trim characters of s. */
static size_t count_trim(const char *s, size_t n, int dir)
{
    size_t count = 0;
    if (dir > 0) {
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            i += kvz_utf8_decode((const unsigned char *)s + i, &cp);
            if (!is_trim_char(cp))
                break;
            count++;
        }
        return count;
    }
    size_t i = n;
    while (i > 0) {
        size_t j = i - 1;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80)
            j--;
        uint32_t cp;
        kvz_utf8_decode((const unsigned char *)s + j, &cp);
        if (!is_trim_char(cp))
            break;
        count++;
        i = j;
    }
    return count;
}

/* HF ByteLevel post-processor with trim_offsets (process_offsets), on
 * code-point offsets. Byte offsets are not re-derived: they keep the span
 * before trimming only where trimming changed nothing. */
static void trim_offsets(enc_ctx *c, const size_t *c2b)
{
    const kvz_tokenizer *t = c->t;
    for (size_t i = 0; i < c->out->n; i++) {
        kvz_token_span *s = &c->out->spans[i];
        /* HF trims by the token's value: the vocabulary string, or for an
         * added token the matched text (lstrip/rstrip whitespace included) */
        int32_t id = c->out->ids[i];
        const char *tok = kvz_tokenizer_token(t, id);
        size_t n = tok ? strlen(tok) : 0;
        if (tok && t->added_of[id] >= 0) {
            tok = c->text + s->byte_start;
            n = s->byte_end - s->byte_start;
        }
        if (!tok)
            continue;
        size_t lead = count_trim(tok, n, 1), trail = count_trim(tok, n, -1);
        if (lead > 0) {
            int is_first = i == 0 || s->start == 0;
            if (is_first && t->trim_add_prefix_space && lead == 1)
                lead = 0;
            s->start = s->start + lead < s->end ? s->start + lead : s->end;
        }
        if (trail > 0 && s->end >= trail)
            s->end = s->end - trail > s->start ? s->end - trail : s->start;
        s->byte_start = c2b[s->start];
        s->byte_end = c2b[s->end];
    }
}

static int apply_trim(enc_ctx *c)
{
    size_t *c2b = malloc((c->len + 1) * sizeof *c2b), n = 0;
    if (!c2b)
        return kvz_fail(c->err, KVZ_ENOMEM, "tokenize: out of memory");
    for (size_t i = 0; i < c->len; i++)
        if (((unsigned char)c->text[i] & 0xC0) != 0x80)
            c2b[n++] = i;
    c2b[n] = c->len;
    trim_offsets(c, c2b);
    free(c2b);
    return KVZ_OK;
}

static int add_specials(enc_ctx *c)
{
    const kvz_tokenizer *t = c->t;
    size_t body = c->out->n;
    for (size_t i = 0; i < t->n_prefix + t->n_suffix; i++)
        if (emit(c, 0, 0, 0))
            return KVZ_ENOMEM;
    kvz_tokens *o = c->out;
    memmove(o->ids + t->n_prefix, o->ids, body * sizeof *o->ids);
    memmove(o->spans + t->n_prefix, o->spans, body * sizeof *o->spans);
    for (size_t i = 0; i < t->n_prefix; i++) {
        o->ids[i] = t->prefix_ids[i];
        o->spans[i] = (kvz_token_span){0, 0, 0, 0};
    }
    for (size_t i = 0; i < t->n_suffix; i++) {
        o->ids[t->n_prefix + body + i] = t->suffix_ids[i];
        o->spans[t->n_prefix + body + i] = (kvz_token_span){0, 0, 0, 0};
    }
    return KVZ_OK;
}

int kvz_tokenize(const kvz_tokenizer *t, const char *text, size_t len, int add_special, kvz_tokens *out,
                 kvz_error *err)
{
    memset(out, 0, sizeof *out);
    size_t bad = 0;
    const char *why = NULL;
    if (kvz_utf8_validate(text, len, &bad, &why))
        return kvz_fail(err, KVZ_EFORMAT, "text is not valid UTF-8: %s at byte offset %zu", why, bad);
    enc_ctx c = {t, text, len, out, tok_bpe_scratch_new(), {0}, err};
    int rc = c.scratch ? encode_raw(&c) : kvz_fail(err, KVZ_ENOMEM, "tokenize: out of memory");
    if (rc == KVZ_OK)
        rc = to_char_offsets(&c);
    if (rc == KVZ_OK && t->trim_offsets)
        rc = apply_trim(&c);
    if (rc == KVZ_OK && add_special && t->n_prefix + t->n_suffix)
        rc = add_specials(&c);
    tok_bpe_scratch_free(c.scratch);
    free(c.bpe.ids);
    free(c.bpe.lens);
    return rc;
}

/* Unicode White_Space (what added tokens' lstrip/rstrip may swallow). */
static int is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int kvz_tokenize_count(const kvz_tokenizer *t, const char *text, size_t len, int add_special,
                       size_t limit, size_t *n, kvz_error *err)
{
    size_t specials = add_special ? t->n_prefix + t->n_suffix : 0;
    size_t per_token = t->max_token_bytes * (t->nfc ? 3 : 1), solid = 0;
    int valid = 1;
    for (size_t i = 0; i < len && valid;) {
        long step = kvz_utf8_step((const unsigned char *)text + i, len - i);
        if (step < 0) {
            valid = 0; /* kvz_tokenize reports it */
            break;
        }
        uint32_t cp;
        kvz_utf8_decode((const unsigned char *)text + i, &cp);
        if (!is_white_space(cp))
            solid += (size_t)step;
        i += (size_t)step;
    }
    if (valid && solid / per_token + specials > limit) { /* more than limit tokens */
        *n = limit + 1;
        return KVZ_OK;
    }
    kvz_tokens toks;
    int rc = kvz_tokenize(t, text, len, add_special, &toks, err);
    *n = toks.n > limit ? limit + 1 : toks.n;
    kvz_tokens_free(&toks);
    return rc;
}

void kvz_tokens_free(kvz_tokens *toks)
{
    if (!toks)
        return;
    free(toks->ids);
    free(toks->spans);
    memset(toks, 0, sizeof *toks);
}

/* -------------------------------------------------------------- decode */

/* HF ByteLevel decoder: a token whose every char is in the byte alphabet
 * gives those bytes; any other token gives its own UTF-8. */
static size_t token_bytes(const char *tok, size_t n, unsigned char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += kvz_utf8_decode((const unsigned char *)tok + i, &cp);
        int b = tok_cp_to_byte(cp);
        if (b < 0) {
            memcpy(out, tok, n);
            return n;
        }
        out[k++] = (unsigned char)b;
    }
    return k;
}

int kvz_detokenize_bytes(const kvz_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                         size_t *out_len, kvz_error *err)
{
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tok = kvz_tokenizer_token(t, ids[i]);
        total += tok ? strlen(tok) : 0;
    }
    unsigned char *bytes = malloc(total + 1);
    char *text = malloc(3 * total + 1);
    if (!bytes || !text) {
        free(bytes);
        free(text);
        return kvz_fail(err, KVZ_ENOMEM, "decode: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tok = kvz_tokenizer_token(t, ids[i]);
        if (!tok || (skip_special && kvz_tokenizer_is_special(t, ids[i])))
            continue;
        k += token_bytes(tok, strlen(tok), bytes + k);
    }
    size_t len = tok_utf8_lossy(bytes, k, text);
    free(bytes);
    *out = text;
    if (out_len)
        *out_len = len;
    return KVZ_OK;
}

int kvz_detokenize(const kvz_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                   kvz_error *err)
{
    return kvz_detokenize_bytes(t, ids, n, skip_special, out, NULL, err);
}
