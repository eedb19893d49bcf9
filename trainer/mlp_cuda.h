/* mlp_cuda: the MLP recipe of mlp.h trained on a CUDA device. Same options,
 * same RNG, same validation split and per-epoch permutations as
 * kvz_mlp_train, so a float32 run can be compared with the CPU trainer step
 * by step; the batches are gathered on the device from a device-resident
 * copy of the layer's training rows (kernels/kvz_cuda_train.h). */
#ifndef KVZ_MLP_CUDA_H
#define KVZ_MLP_CUDA_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../kernels/kvz_cuda_train.h"
#include "mlp.h"

/* GEMM precision of the device trainer (train.gpu_precision). */
typedef enum kvz_mlp_cuda_precision {
    KVZ_MLP_CUDA_FLOAT32 = 0, /* strict fp32 GEMMs (default; comparable to the CPU) */
    KVZ_MLP_CUDA_TF32,        /* TF32 tensor cores, fp32 everything else */
    KVZ_MLP_CUDA_BFLOAT16     /* bf16 GEMM inputs, fp32 accumulation and master weights */
} kvz_mlp_cuda_precision;

typedef struct kvz_mlp_cuda_options {
    kvz_mlp_cuda_precision precision;
} kvz_mlp_cuda_options;

/* "float32" / "tf32" / "bfloat16". */
const char *kvz_mlp_cuda_precision_name(kvz_mlp_cuda_precision p);

/* Trains on the n rows held by `rows` (kvz_cuda_rows_count(rows) == n; x
 * must be finite there, as the layer reader guarantees); y_host [n, Hkv] is a
 * host copy of the targets (finiteness check, init_b2_mean). params, log and
 * the result contract are those of kvz_mlp_train. co NULL = float32.
 * Errors: those of kvz_mlp_train, plus KVZ_EIO / KVZ_ENOMEM from the device,
 * KVZ_EUNSUPPORTED without CUDA. */
int kvz_mlp_train_cuda(kvz_mlp_shape s, const kvz_cuda_rows *rows, const float *y_host, size_t n,
                       const kvz_mlp_options *o, const kvz_mlp_cuda_options *co,
                       kvz_surrogate_layer params, kvz_mlp_log *log, kvz_error *err);

/* Convenience: uploads host rows x [n, D], y [n, Hkv] (fp32 on the device)
 * and calls kvz_mlp_train_cuda. */
int kvz_mlp_train_cuda_host(kvz_mlp_shape s, const float *x, const float *y, size_t n,
                            const kvz_mlp_options *o, const kvz_mlp_cuda_options *co,
                            kvz_surrogate_layer params, kvz_mlp_log *log, kvz_error *err);

/* Fits the ridge (kvz_ridge_solve, alpha) from the rows held on the device:
 * float64 sums accumulated with kvz_cuda_ridge_* in blocks, downloaded,
 * solved on the host into w [Hkv, D] and b [Hkv]. */
int kvz_ridge_fit_cuda(const kvz_cuda_rows *rows, size_t d_in, size_t d_out, double alpha,
                       float *w, float *b, kvz_error *err);

#endif
