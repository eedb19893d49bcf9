/* tokenizer_bpe: the BPE model. The merge table maps a pair of token ids to
 * (rank, merged id); a word (one pre-token, raw bytes) starts as one symbol
 * per byte (its byte-level character's id) and is merged exactly as HF's
 * Word::merge_all does: a min-heap of (rank, position), lowest rank first and
 * leftmost among equal ranks, stale entries skipped. ignore_merges: a word
 * that is itself in the vocabulary is emitted whole. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

int tok_merges_init(tok_merges *m, size_t expected)
{
    size_t cap = 64;
    while (cap < 2 * expected + 1)
        cap *= 2;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->n = 0;
    return m->slots ? KVZ_OK : KVZ_ENOMEM;
}

void tok_merges_free(tok_merges *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static tok_merge_slot *merge_slot(const tok_merges *m, uint64_t key)
{
    size_t i = (size_t)mix64(key) & m->mask;
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    return &m->slots[i];
}

static uint64_t merge_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

static int merges_grow(tok_merges *m)
{
    tok_merges bigger;
    if (tok_merges_init(&bigger, 2 * (m->mask + 1)))
        return KVZ_ENOMEM;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->slots[i].key)
            *merge_slot(&bigger, m->slots[i].key) = m->slots[i];
    bigger.n = m->n;
    free(m->slots);
    *m = bigger;
    return KVZ_OK;
}

int tok_merges_put(tok_merges *m, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    if (2 * (m->n + 1) > m->mask + 1 && merges_grow(m))
        return KVZ_ENOMEM;
    uint64_t key = merge_key(left, right);
    tok_merge_slot *s = merge_slot(m, key);
    if (!s->key)
        m->n++;
    *s = (tok_merge_slot){key, rank, merged};
    return KVZ_OK;
}

const tok_merge_slot *tok_merges_get(const tok_merges *m, int32_t left, int32_t right)
{
    const tok_merge_slot *s = merge_slot(m, merge_key(left, right));
    return s->key ? s : NULL;
}

/* ------------------------------------------------------------ the word */

typedef struct bpe_symbol {
    int32_t id;
    long prev, next; /* -1: none */
    uint32_t len;    /* bytes; 0 = merged away */
} bpe_symbol;

typedef struct bpe_merge {
    int32_t rank, merged;
    size_t pos;
} bpe_merge;

struct tok_bpe_scratch {
    bpe_symbol *sym;
    size_t sym_cap;
    bpe_merge *heap;
    size_t heap_n, heap_cap;
    char *spell;
    size_t spell_cap;
};

tok_bpe_scratch *tok_bpe_scratch_new(void)
{
    return calloc(1, sizeof(tok_bpe_scratch));
}

void tok_bpe_scratch_free(tok_bpe_scratch *s)
{
    if (!s)
        return;
    free(s->sym);
    free(s->heap);
    free(s->spell);
    free(s);
}

static int merge_before(const bpe_merge *a, const bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tok_bpe_scratch *s, bpe_merge m)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 64;
        bpe_merge *h = realloc(s->heap, cap * sizeof *h);
        if (!h)
            return KVZ_ENOMEM;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0 && merge_before(&m, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = m;
    return KVZ_OK;
}

static bpe_merge heap_pop(tok_bpe_scratch *s)
{
    bpe_merge top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && merge_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!merge_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

static int push_pair(const kvz_tokenizer *t, tok_bpe_scratch *s, size_t pos, size_t next)
{
    const tok_merge_slot *m = tok_merges_get(&t->merges, s->sym[pos].id, s->sym[next].id);
    return m ? heap_push(s, (bpe_merge){m->rank, m->merged, pos}) : KVZ_OK;
}

static int out_push(tok_bpe_out *out, int32_t id, uint32_t len)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 256;
        int32_t *ids = realloc(out->ids, cap * sizeof *ids);
        if (!ids)
            return KVZ_ENOMEM;
        out->ids = ids;
        uint32_t *lens = realloc(out->lens, cap * sizeof *lens);
        if (!lens)
            return KVZ_ENOMEM;
        out->lens = lens;
        out->cap = cap;
    }
    out->ids[out->n] = id;
    out->lens[out->n++] = len;
    return KVZ_OK;
}

/* One symbol per byte; a byte whose character is not in the vocabulary
 * becomes unk, or is dropped. As in HF, token offsets inside the word are
 * the running sum of the kept symbols' lengths. */
static size_t init_symbols(const kvz_tokenizer *t, const unsigned char *w, size_t n, tok_bpe_scratch *s)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0)
            id = t->unk_id;
        if (id < 0)
            continue;
        s->sym[k] = (bpe_symbol){id, (long)k - 1, (long)k + 1, 1};
        k++;
    }
    if (k)
        s->sym[k - 1].next = -1;
    return k;
}

static int merge_all(const kvz_tokenizer *t, tok_bpe_scratch *s, size_t k)
{
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < k; i++)
        if (push_pair(t, s, i, i + 1))
            return KVZ_ENOMEM;
    while (s->heap_n) {
        bpe_merge top = heap_pop(s);
        bpe_symbol *cur = &s->sym[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        size_t nx = (size_t)cur->next;
        const tok_merge_slot *m = tok_merges_get(&t->merges, cur->id, s->sym[nx].id);
        if (!m || m->merged != top.merged)
            continue; /* stale entry */
        cur->id = top.merged;
        cur->len += s->sym[nx].len;
        cur->next = s->sym[nx].next;
        s->sym[nx].len = 0;
        if (cur->next >= 0)
            s->sym[cur->next].prev = (long)top.pos;
        if (cur->prev >= 0 && push_pair(t, s, (size_t)cur->prev, top.pos))
            return KVZ_ENOMEM;
        if (cur->next >= 0 && push_pair(t, s, top.pos, (size_t)cur->next))
            return KVZ_ENOMEM;
    }
    return KVZ_OK;
}

static int ensure_scratch(tok_bpe_scratch *s, size_t n)
{
    if (s->sym_cap < n) {
        bpe_symbol *sym = realloc(s->sym, n * sizeof *sym);
        if (!sym)
            return KVZ_ENOMEM;
        s->sym = sym;
        s->sym_cap = n;
    }
    if (s->spell_cap < 2 * n + 1) {
        char *sp = realloc(s->spell, 2 * n + 1);
        if (!sp)
            return KVZ_ENOMEM;
        s->spell = sp;
        s->spell_cap = 2 * n + 1;
    }
    return KVZ_OK;
}

int tok_bpe_word(const kvz_tokenizer *t, const unsigned char *word, size_t n, tok_bpe_scratch *s,
                 tok_bpe_out *out)
{
    if (n == 0)
        return KVZ_OK;
    if (ensure_scratch(s, n))
        return KVZ_ENOMEM;
    if (n == 1 && t->byte_id[word[0]] >= 0)
        return out_push(out, t->byte_id[word[0]], 1);
    if (t->ignore_merges) {
        size_t len = tok_bytes_to_bytelevel(word, n, s->spell);
        int32_t id = tok_vocab_find(t, s->spell, len);
        if (id >= 0)
            return out_push(out, id, (uint32_t)n);
    }
    size_t k = init_symbols(t, word, n, s);
    if (k == 0)
        return KVZ_OK;
    if (merge_all(t, s, k))
        return KVZ_ENOMEM;
    for (size_t i = 0; i < k; i++)
        if (s->sym[i].len && out_push(out, s->sym[i].id, s->sym[i].len))
            return KVZ_ENOMEM;
    return KVZ_OK;
}
