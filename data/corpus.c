/* corpus: streaming, deterministic document selection (data/corpus.h) and
 * re-reading of the selected texts. Files are listed and read by
 * corpus_scan.c; this file owns the keys, the per-subset heaps, the final
 * order and kvz_corpus_read_text.
 *
 * Key of a document (64 bits, the same on every platform):
 *   id      = its source id RELATIVE TO THE CORPUS ROOT: the path below the
 *             directory given (e.g. "code.jsonl:17", "sub/a.txt"), or the base
 *             name when the corpus is a single file; so moving or renaming the
 *             corpus root does not change the selection. For a compressed
 *             file the ".gz"/".zst" suffix is left out of the hashed id
 *             ("code.jsonl.gz:17" hashes "code.jsonl:17"), so compressing or
 *             recompressing a corpus keeps its selection; only the source
 *             ids shown (and stored) name the real file.
 *   fnv     = FNV-1a 64 of id's bytes (offset basis 0xcbf29ce484222325,
 *             prime 0x100000001b3)
 *   key     = mix(fnv ^ mix(seed + 0x9e3779b97f4a7c15))
 *   mix(z)  = splitmix64's finalizer: z = (z ^ z>>30) * 0xbf58476d1ce4e5b9;
 *             z = (z ^ z>>27) * 0x94d049bb133111eb; z ^ z>>31.
 * Ties of equal keys (a 64-bit collision, or "a.jsonl" and "a.jsonl.gz" in
 * one corpus) are broken by the source id (relative) in byte order.
 *
 * Selection: per subset a max-heap of at most train + test entries holding
 * the smallest (key, id) seen among documents that pass the length filter. A
 * document is tokenized only when its key would enter the heap (heap not full
 * or key below the heap's largest); the rest are only parsed and counted.
 * So kvz_corpus_n_eligible_seen counts documents that were tokenized and
 * passed the filter, not every document of the corpus that would pass.
 *
 * Re-reading: per selected document the file, byte offset and length of its
 * raw record (the JSONL line with its newline, or the whole file) and an
 * FNV-1a 64 content hash of those bytes are kept; kvz_corpus_read_text
 * reads the record again and refuses it when the bytes differ.
 *
 * Compressed files (.gz, .zst) cannot be read at an offset without
 * decompressing everything before it, and the oracle reads its documents in
 * key order, not file order (twice: the resume fingerprint, then the
 * prompts), so re-decompressing would cost up to a whole file per document.
 * Instead the heap entry of a document from a compressed file keeps its
 * text (the JSON string value or the decompressed file), copied when it
 * enters the heap and freed when it is pushed out, and read_text returns
 * that copy. Memory: at most train + test texts per subset are alive at any
 * time, each one of a document that passed the length filter (so with
 * max_doc_tokens set, each at most a few bytes per token), i.e. bounded by
 * the quotas, never by the corpus or file size. The copy is what was
 * selected and tokenized, so a file edited afterwards cannot make the
 * dataset inconsistent (the resume fingerprint still notices the edit when
 * the next run selects again). */
#define _POSIX_C_SOURCE 200809L
#include "corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/kvz_file.h"
#include "../model/chat_template.h"
#include "corpus_internal.h"

typedef struct entry {
    uint64_t key;
    char *source;   /* display source, owned */
    size_t rel_off; /* source + rel_off is the hashed id */
    size_t file_index, line;
    uint64_t offset, content_hash;
    size_t length, n_tokens;
    char *text;     /* compressed file: the document text, owned; else NULL */
    size_t text_len;
} entry;

typedef struct subset_heap {
    char *name;
    entry *e; /* max-heap while scanning; sorted ascending afterwards */
    size_t n, cap;
} subset_heap;

struct kvz_corpus {
    char **files;
    size_t n_files;
    char *text_field;
    subset_heap *subsets; /* sorted by name */
    size_t n_subsets;
    entry *entries; /* [n_docs], location of docs[i] */
    kvz_corpus_doc *docs;
    size_t n_docs, n_scanned, n_eligible;
};

/* --- keys --- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t doc_key(uint64_t seed, const char *id)
{
    uint64_t h = kvz_corpus_fnv1a64(id, strlen(id), KVZ_FNV64_OFFSET);
    return mix64(h ^ mix64(seed + 0x9e3779b97f4a7c15ULL));
}

static int cmp_key_id(uint64_t ka, const char *ida, uint64_t kb, const char *idb)
{
    if (ka != kb)
        return ka < kb ? -1 : 1;
    return strcmp(ida, idb);
}

static int cmp_entries(const entry *a, const entry *b)
{
    return cmp_key_id(a->key, a->source + a->rel_off, b->key, b->source + b->rel_off);
}

static int cmp_entries_qsort(const void *a, const void *b)
{
    return cmp_entries(a, b);
}

/* --- bounded max-heap --- */

static void swap_entries(entry *a, entry *b)
{
    entry t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(entry *e, size_t i)
{
    while (i > 0 && cmp_entries(&e[(i - 1) / 2], &e[i]) < 0) {
        swap_entries(&e[(i - 1) / 2], &e[i]);
        i = (i - 1) / 2;
    }
}

static void sift_down(entry *e, size_t n, size_t i)
{
    for (;;) {
        size_t big = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cmp_entries(&e[l], &e[big]) > 0)
            big = l;
        if (r < n && cmp_entries(&e[r], &e[big]) > 0)
            big = r;
        if (big == i)
            return;
        swap_entries(&e[i], &e[big]);
        i = big;
    }
}

/* Adds x (taking its source) to h, dropping the largest when h is at limit. */
static int heap_offer(subset_heap *h, size_t limit, entry *x, kvz_error *err)
{
    if (h->n == limit) {
        free(h->e[0].source);
        free(h->e[0].text);
        h->e[0] = *x;
        sift_down(h->e, h->n, 0);
        return KVZ_OK;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 16;
        cap = cap > limit ? limit : cap;
        entry *p = realloc(h->e, cap * sizeof *p);
        if (!p) {
            free(x->source);
            free(x->text);
            return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
        }
        h->e = p;
        h->cap = cap;
    }
    h->e[h->n] = *x;
    sift_up(h->e, h->n++);
    return KVZ_OK;
}

/* --- subsets --- */

static int find_subset(kvz_corpus *c, const char *name, subset_heap **out, kvz_error *err)
{
    size_t lo = 0, hi = c->n_subsets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(c->subsets[mid].name, name);
        if (d == 0) {
            *out = &c->subsets[mid];
            return KVZ_OK;
        }
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    subset_heap *p = realloc(c->subsets, (c->n_subsets + 1) * sizeof *p);
    if (!p)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    c->subsets = p;
    char *copy = strdup(name);
    if (!copy)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    memmove(&p[lo + 1], &p[lo], (c->n_subsets - lo) * sizeof *p);
    p[lo] = (subset_heap){copy, NULL, 0, 0};
    c->n_subsets++;
    *out = &p[lo];
    return KVZ_OK;
}

/* --- scanning callback --- */

typedef struct select_ctx {
    kvz_corpus *c;
    const kvz_corpus_options *opt;
    const kvz_tokenizer *tok;
    size_t limit;          /* train + test */
    int root_is_dir;
    size_t root_rel_off;   /* for a directory root */
    char *source;          /* reusable buffer */
    size_t source_cap;
    char *key_id;          /* reusable buffer: the hashed id (see the top) */
    size_t key_id_cap;
    size_t n_tokenized, shortest, longest;
} select_ctx;

static size_t rel_offset(const select_ctx *s, const char *file)
{
    if (s->root_is_dir)
        return s->root_rel_off;
    const char *slash = strrchr(file, '/');
    return slash ? (size_t)(slash + 1 - file) : 0;
}

static int grow(char **buf, size_t *cap, size_t need, kvz_error *err)
{
    if (need <= *cap)
        return KVZ_OK;
    char *p = realloc(*buf, need);
    if (!p)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    *buf = p;
    *cap = need;
    return KVZ_OK;
}

/* s->source = the display source id; s->key_id = the id to hash: the part
 * below the root (rel), less a compression suffix. */
static int build_source(select_ctx *s, const kvz_corpus_found *d, size_t rel, kvz_error *err)
{
    size_t need = strlen(d->file) + 32;
    int rc = grow(&s->source, &s->source_cap, need, err);
    if (!rc)
        rc = grow(&s->key_id, &s->key_id_cap, need, err);
    if (rc)
        return rc;
    size_t k;
    kvz_corpus_compression(d->file, &k);
    size_t len = strlen(d->file) - rel;
    int n = (int)(len >= k ? len - k : len);
    if (d->line) {
        snprintf(s->source, s->source_cap, "%s:%zu", d->file, d->line);
        snprintf(s->key_id, s->key_id_cap, "%.*s:%zu", n, d->file + rel, d->line);
    } else {
        snprintf(s->source, s->source_cap, "%s", d->file);
        snprintf(s->key_id, s->key_id_cap, "%.*s", n, d->file + rel);
    }
    return KVZ_OK;
}

static int count_tokens(select_ctx *s, const kvz_corpus_found *d, size_t *n, kvz_error *err)
{
    size_t b, e;
    kvz_py_strip_span(d->text, d->text_len, &b, &e);
    /* counting stops past max_tokens: a huge document costs no more than
     * the filter (kvz_tokenize_count) */
    size_t limit = s->opt->max_tokens ? s->opt->max_tokens : SIZE_MAX - 1;
    int rc = kvz_tokenize_count(s->tok, d->text + b, e - b, 1, limit, n, err);
    if (rc) {
        char why[KVZ_ERRMSG_MAX];
        snprintf(why, sizeof why, "%s", err ? err->msg : "tokenizer failed");
        return kvz_fail(err, rc, "%s: %s", s->source, why);
    }
    s->shortest = s->n_tokenized == 0 || *n < s->shortest ? *n : s->shortest;
    s->longest = *n > s->longest ? *n : s->longest;
    s->n_tokenized++;
    return KVZ_OK;
}

static int passes_filter(const kvz_corpus_options *o, size_t n)
{
    return (o->min_tokens == 0 || n > o->min_tokens) && (o->max_tokens == 0 || n < o->max_tokens);
}

static int on_document(void *ctx, const kvz_corpus_found *d, kvz_error *err)
{
    select_ctx *s = ctx;
    s->c->n_scanned++;
    size_t rel = rel_offset(s, d->file);
    int rc = build_source(s, d, rel, err);
    subset_heap *h = NULL;
    if (!rc)
        rc = find_subset(s->c, d->subset, &h, err);
    if (rc)
        return rc;
    uint64_t key = doc_key(s->opt->seed, s->key_id);
    if (h->n == s->limit &&
        cmp_key_id(key, s->source + rel, h->e[0].key, h->e[0].source + h->e[0].rel_off) >= 0)
        return KVZ_OK;
    size_t n_tokens;
    rc = count_tokens(s, d, &n_tokens, err);
    if (rc || !passes_filter(s->opt, n_tokens))
        return rc;
    s->c->n_eligible++;
    entry x = {key,       strdup(s->source), rel,       d->file_index,   d->line,
               d->offset, d->content_hash,   d->length, n_tokens, NULL, 0};
    if (x.source && d->compressed) { /* kept: see "Compressed files" at the top */
        if ((x.text = malloc(d->text_len + 1)) != NULL) {
            memcpy(x.text, d->text, d->text_len);
            x.text[d->text_len] = '\0';
            x.text_len = d->text_len;
        }
    }
    if (!x.source || (d->compressed && !x.text)) {
        free(x.source);
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    }
    return heap_offer(h, s->limit, &x, err);
}

/* --- selection --- */

/* "over " when a count n was stopped at max_tokens + 1 (kvz_tokenize_count). */
static const char *over(const select_ctx *s, size_t n)
{
    return s->opt->max_tokens && n > s->opt->max_tokens ? "over " : "";
}

static void format_filter(const kvz_corpus_options *o, char *buf, size_t cap)
{
    if (o->min_tokens && o->max_tokens)
        snprintf(buf, cap, "%zu < tokens < %zu", o->min_tokens, o->max_tokens);
    else if (o->min_tokens)
        snprintf(buf, cap, "%zu < tokens", o->min_tokens);
    else
        snprintf(buf, cap, "tokens < %zu", o->max_tokens);
}

static int check_options(const kvz_corpus_options *o, const kvz_tokenizer *tok, kvz_error *err)
{
    if (!o || !o->path || !o->path[0])
        return kvz_fail(err, KVZ_EINVAL, "corpus: no path given");
    if (!tok)
        return kvz_fail(err, KVZ_EINVAL, "corpus '%s': no tokenizer given", o->path);
    if (o->train_per_subset == 0 && o->test_per_subset == 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "corpus '%s': train and test documents per subset are both 0", o->path);
    if (o->max_tokens && o->max_tokens <= o->min_tokens + 1)
        return kvz_fail(err, KVZ_EINVAL, "corpus '%s': no token count n satisfies %zu < n < %zu",
                        o->path, o->min_tokens, o->max_tokens);
    return KVZ_OK;
}

/* Sorts every heap and lays the documents out in the final order. */
static int finish(kvz_corpus *c, const kvz_corpus_options *o, kvz_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < c->n_subsets; i++)
        total += c->subsets[i].n;
    c->entries = calloc(total ? total : 1, sizeof *c->entries);
    c->docs = calloc(total ? total : 1, sizeof *c->docs);
    if (!c->entries || !c->docs)
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    for (size_t i = 0; i < c->n_subsets; i++) {
        subset_heap *h = &c->subsets[i];
        if (h->n > 1)
            qsort(h->e, h->n, sizeof *h->e, cmp_entries_qsort);
        for (size_t k = 0; k < h->n; k++) {
            entry *e = &c->entries[c->n_docs];
            *e = h->e[k];
            c->docs[c->n_docs++] = (kvz_corpus_doc){
                e->source, h->name, k < o->test_per_subset ? KVZ_SPLIT_TEST : KVZ_SPLIT_TRAIN,
                e->n_tokens, e->key};
        }
        free(h->e);
        h->e = NULL;
        h->n = h->cap = 0;
    }
    return KVZ_OK;
}

static int check_outcome(const select_ctx *s, kvz_error *err)
{
    const kvz_corpus *c = s->c;
    if (c->n_scanned == 0)
        return kvz_fail(err, KVZ_EINVAL, "corpus '%s': no documents", s->opt->path);
    if (c->n_eligible == 0) {
        char filter[96];
        format_filter(s->opt, filter, sizeof filter);
        return kvz_fail(err, KVZ_EINVAL,
                        "corpus '%s': no document passes the length filter %s (%zu documents, "
                        "shortest %s%zu, longest %s%zu tokens)",
                        s->opt->path, filter, s->n_tokenized, over(s, s->shortest),
                        *over(s, s->shortest) ? s->opt->max_tokens : s->shortest,
                        over(s, s->longest), *over(s, s->longest) ? s->opt->max_tokens : s->longest);
    }
    return KVZ_OK;
}

static int scan_all(select_ctx *s, kvz_error *err)
{
    kvz_corpus *c = s->c;
    kvz_corpus_fields f = {c->text_field, s->opt->subset_field};
    int rc = KVZ_OK;
    for (size_t i = 0; !rc && i < c->n_files; i++)
        rc = kvz_corpus_scan_file(c->files[i], i, &f, on_document, s, err);
    return rc;
}

int kvz_corpus_select(const kvz_corpus_options *opt, const kvz_tokenizer *tok, kvz_corpus **out,
                      kvz_error *err)
{
    *out = NULL;
    int rc = check_options(opt, tok, err);
    if (rc)
        return rc;
    kvz_corpus *c = calloc(1, sizeof *c);
    if (!c || !(c->text_field = strdup(opt->text_field ? opt->text_field : "text"))) {
        free(c);
        return kvz_fail(err, KVZ_ENOMEM, "corpus: out of memory");
    }
    size_t plen = strlen(opt->path);
    select_ctx s = {c, opt, tok, opt->train_per_subset + opt->test_per_subset,
                    kvz_path_is_dir(opt->path), plen + (opt->path[plen - 1] != '/'),
                    NULL, 0, NULL, 0, 0, 0, 0};
    rc = kvz_corpus_list_files(opt->path, &c->files, &c->n_files, err);
    if (!rc)
        rc = scan_all(&s, err);
    if (!rc)
        rc = check_outcome(&s, err);
    if (!rc)
        rc = finish(c, opt, err);
    free(s.source);
    free(s.key_id);
    if (rc) {
        kvz_corpus_free(c);
        return rc;
    }
    *out = c;
    return KVZ_OK;
}

void kvz_corpus_free(kvz_corpus *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_subsets; i++) {
        for (size_t k = 0; k < c->subsets[i].n; k++) {
            free(c->subsets[i].e[k].source);
            free(c->subsets[i].e[k].text);
        }
        free(c->subsets[i].e);
        free(c->subsets[i].name);
    }
    for (size_t i = 0; i < c->n_docs; i++) {
        free(c->entries[i].source);
        free(c->entries[i].text);
    }
    free(c->subsets);
    free(c->entries);
    free(c->docs);
    kvz_corpus_free_files(c->files, c->n_files);
    free(c->text_field);
    free(c);
}

size_t kvz_corpus_count(const kvz_corpus *c)
{
    return c ? c->n_docs : 0;
}

const kvz_corpus_doc *kvz_corpus_doc_at(const kvz_corpus *c, size_t index)
{
    return c && index < c->n_docs ? &c->docs[index] : NULL;
}

size_t kvz_corpus_n_scanned(const kvz_corpus *c)
{
    return c ? c->n_scanned : 0;
}

size_t kvz_corpus_n_eligible_seen(const kvz_corpus *c)
{
    return c ? c->n_eligible : 0;
}

/* --- re-reading --- */

/* Reads e's raw record from path into *raw (malloc'ed, NUL-terminated) and
 * checks that it is byte-for-byte what was selected. */
static int read_record(const char *path, const char *source, const entry *e, char **raw,
                       kvz_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", source, strerror(errno));
    struct stat st;
    char *buf = malloc(e->length + 1);
    int rc = KVZ_OK;
    if (!buf)
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", source);
    else if (fstat(fileno(fp), &st) != 0 || fseeko(fp, (off_t)e->offset, SEEK_SET) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot seek: %s", source, strerror(errno));
    else if ((uint64_t)st.st_size < e->offset + e->length ||
             fread(buf, 1, e->length, fp) != e->length)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: changed since selection: the file is now %lld bytes",
                      source, (long long)st.st_size);
    else if ((e->line == 0 || buf[e->length - 1] != '\n') &&
             (uint64_t)st.st_size != e->offset + e->length)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: changed since selection: the record grew", source);
    else if (kvz_corpus_fnv1a64(buf, e->length, KVZ_FNV64_OFFSET) != e->content_hash)
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: changed since selection (content hash differs)",
                      source);
    fclose(fp);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[e->length] = '\0';
    *raw = buf;
    return KVZ_OK;
}

static int text_of_line(const kvz_corpus *c, const entry *e, const char *raw, char **text,
                        size_t *len, kvz_error *err)
{
    kvz_corpus_fields f = {c->text_field, NULL};
    json_t *root;
    const char *t, *subset;
    size_t n;
    int rc = kvz_corpus_parse_line(c->files[e->file_index], e->line, raw, e->length, &f, "",
                                   &root, &t, &n, &subset, err);
    if (rc)
        return rc;
    *text = malloc(n + 1);
    if (*text) {
        memcpy(*text, t, n);
        (*text)[n] = '\0';
        *len = n;
    }
    json_decref(root);
    return *text ? KVZ_OK : kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", e->source);
}

int kvz_corpus_read_text(const kvz_corpus *c, size_t index, char **text, size_t *len,
                         kvz_error *err)
{
    *text = NULL;
    if (len)
        *len = 0;
    if (!c || index >= c->n_docs)
        return kvz_fail(err, KVZ_EINVAL, "corpus: no document %zu (%zu selected)", index,
                        c ? c->n_docs : 0);
    const entry *e = &c->entries[index];
    char *raw = NULL;
    size_t dummy;
    if (e->text) { /* a compressed file's document: the text kept at selection */
        if (!(*text = malloc(e->text_len + 1)))
            return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", e->source);
        memcpy(*text, e->text, e->text_len + 1);
        *(len ? len : &dummy) = e->text_len;
        return KVZ_OK;
    }
    int rc = read_record(c->files[e->file_index], e->source, e, &raw, err);
    if (rc)
        return rc;
    if (e->line == 0) {
        *text = raw;
        *(len ? len : &dummy) = e->length;
        return KVZ_OK;
    }
    rc = text_of_line(c, e, raw, text, len ? len : &dummy, err);
    free(raw);
    return rc;
}
