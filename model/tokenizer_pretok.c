/* tokenizer_pretok: pre-tokenization. HF compiles its Split / ByteLevel
 * regexes with Oniguruma; we use PCRE2 (UTF + UCP) after rewriting \s and \S
 * to Oniguruma's Unicode whitespace set (U+0009..U+000D, U+0085 and the Z
 * categories; PCRE2's own \s would also take U+180E). \p{L}, \p{N} and
 * (?i:...) (Unicode simple case folding) agree between the two engines.
 * Each step splits every current piece into smaller pieces (HF
 * SplitDelimiterBehavior::Isolated: matches and the gaps between them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

const char TOK_GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char TOK_LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TOK_QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Oniguruma's Unicode \s, as class items. */
static const char ONIG_SPACE_ITEMS[] = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";

int tok_ranges_push(tok_ranges *r, size_t start, size_t end)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        tok_range *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return KVZ_ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = (tok_range){start, end};
    return KVZ_OK;
}

void tok_ranges_free(tok_ranges *r)
{
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* Rewrites \s / \S; returns a malloc'ed pattern or NULL (message in err). */
static char *translate_regex(const char *p, size_t len, const char *what, kvz_error *err)
{
    size_t cap = len * 24 + 1, k = 0;
    char *out = malloc(cap);
    if (!out) {
        kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    int in_class = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < len) {
            char e = p[++i];
            if (e == 's' || e == 'S') {
                if (in_class && e == 'S') {
                    free(out);
                    kvz_fail(err, KVZ_EUNSUPPORTED, "%s: \\S inside a character class is not supported",
                             what);
                    return NULL;
                }
                k += (size_t)sprintf(out + k, in_class ? "%s" : (e == 's' ? "[%s]" : "[^%s]"),
                                     ONIG_SPACE_ITEMS);
                continue;
            }
            out[k++] = '\\';
            out[k++] = e;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            out[k++] = c;
            if (i + 1 < len && p[i + 1] == '^')
                out[k++] = p[++i];
            if (i + 1 < len && p[i + 1] == ']') /* a leading ']' is literal */
                out[k++] = p[++i];
            continue;
        }
        if (in_class && c == ']')
            in_class = 0;
        out[k++] = c;
    }
    out[k] = '\0';
    return out;
}

int tok_regex_compile(const char *pattern, size_t len, int literal, const char *what, pcre2_code **out,
                      kvz_error *err)
{
    *out = NULL;
    char *pat = literal ? NULL : translate_regex(pattern, len, what, err);
    if (!literal && !pat)
        return err ? err->code : KVZ_ENOMEM;
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : pat),
                                   literal ? len : PCRE2_ZERO_TERMINATED, opts, &code, &at, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return kvz_fail(err, KVZ_EFORMAT, "%s: regex does not compile (%s at offset %zu): %.*s", what,
                        (const char *)msg, (size_t)at, (int)(len > 200 ? 200 : len), pattern);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back when unavailable */
    *out = re;
    return KVZ_OK;
}

/* Regex split of s[start..end) (matched as its own subject string). */
static int split_regex(const pcre2_code *re, pcre2_match_data *md, const char *text, size_t start,
                       size_t end, tok_ranges *out, kvz_error *err)
{
    const PCRE2_SPTR subj = (PCRE2_SPTR)(text + start);
    size_t n = end - start, pos = 0, prev = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kvz_fail(err, KVZ_EUNSUPPORTED, "pre-tokenizer regex failed at byte %zu: %s",
                            start + pos, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: produces nothing, step one character */
            if (ms >= n)
                break;
            uint32_t cp;
            pos = ms + kvz_utf8_decode((const unsigned char *)subj + ms, &cp);
            continue;
        }
        if (ms > prev && tok_ranges_push(out, start + prev, start + ms))
            return KVZ_ENOMEM;
        if (tok_ranges_push(out, start + ms, start + me))
            return KVZ_ENOMEM;
        prev = pos = me;
    }
    if (prev < n && tok_ranges_push(out, start + prev, end))
        return KVZ_ENOMEM;
    return KVZ_OK;
}

/* HF Digits: numeric chars isolated one by one, or runs of them together. */
static int split_digits(int individual, const char *text, size_t start, size_t end, tok_ranges *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = start, piece = start;
    int in_run = 0;
    while (i < end) {
        uint32_t cp;
        size_t w = kvz_utf8_decode(s + i, &cp);
        int num = tok_is_numeric(cp);
        if (num && (individual || !in_run)) {
            if (i > piece && tok_ranges_push(out, piece, i))
                return KVZ_ENOMEM;
            piece = i;
        } else if (!num && in_run) {
            if (tok_ranges_push(out, piece, i))
                return KVZ_ENOMEM;
            piece = i;
        }
        in_run = num;
        i += w;
        if (num && individual) {
            if (tok_ranges_push(out, piece, i))
                return KVZ_ENOMEM;
            piece = i;
            in_run = 0;
        }
    }
    if (end > piece && tok_ranges_push(out, piece, end))
        return KVZ_ENOMEM;
    return KVZ_OK;
}

int tok_pre_apply(const tok_pre_step *step, const char *text, tok_ranges *r, kvz_error *err)
{
    if (!step->re && step->kind != TOK_PRE_DIGITS)
        return KVZ_OK; /* ByteLevel without regex: nothing to split */
    tok_ranges out = {0};
    pcre2_match_data *md = step->re ? pcre2_match_data_create_from_pattern(step->re, NULL) : NULL;
    if (step->re && !md)
        return kvz_fail(err, KVZ_ENOMEM, "pre-tokenizer: out of memory");
    int rc = KVZ_OK;
    for (size_t i = 0; i < r->n && rc == KVZ_OK; i++) {
        if (step->kind == TOK_PRE_DIGITS)
            rc = split_digits(step->individual, text, r->v[i].start, r->v[i].end, &out);
        else
            rc = split_regex(step->re, md, text, r->v[i].start, r->v[i].end, &out, err);
    }
    pcre2_match_data_free(md);
    if (rc != KVZ_OK) {
        tok_ranges_free(&out);
        return rc == KVZ_ENOMEM ? kvz_fail(err, rc, "pre-tokenizer: out of memory") : rc;
    }
    tok_ranges_free(r);
    *r = out;
    return KVZ_OK;
}
