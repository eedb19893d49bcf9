/* gguf: reader for GGUF v3 files (llama.cpp's single-file checkpoint format).
 * Owns: parsing and validating the header, every metadata value type, the
 * tensor table (offsets, shapes, types checked against the file size), and
 * dequantizing a tensor to fp32 (via dequant.h). The file is memory-mapped;
 * strings returned point into the map and are NOT NUL-terminated (use len).
 * Tensor shapes are in GGML order: ne[0] is the fastest-varying (row length),
 * so a PyTorch [out, in] weight has ne = {in, out}. */
#ifndef KVZ_GGUF_H
#define KVZ_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"

typedef enum kvz_gguf_type {
    KVZ_GGUF_UINT8 = 0,
    KVZ_GGUF_INT8 = 1,
    KVZ_GGUF_UINT16 = 2,
    KVZ_GGUF_INT16 = 3,
    KVZ_GGUF_UINT32 = 4,
    KVZ_GGUF_INT32 = 5,
    KVZ_GGUF_FLOAT32 = 6,
    KVZ_GGUF_BOOL = 7,
    KVZ_GGUF_STRING = 8,
    KVZ_GGUF_ARRAY = 9,
    KVZ_GGUF_UINT64 = 10,
    KVZ_GGUF_INT64 = 11,
    KVZ_GGUF_FLOAT64 = 12
} kvz_gguf_type;

/* ggml tensor types we read (values as in ggml.h). */
enum {
    KVZ_GGML_F32 = 0,
    KVZ_GGML_F16 = 1,
    KVZ_GGML_Q4_0 = 2,
    KVZ_GGML_Q4_1 = 3,
    KVZ_GGML_Q8_0 = 8,
    KVZ_GGML_Q4_K = 12,
    KVZ_GGML_Q6_K = 14,
    KVZ_GGML_BF16 = 30
};

typedef struct kvz_gguf kvz_gguf; /* opaque */

typedef struct kvz_gguf_tensor_info {
    const char *name;     /* NUL-terminated copy owned by the kvz_gguf */
    uint32_t n_dims;      /* 1..4 */
    uint64_t ne[4];       /* GGML order, unused dims = 1 */
    uint32_t type;        /* KVZ_GGML_* */
    uint64_t numel;
    size_t nbytes;
    const void *data;     /* into the mapped file */
} kvz_gguf_tensor_info;

int kvz_gguf_open(const char *path, kvz_gguf **out, kvz_error *err);
void kvz_gguf_close(kvz_gguf *g);
const char *kvz_gguf_path(const kvz_gguf *g);
uint32_t kvz_gguf_version(const kvz_gguf *g);

/* --- metadata --- */
size_t kvz_gguf_n_kv(const kvz_gguf *g);
/* Index of key, or -1 when absent. */
long kvz_gguf_find_key(const kvz_gguf *g, const char *key);
const char *kvz_gguf_key_name(const kvz_gguf *g, size_t i); /* NUL-terminated */
kvz_gguf_type kvz_gguf_kv_type(const kvz_gguf *g, size_t i);

/* Typed getters by key. Integers of any width/sign convert when the value
 * fits; floats accept FLOAT32/FLOAT64 (and integers). Absent key: KVZ_ENOTFOUND;
 * wrong type: KVZ_EFORMAT. Messages name the file and key. */
int kvz_gguf_get_u64(const kvz_gguf *g, const char *key, uint64_t *out, kvz_error *err);
int kvz_gguf_get_i64(const kvz_gguf *g, const char *key, int64_t *out, kvz_error *err);
int kvz_gguf_get_f64(const kvz_gguf *g, const char *key, double *out, kvz_error *err);
int kvz_gguf_get_bool(const kvz_gguf *g, const char *key, int *out, kvz_error *err);
int kvz_gguf_get_str(const kvz_gguf *g, const char *key, const char **s, size_t *len,
                     kvz_error *err);

/* Arrays: element type and count, then element access by index (O(1);
 * string arrays get an offset table built at open). */
int kvz_gguf_get_array(const kvz_gguf *g, const char *key, kvz_gguf_type *elem_type,
                       size_t *count, kvz_error *err);
int kvz_gguf_array_str(const kvz_gguf *g, const char *key, size_t i, const char **s,
                       size_t *len, kvz_error *err);
int kvz_gguf_array_i64(const kvz_gguf *g, const char *key, size_t i, int64_t *out,
                       kvz_error *err);
int kvz_gguf_array_f64(const kvz_gguf *g, const char *key, size_t i, double *out,
                       kvz_error *err);
/* Added: unsigned elements (u64 values above INT64_MAX) and bool elements. */
int kvz_gguf_array_u64(const kvz_gguf *g, const char *key, size_t i, uint64_t *out,
                       kvz_error *err);
int kvz_gguf_array_bool(const kvz_gguf *g, const char *key, size_t i, int *out,
                        kvz_error *err);

/* Added: layout facts (for dumps). Alignment: general.alignment or 32;
 * data offset: absolute file offset of the tensor data section. */
size_t kvz_gguf_alignment(const kvz_gguf *g);
uint64_t kvz_gguf_data_offset(const kvz_gguf *g);

/* --- tensors --- */
size_t kvz_gguf_n_tensors(const kvz_gguf *g);
const kvz_gguf_tensor_info *kvz_gguf_tensor(const kvz_gguf *g, size_t i);
const kvz_gguf_tensor_info *kvz_gguf_find_tensor(const kvz_gguf *g, const char *name);
/* Dequantizes the whole tensor into out[numel] (row-major, GGML order). */
int kvz_gguf_tensor_to_f32(const kvz_gguf *g, const kvz_gguf_tensor_info *t, float *out,
                           kvz_error *err);
/* Name of any type ggml defines ("Q4_1", "Q5_K", ...) or NULL if ggml has no
 * such type; kvz_ggml_type_supported (dequant.h) says which ones dequantize. */
const char *kvz_ggml_type_name(uint32_t type);

/* Added: the tensor's data offset as stored (relative to the data section). */
uint64_t kvz_gguf_tensor_offset(const kvz_gguf *g, const kvz_gguf_tensor_info *t);
/* Added: dequantizes rows [first_row, first_row + n_rows) (a row is ne[0]
 * elements) into out[n_rows * ne[0]]. KVZ_EINVAL when out of range. */
int kvz_gguf_tensor_rows_to_f32(const kvz_gguf *g, const kvz_gguf_tensor_info *t,
                                size_t first_row, size_t n_rows, float *out, kvz_error *err);

#endif
