/* fuzz_corpus_text: the oracle's corpus selection on an arbitrary plain-text
 * file (one document: UTF-8 check, Python strip, token count), then the
 * document re-read. */
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
    kvz_fuzz_corpus_run("notes.txt", data, size);
    return 0;
}
