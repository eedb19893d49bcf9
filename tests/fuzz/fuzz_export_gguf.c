/* fuzz_export_gguf: the surrogate export reader (trainer/export.h) on an
 * arbitrary .gguf export (general.architecture "kvzap", kvzap.* metadata,
 * layers.* tensors), as `kvzap export --check` and `kvzap score` read it:
 * kvz_export_check, kvz_export_load, and two predicted rows per layer. */
#include "fuzz_common.h"
#include "fuzz_export.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("surrogate.gguf", path, sizeof path), data, size);
    kvz_fuzz_export_read(path);
    return 0;
}
