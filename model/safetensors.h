/* safetensors: reader for Hugging Face safetensors checkpoints, one file or
 * sharded (model.safetensors.index.json -> several files).
 * Owns: mapping the files, parsing the 8-byte little-endian header length and
 * the JSON header (incl. "__metadata__"), validating every header field
 * against the file size (offsets in range, contiguous, sizes == numel x dtype
 * size), merging shards (each referenced shard exists and holds its tensors,
 * no tensor stored twice) and converting F32/F16/BF16 tensors to fp32.
 * Other dtypes (I64, F64, F8, ...) are parsed but refused as weights. */
#ifndef KVZ_SAFETENSORS_H
#define KVZ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"

typedef enum kvz_st_dtype {
    KVZ_ST_BOOL,
    KVZ_ST_U8,
    KVZ_ST_I8,
    KVZ_ST_F8_E5M2,
    KVZ_ST_F8_E4M3,
    KVZ_ST_I16,
    KVZ_ST_U16,
    KVZ_ST_F16,
    KVZ_ST_BF16,
    KVZ_ST_I32,
    KVZ_ST_U32,
    KVZ_ST_F32,
    KVZ_ST_F64,
    KVZ_ST_I64,
    KVZ_ST_U64,
    KVZ_ST_N_DTYPES
} kvz_st_dtype;

#define KVZ_ST_MAX_DIMS 8

typedef struct kvz_st_tensor {
    const char *name;              /* NUL-terminated, owned by the kvz_safetensors */
    kvz_st_dtype dtype;
    uint32_t n_dims;               /* 0 (scalar) .. KVZ_ST_MAX_DIMS */
    uint64_t shape[KVZ_ST_MAX_DIMS]; /* PyTorch order */
    uint64_t numel;
    size_t nbytes;
    const void *data;              /* into the mapped file; may be unaligned */
    size_t file_index;             /* which file (kvz_safetensors_file_path) */
} kvz_st_tensor;

typedef struct kvz_safetensors kvz_safetensors; /* opaque */

/* path: a .safetensors file, a model.safetensors.index.json, or a directory
 * holding model.safetensors.index.json (preferred) or model.safetensors. */
int kvz_safetensors_open(const char *path, kvz_safetensors **out, kvz_error *err);
void kvz_safetensors_close(kvz_safetensors *st);

/* Tensors, sorted by name. */
size_t kvz_safetensors_n_tensors(const kvz_safetensors *st);
const kvz_st_tensor *kvz_safetensors_tensor(const kvz_safetensors *st, size_t i);
const kvz_st_tensor *kvz_safetensors_find(const kvz_safetensors *st, const char *name);

/* The mapped files (one, or the shards in index order) and their sizes. */
size_t kvz_safetensors_n_files(const kvz_safetensors *st);
const char *kvz_safetensors_file_path(const kvz_safetensors *st, size_t i);
size_t kvz_safetensors_file_size(const kvz_safetensors *st, size_t i);
/* The index file when sharded, else the single file. */
const char *kvz_safetensors_path(const kvz_safetensors *st);

/* A string value of the first file's "__metadata__", or NULL. */
const char *kvz_safetensors_metadata(const kvz_safetensors *st, const char *key);

/* Converts an F32/F16/BF16 tensor to fp32 into out[out_numel] (out_numel must
 * equal t->numel). Other dtypes: KVZ_EUNSUPPORTED naming the file and tensor. */
int kvz_safetensors_to_f32(const kvz_safetensors *st, const kvz_st_tensor *t, float *out,
                           size_t out_numel, kvz_error *err);

const char *kvz_st_dtype_name(kvz_st_dtype dtype); /* "F32", "BF16", ... */
size_t kvz_st_dtype_size(kvz_st_dtype dtype);      /* bytes per element */
int kvz_st_dtype_is_float_weight(kvz_st_dtype dtype); /* F32, F16 or BF16 */

#endif
