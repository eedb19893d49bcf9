/* fuzz_st_walk: the tensor walk the safetensors targets share (header-only). */
#ifndef KVZ_FUZZ_ST_WALK_H
#define KVZ_FUZZ_ST_WALK_H

#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

#define KVZ_FUZZ_ST_MAX_NUMEL (1u << 18)

/* Every tensor: lookup by name, its file, and fp32 conversion when small. */
static void kvz_fuzz_st_walk(const kvz_safetensors *st)
{
    (void)kvz_safetensors_metadata(st, "format");
    (void)kvz_safetensors_path(st);
    for (size_t i = 0; i < kvz_safetensors_n_files(st); i++) {
        (void)kvz_safetensors_file_path(st, i);
        (void)kvz_safetensors_file_size(st, i);
    }
    for (size_t i = 0; i < kvz_safetensors_n_tensors(st); i++) {
        const kvz_st_tensor *t = kvz_safetensors_tensor(st, i);
        if (kvz_safetensors_find(st, t->name) != t)
            abort(); /* every listed tensor is found under its own name */
        if (t->file_index >= kvz_safetensors_n_files(st))
            abort();
        (void)kvz_st_dtype_name(t->dtype);
        if (t->nbytes) {
            volatile const unsigned char *p = t->data;
            (void)p[0];
            (void)p[t->nbytes - 1]; /* the data lies in the mapped file */
        }
        if (t->numel > KVZ_FUZZ_ST_MAX_NUMEL)
            continue;
        float *out = malloc((t->numel ? (size_t)t->numel : 1) * sizeof *out);
        if (!out)
            abort();
        kvz_error err = {0};
        kvz_safetensors_to_f32(st, t, out, (size_t)t->numel, &err);
        free(out);
    }
}

#endif
