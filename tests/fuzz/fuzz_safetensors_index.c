/* fuzz_safetensors_index: a sharded checkpoint's model.safetensors.index.json
 * (the fuzz input) in a directory that also holds two valid shards,
 * model-00001-of-00002.safetensors (the Linear export fixture: layers.{0,1,2}.
 * {weight,bias}) and model-00002-of-00002.safetensors (the MLP one:
 * layers.{0,1,2}.{0,2}.{weight,bias}); opened by directory as kvzap does for
 * an HF checkpoint (index preferred), then every tensor walked. */
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "fuzz_st_walk.h"

static char g_dir[1200];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[1400];
    kvz_fuzz_tmp_path("ckpt", g_dir, sizeof g_dir);
    if (mkdir(g_dir, 0700) != 0)
        abort();
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", g_dir);
    kvz_fuzz_copy_fixture("export/linear_f32/model.safetensors", path);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", g_dir);
    kvz_fuzz_copy_fixture("export/mlp_bf16/model.safetensors", path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", g_dir);
    kvz_fuzz_write_file(path, data, size);
    kvz_safetensors *st = NULL;
    kvz_error err = {0};
    if (kvz_safetensors_open(g_dir, &st, &err) == KVZ_OK)
        kvz_fuzz_st_walk(st);
    kvz_safetensors_close(st);
    return 0;
}
