/* corpus: which documents the oracle harvests, read from plain-text files,
 * directories of them, or JSONL (spec 1.4, reference corpus selection).
 *
 * Selection is streaming and deterministic for a seed: every document gets a
 * 64-bit key = hash(seed, source id), the id taken relative to the corpus
 * root ("sub/a.txt" for a text file, "code.jsonl:17" for a JSONL line; a
 * single-file corpus uses the file's base name), so moving the corpus or
 * naming it by a relative or absolute path keeps the selection; per subset the documents with the smallest
 * keys that pass the length filter are kept, up to train + test of them
 * (a bounded max-heap, so memory depends on the quotas, never on the corpus
 * size; only documents whose key would enter the heap are tokenized). Within a
 * subset, kept documents sorted by key: the first `test_per_subset` are the
 * test split, the rest train. Final order: subsets by name (byte order),
 * test split before train, then key. This order is the dataset's document
 * index 0..n-1 and does not depend on file order, thread count or resume.
 *
 * Inputs:
 *   - a file ending in ".jsonl": one
 *     JSON object per line; text_field (default "text") must be a string;
 *     subset_field (optional) a string; blank lines are skipped; a line that
 *     is not an object or lacks text_field is an error naming file:line.
 *   - any other regular file: one document (whole file), subset = the file's
 *     base name without extension.
 *   - a directory: every regular file in it (recursively, sorted by path,
 *     hidden files skipped), each treated as above.
 *   - compressed files, told by name: a ".gz" suffix (gzip; concatenated
 *     members read as gzip -d does) or ".zst" (zstd; any number of frames) is
 *     decompressed while streaming and what is left of the name decides as
 *     above: "x.jsonl.gz" / "x.jsonl.zst" are JSONL read line by line (memory:
 *     fixed buffers plus the longest line), "x.txt.gz" / "x.txt.zst" (any
 *     other name) one text document. Subset labels, keys and hence the
 *     selection are those of the uncompressed file ("x.jsonl.gz:17" is keyed
 *     as "x.jsonl:17"); source ids name the real file. A truncated or corrupt
 *     stream is a KVZ_EFORMAT naming the file; a 0-byte file is empty.
 * Subset label: subset_field when set and present in the JSONL object, else
 * the file's base name without extension (e.g. "code" for code.jsonl).
 * Text must be valid UTF-8 (error names file[:line] and byte offset).
 * Token count = kvz_tokenize(tok, text stripped as Python str.strip(),
 * add_special = 1) count; filter keeps min_tokens < n < max_tokens
 * (0 = no bound on that side). */
#ifndef KVZ_CORPUS_H
#define KVZ_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../model/tokenizer.h"

enum { KVZ_SPLIT_TRAIN = 0, KVZ_SPLIT_TEST = 1 };

typedef struct kvz_corpus_options {
    const char *path;                     /* file or directory */
    const char *text_field;               /* JSONL; NULL = "text" */
    const char *subset_field;             /* JSONL; NULL = none */
    size_t min_tokens, max_tokens;        /* exclusive bounds; 0 = unbounded */
    size_t train_per_subset, test_per_subset; /* both 0 is an error */
    uint64_t seed;
} kvz_corpus_options;

/* One selected document. Strings are owned by the corpus. */
typedef struct kvz_corpus_doc {
    const char *source;  /* "data/x.txt" or "data/x.jsonl:17" (1-based line) */
    const char *subset;
    int split;           /* KVZ_SPLIT_* */
    size_t n_tokens;     /* token count of the stripped text (see above) */
    uint64_t key;        /* selection key */
} kvz_corpus_doc;

typedef struct kvz_corpus kvz_corpus; /* opaque */

/* Scans opt->path and selects documents. Errors: KVZ_EIO (unreadable path),
 * KVZ_EFORMAT (bad JSONL line, missing/non-string text field, invalid UTF-8:
 * message names file:line), KVZ_EINVAL ("corpus 'x': no documents" when the
 * corpus is empty; "corpus 'x': no document passes the length filter
 * 750 < tokens < 1250 (N documents, shortest A, longest B tokens)"). */
int kvz_corpus_select(const kvz_corpus_options *opt, const kvz_tokenizer *tok,
                      kvz_corpus **out, kvz_error *err);
void kvz_corpus_free(kvz_corpus *c);

size_t kvz_corpus_count(const kvz_corpus *c);
const kvz_corpus_doc *kvz_corpus_doc_at(const kvz_corpus *c, size_t index);
/* Documents scanned / passing the filter (for the run summary). */
size_t kvz_corpus_n_scanned(const kvz_corpus *c);
size_t kvz_corpus_n_eligible_seen(const kvz_corpus *c);

/* Reads document `index`'s text again from its file (NOT stripped; exactly
 * the JSON string value or the file's bytes), into *text (malloc'ed,
 * NUL-terminated) and *len. Memory stays bounded: texts of uncompressed files
 * are not kept. Errors: KVZ_EIO / KVZ_EFORMAT when the file changed since
 * selection (length or content hash differs). A document of a compressed file
 * cannot be read at an offset, so its text is kept from the scan (at most
 * train + test texts per subset alive at once, bounded by the quotas) and
 * returned from memory, whatever happened to the file since. */
int kvz_corpus_read_text(const kvz_corpus *c, size_t index, char **text, size_t *len,
                         kvz_error *err);

#endif
