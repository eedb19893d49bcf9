/* tokenizer_added: matching added/special tokens in text before
 * pre-tokenization, as HF's AddedVocabulary::find_matches does: the
 * non-overlapping leftmost-longest matches of all token contents (an
 * Aho-Corasick automaton there, a first-byte index here), then per token:
 * single_word drops a match touching a word character (Rust regex \w) on
 * either side; lstrip / rstrip widen it over adjacent White_Space (never
 * back over the previous match). The result covers the string: gaps
 * (id -1) and matches. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static int longer_first(const void *a, const void *b)
{
    const tok_added *x = *(const tok_added *const *)a, *y = *(const tok_added *const *)b;
    if (x->match_len != y->match_len)
        return x->match_len > y->match_len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int tok_added_set_build(tok_added_set *set, const tok_added *added, size_t n_added, int normalized,
                        kvz_error *err)
{
    memset(set, 0, sizeof *set);
    for (size_t i = 0; i < n_added; i++) {
        if (!added[i].normalized != !normalized || added[i].match_len == 0)
            continue;
        unsigned char b = (unsigned char)added[i].match[0];
        const tok_added **v = realloc(set->by_first[b], (set->n_first[b] + 1) * sizeof *v);
        if (!v) {
            tok_added_set_free(set);
            return kvz_fail(err, KVZ_ENOMEM, "added tokens: out of memory");
        }
        v[set->n_first[b]++] = &added[i];
        set->by_first[b] = v;
        set->n++;
    }
    for (int b = 0; b < 256; b++)
        if (set->n_first[b] > 1)
            qsort(set->by_first[b], set->n_first[b], sizeof(tok_added *), longer_first);
    return KVZ_OK;
}

void tok_added_set_free(tok_added_set *set)
{
    for (int b = 0; b < 256; b++)
        free(set->by_first[b]);
    memset(set, 0, sizeof *set);
}

/* The longest token matching at s[i..n), or NULL. */
static const tok_added *match_at(const tok_added_set *set, const char *s, size_t n, size_t i)
{
    unsigned char b = (unsigned char)s[i];
    for (size_t k = 0; k < set->n_first[b]; k++) {
        const tok_added *a = set->by_first[b][k];
        if (a->match_len <= n - i && memcmp(s + i, a->match, a->match_len) == 0)
            return a;
    }
    return NULL;
}

/* The code point that ends at byte end (s valid UTF-8, end > 0). */
static uint32_t cp_before(const char *s, size_t end, size_t *start)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    uint32_t cp;
    kvz_utf8_decode((const unsigned char *)s + i, &cp);
    if (start)
        *start = i;
    return cp;
}

static int single_word_ok(const char *s, size_t n, size_t start, size_t stop)
{
    uint32_t cp;
    if (start > 0 && tok_is_word_char(cp_before(s, start, NULL)))
        return 0;
    if (stop < n) {
        kvz_utf8_decode((const unsigned char *)s + stop, &cp);
        if (tok_is_word_char(cp))
            return 0;
    }
    return 1;
}

static size_t strip_left(const char *s, size_t start, size_t floor)
{
    while (start > floor) {
        size_t prev;
        if (!tok_is_white_space(cp_before(s, start, &prev)))
            break;
        start = prev;
    }
    return start < floor ? floor : start;
}

static size_t strip_right(const char *s, size_t n, size_t stop)
{
    while (stop < n) {
        uint32_t cp;
        size_t w = kvz_utf8_decode((const unsigned char *)s + stop, &cp);
        if (!tok_is_white_space(cp))
            break;
        stop += w;
    }
    return stop;
}

static int split_push(tok_split **v, size_t *n, size_t *cap, size_t start, size_t end, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        tok_split *nv = realloc(*v, c * sizeof *nv);
        if (!nv)
            return KVZ_ENOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = (tok_split){start, end, id};
    return KVZ_OK;
}

int tok_added_find(const tok_added_set *set, const char *s, size_t n, tok_split **out, size_t *n_out)
{
    size_t cap = 0, done = 0, i = 0;
    *out = NULL;
    *n_out = 0;
    while (set->n && i < n) {
        const tok_added *a = match_at(set, s, n, i);
        if (!a) {
            i++;
            continue;
        }
        size_t start = i, stop = i + a->match_len;
        i = stop; /* the scan resumes after the match, used or not */
        if (a->single_word && !single_word_ok(s, n, start, stop))
            continue;
        if (a->lstrip)
            start = strip_left(s, start, done);
        if (a->rstrip)
            stop = strip_right(s, n, stop);
        if (start < done)
            start = done;
        if (start > done && split_push(out, n_out, &cap, done, start, -1))
            return KVZ_ENOMEM;
        if (split_push(out, n_out, &cap, start, stop, a->id))
            return KVZ_ENOMEM;
        done = stop;
        if (i < done)
            i = done;
    }
    if (n > done && split_push(out, n_out, &cap, done, n, -1))
        return KVZ_ENOMEM;
    return KVZ_OK;
}
