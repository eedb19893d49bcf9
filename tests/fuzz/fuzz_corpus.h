/* fuzz_corpus: the corpus scan the corpus targets share (header-only): the
 * selection `kvzap oracle` runs (data/corpus.h, with a small fixed tokenizer
 * from tests/fixtures), then every selected document read back as the oracle
 * does for its corpus fingerprint and its prompts. */
#ifndef KVZ_FUZZ_CORPUS_H
#define KVZ_FUZZ_CORPUS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/corpus.h"
#include "fuzz_common.h"

static kvz_tokenizer *g_corpus_tok;

static void kvz_fuzz_corpus_init(void)
{
    char path[2048];
    kvz_error err = {0};
    if (kvz_tokenizer_load(kvz_fuzz_fixture_path("tokenizer/synthetic/tokenizer.json", path,
                                                 sizeof path),
                           &g_corpus_tok, &err) != KVZ_OK) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
}

/* Writes the input to tmpdir/name and selects from it. */
static void kvz_fuzz_corpus_run(const char *name, const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path(name, path, sizeof path), data, size);
    kvz_corpus_options opt = {0};
    opt.path = path;
    opt.text_field = NULL; /* "text" */
    opt.subset_field = "subset";
    opt.min_tokens = 0;
    opt.max_tokens = 4096;
    opt.train_per_subset = 3;
    opt.test_per_subset = 1;
    opt.seed = 42;
    kvz_corpus *c = NULL;
    kvz_error err = {0};
    if (kvz_corpus_select(&opt, g_corpus_tok, &c, &err) == KVZ_OK) {
        (void)kvz_corpus_n_scanned(c);
        (void)kvz_corpus_n_eligible_seen(c);
        for (size_t i = 0; i < kvz_corpus_count(c); i++) {
            const kvz_corpus_doc *d = kvz_corpus_doc_at(c, i);
            (void)strlen(d->source);
            (void)strlen(d->subset);
            char *text = NULL;
            size_t len = 0;
            if (kvz_corpus_read_text(c, i, &text, &len, &err) == KVZ_OK)
                free(text);
        }
    }
    kvz_corpus_free(c);
}

#endif
