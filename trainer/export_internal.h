/* export_internal: what export.c, export_kvpress.c and export_gguf.c share
 * (not public API): the tensor plan (names, PyTorch shapes, where each
 * tensor's floats live in a surrogate), dtype encoding, and the two format
 * back ends. */
#ifndef KVZ_EXPORT_INTERNAL_H
#define KVZ_EXPORT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

#define KVZ_EXPORT_NAME_MAX 48

typedef struct kvz_export_tensor {
    char name[KVZ_EXPORT_NAME_MAX];
    size_t n_dims;      /* 1 (bias) or 2 (weight) */
    size_t shape[2];    /* PyTorch order: [out, in] or [out] */
    size_t numel;
    size_t offset;      /* floats from the surrogate's params start */
} kvz_export_tensor;

/* The tensors of a surrogate with these sizes, layer by layer (module 0's
 * tensors first). *out is malloc'ed. */
int kvz_export_plan(int kind, size_t n_layers, size_t d_hidden, size_t d_in, size_t d_out,
                    kvz_export_tensor **out, size_t *n_out, kvz_error *err);

size_t kvz_export_dtype_size(kvz_export_dtype dtype);
/* Little-endian encoding of src[n] into dst[n * dtype size]. */
void kvz_export_encode(const float *src, size_t n, kvz_export_dtype dtype, unsigned char *dst);
/* KVZ_EINVAL naming the tensor when a value is non-finite or (F16) too large. */
int kvz_export_check_values(const float *v, size_t n, kvz_export_dtype dtype, const char *what,
                            const char *tensor, kvz_error *err);

/* Fills the size/format fields of rep (keeps target_arch and thresholds). */
void kvz_export_report_fill(kvz_export_report *rep, kvz_export_format format,
                            kvz_export_dtype dtype, const kvz_surrogate *s, size_t n_tensors);
/* "[a, b]" text of a shape (uint64 dims, PyTorch order) or of a plan entry. */
void kvz_export_shape_str(const uint64_t *dims, size_t n_dims, char *buf, size_t cap);
void kvz_export_plan_shape_str(const kvz_export_tensor *t, char *buf, size_t cap);

int kvz_export_write_kvpress(const kvz_surrogate *s, const char *path,
                             const kvz_export_options *opt, kvz_error *err);
int kvz_export_write_gguf(const kvz_surrogate *s, const char *path,
                          const kvz_export_options *opt, kvz_error *err);

/* Validate an export; when out is non-NULL also return it as a surrogate. */
int kvz_export_read_kvpress(const char *path, kvz_export_report *rep, kvz_surrogate **out,
                            kvz_error *err);
int kvz_export_read_gguf(const char *path, kvz_export_report *rep, kvz_surrogate **out,
                         kvz_error *err);

#endif
