/* fuzz_safetensors: model/safetensors.h on one arbitrary .safetensors file
 * (header length, JSON header, offsets and sizes against the file size,
 * __metadata__), then every tensor looked up and converted to fp32. */
#include "fuzz_common.h"
#include "fuzz_st_walk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("model.safetensors", path, sizeof path), data, size);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    if (kvz_safetensors_open(path, &st, &err) == KVZ_OK)
        kvz_fuzz_st_walk(st);
    kvz_safetensors_close(st);
    return 0;
}
