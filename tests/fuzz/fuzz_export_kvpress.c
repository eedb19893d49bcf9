/* fuzz_export_kvpress: the surrogate export reader (trainer/export.h) on an
 * arbitrary kvpress directory, as `kvzap export --check` and `kvzap score`
 * read it. Input: a 2-byte little-endian length n, then n bytes of
 * config.json, then model.safetensors (the rest). Both files are rewritten
 * in one directory; kvz_export_check runs on it, then kvz_export_load, and a
 * loaded surrogate predicts two rows for every layer. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "fuzz_export.h"

static char g_dir[1200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kvz_fuzz_tmp_path("surrogate", g_dir, sizeof g_dir);
    if (mkdir(g_dir, 0700) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n = kvz_fuzz_le16(data);
    if (n > size - 2)
        n = size - 2;
    char path[1400];
    snprintf(path, sizeof path, "%s/config.json", g_dir);
    kvz_fuzz_write_file(path, data + 2, n);
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    kvz_fuzz_write_file(path, data + 2 + n, size - 2 - n);
    kvz_fuzz_export_read(g_dir);
    return 0;
}
