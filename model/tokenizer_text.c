/* tokenizer_text: the character-level pieces of the tokenizer: strict UTF-8
 * lossy UTF-8 decoding (Rust from_utf8_lossy; strict validation is in
 * common/kvz_utf8.c), the GPT-2
 * byte-level alphabet, the Unicode classes HF's Rust code uses, and NFC with
 * offsets mapped back exactly as HF's NormalizedString::nfc does (the
 * unicode-normalization-alignments crate: decompose, canonical order,
 * recompose, each output char carrying a "change" that says which original
 * char it aligns to). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

size_t tok_utf8_lossy(const unsigned char *s, size_t n, char *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        long step = kvz_utf8_step(s + i, n - i);
        if (step > 0) {
            memcpy(out + k, s + i, (size_t)step);
            k += (size_t)step;
            i += (size_t)step;
        } else {
            k += kvz_utf8_encode(0xFFFD, out + k);
            i += (size_t)(-step);
        }
    }
    out[k] = '\0';
    return k;
}

/* ---------------------------------------------------- byte-level alphabet */

static int byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t tok_byte_to_cp(unsigned char b)
{
    if (byte_is_printable(b))
        return b;
    uint32_t n = 0; /* rank of b among the non-printable bytes */
    for (unsigned x = 0; x < b; x++)
        n += !byte_is_printable(x);
    return 256 + n;
}

/* Tables of the byte-level alphabet, built once (pthread_once: loads and
 * encodes may run on several threads). */
static int cp_byte_table[324];
static char byte_spell[256][3];
static unsigned char byte_spell_len[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (int i = 0; i < 324; i++)
        cp_byte_table[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_cp((unsigned char)b);
        cp_byte_table[cp] = (int)b;
        byte_spell_len[b] = (unsigned char)kvz_utf8_encode(cp, byte_spell[b]);
    }
}

int tok_cp_to_byte(uint32_t cp)
{
    pthread_once(&tables_once, build_tables);
    return cp < 324 ? cp_byte_table[cp] : -1;
}

size_t tok_bytes_to_bytelevel(const unsigned char *bytes, size_t n, char *buf)
{
    pthread_once(&tables_once, build_tables);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(buf + k, byte_spell[bytes[i]], byte_spell_len[bytes[i]]);
        k += byte_spell_len[bytes[i]];
    }
    buf[k] = '\0';
    return k;
}

/* ------------------------------------------------------- Unicode classes */

int tok_is_white_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

int tok_is_numeric(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int tok_is_word_char(uint32_t c)
{
    if (c == 0x200C || c == 0x200D)
        return 1;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------ NFC */

typedef struct nfc_char {
    uint32_t cp;
    int change; /* 0 replaces an original char, +1 is inserted, -k also removes k */
    int ccc;
} nfc_char;

typedef struct nfc_list {
    nfc_char *v;
    size_t n, cap;
} nfc_list;

static int nfc_push(nfc_list *l, uint32_t cp, int change, int ccc)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        nfc_char *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return KVZ_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (nfc_char){cp, change, ccc};
    return KVZ_OK;
}

static int ccc_of(uint32_t cp)
{
    return utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
}

/* The primary composite of (a, b), or 0. */
static uint32_t nfc_compose(uint32_t a, uint32_t b)
{
    utf8proc_int32_t buf[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
    utf8proc_ssize_t n = utf8proc_normalize_utf32(buf, 2, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
    return n == 1 ? (uint32_t)buf[0] : 0;
}

/* Canonical decomposition of each char; the first part keeps change 0, the
 * others are inserted (+1). Then runs of non-starters are stably sorted by
 * combining class (the change values travel with their chars). */
static int nfc_decompose(const unsigned char *s, size_t n, nfc_list *out)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        i += kvz_utf8_decode(s + i, &cp);
        utf8proc_int32_t d[32];
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32, UTF8PROC_DECOMPOSE, &last);
        if (k < 1 || k > 32) {
            d[0] = (utf8proc_int32_t)cp;
            k = 1;
        }
        for (utf8proc_ssize_t j = 0; j < k; j++)
            if (nfc_push(out, (uint32_t)d[j], j == 0 ? 0 : 1, ccc_of((uint32_t)d[j])))
                return KVZ_ENOMEM;
    }
    for (size_t a = 0; a < out->n;) { /* insertion sort of each non-starter run */
        if (out->v[a].ccc == 0) {
            a++;
            continue;
        }
        size_t b = a;
        while (b < out->n && out->v[b].ccc != 0)
            b++;
        for (size_t x = a + 1; x < b; x++) {
            nfc_char c = out->v[x];
            size_t y = x;
            while (y > a && out->v[y - 1].ccc > c.ccc) {
                out->v[y] = out->v[y - 1];
                y--;
            }
            out->v[y] = c;
        }
        a = b;
    }
    return KVZ_OK;
}

typedef struct nfc_state {
    nfc_list *out;
    nfc_char composee;
    int has_composee;
    int last_ccc; /* -1: none */
    nfc_list buffer;
} nfc_state;

static int nfc_flush_buffer(nfc_state *st)
{
    for (size_t i = 0; i < st->buffer.n; i++)
        if (nfc_push(st->out, st->buffer.v[i].cp, st->buffer.v[i].change, 0))
            return KVZ_ENOMEM;
    st->buffer.n = 0;
    return KVZ_OK;
}

/* One step of the crate's Recompositions iterator (emission order kept). */
static int nfc_recompose_one(nfc_state *st, nfc_char ch)
{
    if (!st->has_composee) {
        if (ch.ccc != 0)
            return nfc_push(st->out, ch.cp, ch.change, 0);
        st->composee = ch;
        st->has_composee = 1;
        return KVZ_OK;
    }
    nfc_char k = st->composee;
    if (st->last_ccc >= 0 && st->last_ccc >= ch.ccc) { /* ch is blocked */
        if (ch.ccc == 0) {
            st->composee = ch;
            st->last_ccc = -1;
            if (nfc_push(st->out, k.cp, k.change, 0))
                return KVZ_ENOMEM;
            return nfc_flush_buffer(st);
        }
        st->last_ccc = ch.ccc;
        return nfc_push(&st->buffer, ch.cp, ch.change, ch.ccc);
    }
    uint32_t r = nfc_compose(k.cp, ch.cp);
    if (r) {
        st->composee = (nfc_char){r, k.change + ch.change - 1, 0};
        return KVZ_OK;
    }
    if (st->last_ccc < 0 && ch.ccc == 0) {
        st->composee = ch;
        return nfc_push(st->out, k.cp, k.change, 0);
    }
    st->last_ccc = ch.ccc;
    return nfc_push(&st->buffer, ch.cp, ch.change, ch.ccc);
}

static int nfc_recompose(const nfc_list *in, nfc_list *out)
{
    nfc_state st = {.out = out, .last_ccc = -1};
    int rc = KVZ_OK;
    for (size_t i = 0; i < in->n && rc == KVZ_OK; i++)
        rc = nfc_recompose_one(&st, in->v[i]);
    if (rc == KVZ_OK && st.has_composee)
        rc = nfc_push(out, st.composee.cp, st.composee.change, 0);
    if (rc == KVZ_OK)
        rc = nfc_flush_buffer(&st);
    free(st.buffer.v);
    return rc;
}

/* NormalizedString::transform: output chars take the alignment of the
 * original char they replace (change <= 0) or of the previous original char
 * (inserted, change > 0); a negative change also consumes following chars. */
static int nfc_align(const unsigned char *s, size_t start, size_t end, const nfc_list *chars,
                     tok_normalized *out)
{
    size_t cap = 4 * chars->n + 1;
    out->text = malloc(cap);
    out->align = malloc(2 * cap * sizeof *out->align);
    if (!out->text || !out->align)
        return KVZ_ENOMEM;
    size_t pos = start, prev_start = start, prev_end = start, k = 0;
    for (size_t i = 0; i < chars->n; i++) {
        uint32_t a0 = (uint32_t)prev_start, a1 = (uint32_t)prev_end;
        if (chars->v[i].change <= 0 && pos < end) {
            uint32_t cp;
            size_t w = kvz_utf8_decode(s + pos, &cp);
            a0 = (uint32_t)pos;
            a1 = (uint32_t)(pos + w);
            prev_start = pos;
            prev_end = pos + w;
            pos += w;
            for (int r = 0; r < -chars->v[i].change && pos < end; r++) {
                w = kvz_utf8_decode(s + pos, &cp);
                prev_start = pos;
                prev_end = pos + w;
                pos += w;
            }
        }
        size_t w = kvz_utf8_encode(chars->v[i].cp, out->text + k);
        for (size_t b = 0; b < w; b++) {
            out->align[2 * (k + b)] = a0;
            out->align[2 * (k + b) + 1] = a1;
        }
        k += w;
    }
    out->text[k] = '\0';
    out->len = k;
    return KVZ_OK;
}

int tok_nfc(const char *text, size_t start, size_t end, tok_normalized *out)
{
    const unsigned char *s = (const unsigned char *)text;
    memset(out, 0, sizeof *out);
    nfc_list dec = {0}, rec = {0};
    int rc = nfc_decompose(s + start, end - start, &dec);
    if (rc == KVZ_OK)
        rc = nfc_recompose(&dec, &rec);
    if (rc == KVZ_OK)
        rc = nfc_align(s, start, end, &rec, out);
    free(dec.v);
    free(rec.v);
    if (rc != KVZ_OK)
        tok_normalized_free(out);
    return rc;
}

void tok_normalized_free(tok_normalized *n)
{
    free(n->text);
    free(n->align);
    memset(n, 0, sizeof *n);
}
