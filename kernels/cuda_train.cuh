/* cuda_train.cuh: the trainer ops on the GPU (kernels/cuda_train.cu), which
 * the cuda backend's trainer ops call (kernels/backend_cuda.cu; contracts
 * in ops/backend.h "trainer ops"). CUDA-only, internal to kernels/. Every
 * array is device memory; work is queued on the legacy default stream and
 * not waited for, except where a function says it waits. `partial` is
 * reduction scratch of KVZ_TRAIN_PARTIALS doubles. */
#ifndef KVZ_CUDA_TRAIN_CUH
#define KVZ_CUDA_TRAIN_CUH

#include <cublas_v2.h>

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "../common/kvz_error.h"
#include "../ops/backend.h"
}

enum { KVZ_TRAIN_PARTIALS = 241 }; /* 240 block partials + one result slot */

int kvz_cuda_train_bias_rows(float *out, const float *bias, size_t n, size_t m, kvz_error *err);
int kvz_cuda_train_col_sums(const float *v, size_t n, size_t m, float *out, kvz_error *err);
int kvz_cuda_train_gelu(const float *h, float *a, size_t count, kvz_error *err);
int kvz_cuda_train_gelu_backward(const float *h, float *da, size_t count, kvz_error *err);
int kvz_cuda_train_mse(const float *pred, const float *y, size_t count, float *dy, double *loss,
                       double *partial, kvz_error *err);
/* norm: where the norm goes (partial + KVZ_TRAIN_PARTIALS - 1 when NULL). */
int kvz_cuda_train_clip(float *g, size_t count, double max_norm, double *norm, double *partial,
                        kvz_error *err);
int kvz_cuda_train_adamw(float *param, const float *grad, float *m, float *v, size_t count,
                         const kvz_adamw_args *a, kvz_error *err);
int kvz_cuda_train_combine(float *dst, const float *const *src, const float *weight,
                           size_t n_src, size_t count, double *loss_dst, const double *loss,
                           const size_t *rows, kvz_error *err);
/* src_f16: src holds fp16 (else fp32). Indices are not checked. */
int kvz_cuda_train_take_rows(const void *src, int src_f16, size_t width, const int64_t *idx,
                             size_t row0, size_t n, float *dst, kvz_error *err);
/* kvz_op_ridge_add with blas (pedantic math, legacy stream); flag: one
 * device unsigned long long. Waits for the finiteness check. */
int kvz_cuda_train_ridge_add(cublasHandle_t blas, const float *x, const float *y, size_t n,
                             size_t D, size_t H, double *scratch, size_t block, double *sums,
                             unsigned long long *flag, kvz_error *err);

#endif
