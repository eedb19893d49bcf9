/* export: writing, checking and loading KVzap surrogate exports (spec 4).
 * Two formats:
 *   - kvpress: a directory with config.json (model_type "kvzap", input_dim,
 *     output_dim, n_modules, hidden_dim or null, architectures
 *     ["KVzapModel"], "torch_dtype" and "dtype", optional provenance under
 *     "kvzap") and model.safetensors (metadata {"format": "pt"}; tensors
 *     layers.{i}.weight/bias for Linear, layers.{i}.0.* and layers.{i}.2.*
 *     for MLP), which kvpress's KVzapModel.from_pretrained loads;
 *   - gguf: one .gguf file, general.architecture "kvzap", kvzap.* metadata,
 *     the same tensor names (GGML dim order), alignment 32.
 * Tensors are BF16 (default; round-to-nearest-even, NaN kept), F16 or F32.
 * Writes are atomic: a temporary beside the destination, renamed into place;
 * an existing destination is an error unless overwrite is set. */
#ifndef KVZ_EXPORT_H
#define KVZ_EXPORT_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"
#include "surrogate.h"

typedef enum kvz_export_format { KVZ_EXPORT_KVPRESS = 0, KVZ_EXPORT_GGUF = 1 } kvz_export_format;

typedef enum kvz_export_dtype {
    KVZ_EXPORT_BF16 = 0,
    KVZ_EXPORT_F16 = 1,
    KVZ_EXPORT_F32 = 2
} kvz_export_dtype;

#define KVZ_EXPORT_MAX_THRESHOLDS 64

/* Optional provenance; every field may be NULL / 0. */
typedef struct kvz_export_info {
    const char *source_model;  /* the LLM the surrogate was trained for (path or HF id) */
    const char *target_arch;   /* its architecture string ("llama", "qwen3", ...) */
    const char *dataset;       /* training data description */
    const char *metrics_json;  /* a JSON object (text) summarizing held-out metrics */
    const double *thresholds;  /* suggested thresholds tau (log-score units) */
    size_t n_thresholds;       /* <= KVZ_EXPORT_MAX_THRESHOLDS */
    const char *source_model_sha256; /* content hash of the LLM's checkpoint files
                                        (the oracle dataset's model_sha256) */
} kvz_export_info;

typedef struct kvz_export_options {
    kvz_export_format format;
    kvz_export_dtype dtype;
    int overwrite;               /* replace an existing export at the destination */
    const kvz_export_info *info; /* NULL: no provenance */
} kvz_export_options;

/* Defaults: kvpress directory, BF16, no overwrite, no provenance. */
kvz_export_options kvz_export_default_options(void);

/* Writes s to path. Refuses non-finite parameters (and values F16 cannot
 * hold) with KVZ_EINVAL; an unwritable destination is KVZ_EIO naming the
 * path, with nothing left behind. */
int kvz_export_write(const kvz_surrogate *s, const char *path, const kvz_export_options *opt,
                     kvz_error *err);

/* What an export holds, as found by kvz_export_check. */
typedef struct kvz_export_report {
    kvz_export_format format;
    kvz_export_dtype dtype;
    int kind;                  /* KVZ_SURROGATE_KIND_* */
    size_t n_layers, d_in, d_hidden, d_out;
    size_t n_tensors;
    size_t n_params;
    char target_arch[64];      /* "" when not recorded */
    size_t n_thresholds;
    double thresholds[KVZ_EXPORT_MAX_THRESHOLDS];
} kvz_export_report;

/* Re-reads an export (a kvpress directory, or a .gguf file) and verifies
 * config keys, tensor names, shapes and dtypes, their consistency, that no
 * tensor is missing or extra, and that every value is finite. The first
 * problem found is returned (KVZ_EFORMAT, or KVZ_EIO / KVZ_ENOTFOUND when
 * files are missing) with a message naming the file and the problem.
 * report may be NULL. */
int kvz_export_check(const char *path, kvz_export_report *report_or_NULL, kvz_error *err);

/* Loads either format (after the same checks) into a new float32 surrogate. */
int kvz_export_load(const char *path, kvz_surrogate **out, kvz_error *err);

/* "bfloat16", "float16", "float32" (the names config.json uses). */
const char *kvz_export_dtype_name(kvz_export_dtype dtype);
/* Accepts bf16/bfloat16, f16/fp16/float16/half, f32/fp32/float32/float
 * (case-insensitive). KVZ_EINVAL naming the text otherwise. */
int kvz_export_dtype_parse(const char *text, kvz_export_dtype *out, kvz_error *err);
/* Accepts "kvpress" (also "dir", "safetensors") and "gguf". */
int kvz_export_format_parse(const char *text, kvz_export_format *out, kvz_error *err);

/* float32 -> bfloat16 / IEEE half bits: kvz_f32_to_bf16 and kvz_f32_to_f16
 * of ops/backend.h (round to nearest even). */

#endif
