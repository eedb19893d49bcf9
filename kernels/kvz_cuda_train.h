/* kvz_cuda_train: the plain-C face of the CUDA trainer (no CUDA headers
 * here): one MLP surrogate layer's fp32 training step on the device (forward,
 * MSE loss, backward, clip_grad_norm_, AdamW) and the float64 ridge
 * accumulator. Implemented by kernels/cuda_train.cu in CUDA builds and by
 * kernels/cuda_train_nocuda.c (every function fails with KVZ_EUNSUPPORTED)
 * otherwise.
 *
 * Semantics are those of the CPU trainer, operation by operation:
 *   kvz_cuda_mlp_loss_grad  = kvz_mlp_loss_grad   (trainer/mlp.h)
 *   kvz_cuda_mlp_clip       = kvz_mlp_clip_grad
 *   kvz_cuda_mlp_adamw_step = kvz_mlp_adamw_step
 *   kvz_cuda_ridge_*        = kvz_ridge_acc_*     (trainer/ridge.h)
 * Parameters live in one flat fp32 vector in kvz_mlp_view order (w1, b1, w2,
 * b2; nn.Linear row-major layout, trainer/surrogate.h).
 *
 * Reductions (loss, gradient norm, bias gradients, column sums) are float64
 * and deterministic: each block sums a fixed slice in a fixed tree order and
 * one final block adds the block partials in index order, so a given shape
 * gives bit-identical results run to run (cuBLAS GEMMs are deterministic on
 * one device for a fixed handle and shape as well).
 *
 * Every x_dev / y_dev is a DEVICE pointer (kvz_cuda_alloc), row-major fp32;
 * everything else is host memory. Work runs on the default (legacy) stream;
 * every function that returns a number to the host waits for its work (the
 * *_dev variants return theirs on the device and do not wait). */
#ifndef KVZ_CUDA_TRAIN_H
#define KVZ_CUDA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "../common/kvz_error.h"
#include "../trainer/mlp.h"

/* ---------- MLP training step ---------- */

/* Context flags. Default (0): strict fp32 GEMMs (CUBLAS_PEDANTIC_MATH, no
 * TF32), so results match the CPU trainer to ~1e-6. KVZ_CUDA_TRAIN_TF32:
 * let cuBLAS use TF32 tensor cores (faster, ~1e-3 relative GEMM error). */
enum { KVZ_CUDA_TRAIN_TF32 = 1u, KVZ_CUDA_TRAIN_BF16 = 2u };
/* KVZ_CUDA_TRAIN_BF16: every GEMM reads bfloat16 copies of its two inputs
 * (rounded to nearest even on the device just before the GEMM) and
 * accumulates in fp32 (cublasGemmEx, CUBLAS_COMPUTE_32F); parameters,
 * gradients, AdamW moments and all elementwise work stay fp32 (master
 * weights). Not combinable with TF32. */

typedef struct kvz_cuda_mlp kvz_cuda_mlp; /* opaque; owns its device memory */

/* A context for shape s (D, Dh, Hkv) and batches of at most max_rows rows:
 * params, grads, AdamW m and v (zeroed), activations, reduction scratch and
 * its own cuBLAS handle. Params start at zero: upload them. Errors:
 * KVZ_EINVAL (a zero or huge dimension, max_rows 0 or too large for 32-bit
 * BLAS sizes, unknown flags), KVZ_ENOMEM, KVZ_EIO. */
int kvz_cuda_mlp_create(kvz_mlp_shape s, size_t max_rows, unsigned flags, kvz_cuda_mlp **out,
                        kvz_error *err);
void kvz_cuda_mlp_free(kvz_cuda_mlp *m);

/* Flat parameters [kvz_mlp_n_params(s)] host <-> device. */
int kvz_cuda_mlp_upload_params(kvz_cuda_mlp *m, const float *flat, kvz_error *err);
int kvz_cuda_mlp_download_params(kvz_cuda_mlp *m, float *flat, kvz_error *err);
/* The gradient of the last loss_grad (after any clip) [n_params]; upload
 * replaces it (tests, or a gradient summed elsewhere). */
int kvz_cuda_mlp_download_grad(kvz_cuda_mlp *m, float *grad, kvz_error *err);
int kvz_cuda_mlp_upload_grad(kvz_cuda_mlp *m, const float *grad, kvz_error *err);
/* AdamW moments [n_params] each (m1 = exp_avg, v = exp_avg_sq); either may be
 * NULL. Upload sets them (e.g. to resume); reset zeroes both. */
int kvz_cuda_mlp_download_moments(kvz_cuda_mlp *m, float *m1, float *v, kvz_error *err);
int kvz_cuda_mlp_upload_moments(kvz_cuda_mlp *m, const float *m1, const float *v,
                                kvz_error *err);
int kvz_cuda_mlp_reset_moments(kvz_cuda_mlp *m, kvz_error *err);

/* Forward + MSE loss (float64, over n * Hkv outputs) + backward on n rows
 * (1 <= n <= max_rows) of x_dev [n, D], y_dev [n, Hkv]; the gradient stays on
 * the device. loss is required. Errors: KVZ_EINVAL
 * (n out of range, NULL pointers), KVZ_EIO. */
int kvz_cuda_mlp_loss_grad(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev, size_t n,
                           double *loss, kvz_error *err);
/* Forward + MSE loss only (no gradient): validation batches. Same errors. */
int kvz_cuda_mlp_loss(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev, size_t n,
                      double *loss, kvz_error *err);
/* Device-result variants for a sync-free training loop: the same work and
 * the same arithmetic as the host-returning functions above/below (which are
 * these plus one copy), but the loss sse / (double)(n * Hkv) (resp. the
 * gradient norm) is written to the DEVICE double loss_dev (norm_dev) and
 * nothing waits. In clip_dev the clip coefficient is computed on the device
 * from that norm: when max_norm > 0 and coef = max_norm / (norm + 1e-6) < 1,
 * the gradient is scaled by (float)coef. loss_dev is required; norm_dev may
 * be NULL (the context's scratch slot is used). */
int kvz_cuda_mlp_loss_grad_dev(kvz_cuda_mlp *m, const float *x_dev, const float *y_dev,
                               size_t n, double *loss_dev, kvz_error *err);
int kvz_cuda_mlp_clip_dev(kvz_cuda_mlp *m, double max_norm, double *norm_dev, kvz_error *err);
/* clip_grad_norm_ on the device gradient: *norm_before = total L2 norm
 * (float64); when max_norm > 0 scales by (float)min(1, max_norm/(norm+1e-6)).
 * norm_before may be NULL. */
int kvz_cuda_mlp_clip(kvz_cuda_mlp *m, double max_norm, double *norm_before, kvz_error *err);
/* One AdamW update of the device params with the device gradient (t: 1-based
 * step count including this update), fp32 exactly as kvz_mlp_adamw_step.
 * Errors: KVZ_EINVAL (t == 0), KVZ_EIO. */
int kvz_cuda_mlp_adamw_step(kvz_cuda_mlp *m, size_t t, double lr, double beta1, double beta2,
                            double eps, double weight_decay, kvz_error *err);

/* ---------- ridge sufficient statistics ---------- */

typedef struct kvz_cuda_ridge kvz_cuda_ridge; /* opaque; owns its device memory */

/* An accumulator for D = d_in features, Hkv = d_out targets that converts at
 * most block_rows rows at a time to float64 on the device (longer adds are
 * split). Errors: KVZ_EINVAL (zero or huge sizes), KVZ_ENOMEM, KVZ_EIO. */
int kvz_cuda_ridge_create(size_t d_in, size_t d_out, size_t block_rows, kvz_cuda_ridge **out,
                          kvz_error *err);
void kvz_cuda_ridge_free(kvz_cuda_ridge *r);
/* Adds n rows x_dev [n, D], y_dev [n, Hkv] (fp32, device): every value is
 * converted to float64, then X^T X (cublasDsyrk), X^T Y (cublasDgemm), column
 * sums of x and y and sum y^2 accumulate in float64. Non-finite values give
 * KVZ_EINVAL ("cuda ridge: row r feature k of the block is not finite" /
 * "... target k ...") and leave the sums unchanged. n == 0 is a no-op. */
int kvz_cuda_ridge_add(kvz_cuda_ridge *r, const float *x_dev, const float *y_dev, size_t n,
                       kvz_error *err);
/* Host copies of the sums in the kvz_ridge_stats layout: xtx [D*D] (full
 * symmetric), xty [D*Hkv] row-major, x_sum [D], y_sum [Hkv], y_sq_sum [Hkv]
 * (may be NULL), count. Point a kvz_ridge_stats at them and call
 * kvz_ridge_solve. */
int kvz_cuda_ridge_download(kvz_cuda_ridge *r, double *xtx, double *xty, double *x_sum,
                            double *y_sum, double *y_sq_sum, int64_t *count, kvz_error *err);

/* ---------- device-resident training rows (kernels/cuda_train_data.cu) ---------- */

/* Pinned (page-locked) host memory for fast async uploads; KVZ_EUNSUPPORTED
 * without CUDA (callers fall back to malloc), KVZ_ENOMEM. */
int kvz_cuda_host_alloc(void **out, size_t bytes, kvz_error *err);
void kvz_cuda_host_free(void *p);
/* Free and total bytes of the current device (cudaMemGetInfo). */
int kvz_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, kvz_error *err);

typedef struct kvz_cuda_rows kvz_cuda_rows; /* opaque; owns its device memory */

/* Room on the device for cap rows of x [D] (stored fp16 when x_fp16, else
 * fp32) and y [Hkv] (fp32), uploaded in blocks of at most block_rows rows.
 * Before allocating, checks cudaMemGetInfo: when the rows plus extra_bytes
 * (the caller's other device needs, e.g. the MLP context) plus a 256 MiB
 * margin do not fit, fails with KVZ_ENOMEM "cuda rows: the layer needs N
 * bytes on the device but only F are free". */
int kvz_cuda_rows_create(size_t cap, size_t d_in, size_t d_out, int x_fp16, size_t block_rows,
                         size_t extra_bytes, kvz_cuda_rows **out, kvz_error *err);
void kvz_cuda_rows_free(kvz_cuda_rows *r);
/* Bytes kvz_cuda_rows_create would allocate (for messages and planning). */
size_t kvz_cuda_rows_bytes(size_t cap, size_t d_in, size_t d_out, int x_fp16, size_t block_rows);
/* Queues the upload of n <= block_rows host rows (x [n, D], y [n, Hkv] fp32;
 * pinned memory makes it truly asynchronous) after the rows already held, on
 * the context's own stream. The host arrays must stay untouched until
 * kvz_cuda_rows_wait returns. Errors: KVZ_EINVAL (over capacity or block). */
int kvz_cuda_rows_append(kvz_cuda_rows *r, const float *x, const float *y, size_t n,
                         kvz_error *err);
/* Waits for every queued upload (and reports its failure). */
int kvz_cuda_rows_wait(kvz_cuda_rows *r, kvz_error *err);
size_t kvz_cuda_rows_count(const kvz_cuda_rows *r);
/* Removes all rows (capacity kept). */
void kvz_cuda_rows_clear(kvz_cuda_rows *r);
/* Gathers n rows to fp32 device arrays x_out [n, D], y_out [n, Hkv]: row k
 * is held row idx_dev[k] (a DEVICE array of int64), or row0 + k when idx_dev
 * is NULL. Runs on the default stream (after kvz_cuda_rows_wait). Indices
 * are checked on the host side only for the contiguous form. */
int kvz_cuda_rows_gather(const kvz_cuda_rows *r, const int64_t *idx_dev, size_t row0, size_t n,
                         float *x_out, float *y_out, kvz_error *err);

#endif
