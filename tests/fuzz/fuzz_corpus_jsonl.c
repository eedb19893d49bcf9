/* fuzz_corpus_jsonl: the oracle's corpus selection on an arbitrary .jsonl
 * file (one JSON object per line, "text" and optional "subset" fields, blank
 * lines, UTF-8 checks), then every selected document re-read. */
#include "fuzz_corpus.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kvz_fuzz_corpus_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvz_fuzz_corpus_run("docs.jsonl", data, size);
    return 0;
}
