/* kvz_cuda_ops: the plain-C face of the CUDA oracle's per-layer ops (no CUDA
 * headers here): device buffers, RMSNorm, per-head RMSNorm (Qwen3 q/k norm),
 * rotate-half RoPE, SwiGLU and the KVzip+ layer score, implemented by
 * kernels/cuda_ops.cu; internal to the cuda backend (kernels/backend_cuda.cu),
 * which exists only in CUDA builds.
 *
 * Conventions: every array pointer passed to a launcher is a DEVICE pointer
 * (from kvz_cuda_alloc) unless the comment says host; arrays are row-major
 * fp32 with exactly the shapes and semantics of the CPU op named in each
 * comment (ops/ops.h, kvzip_oracle/kvzip_score.h), so a GPU result can be
 * compared element by element with the CPU one. Work runs on the default
 * (legacy) stream of the current device. The elementwise launchers only
 * enqueue (a fault inside a kernel shows up in the next copy or
 * kvz_cuda_sync). */
#ifndef KVZ_CUDA_OPS_H
#define KVZ_CUDA_OPS_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/model_config.h"

/* ---------- device buffers ---------- */
/* *out = device allocation of bytes (> 0); KVZ_ENOMEM when the device is full. */
int kvz_cuda_alloc(void **out, size_t bytes, kvz_error *err);
/* Frees a kvz_cuda_alloc buffer; NULL is fine. */
void kvz_cuda_free(void *dev);
/* Host -> device, device -> host, device -> device copies (synchronous). */
int kvz_cuda_upload(void *dev_dst, const void *host_src, size_t bytes, kvz_error *err);
int kvz_cuda_download(void *host_dst, const void *dev_src, size_t bytes, kvz_error *err);
int kvz_cuda_copy(void *dev_dst, const void *dev_src, size_t bytes, kvz_error *err);
/* Waits for all queued work; reports any fault a kernel hit. */
int kvz_cuda_sync(kvz_error *err);
/* Releases the process-wide cuBLAS handle the ops create on first use
 * (call before exit to keep leak checkers quiet; the next use recreates it). */
void kvz_cuda_ops_release(void);

/* ---------- elementwise ops ---------- */
/* kvz_rmsnorm on the device: y[r] = w * (x[r] / sqrt(mean(x[r]^2) + eps)) for
 * n_rows rows of dim values; y may equal x. */
int kvz_cuda_rmsnorm(const float *x, const float *w, float *y, size_t n_rows, size_t dim,
                     float eps, kvz_error *err);
/* Qwen3 q/k norm in place: x [n_tokens, n_heads, head_dim], every head vector
 * normalised with the shared weight w[head_dim] (= kvz_rmsnorm with
 * n_rows = n_tokens * n_heads, dim = head_dim). */
int kvz_cuda_head_rmsnorm(float *x, const float *w, size_t n_tokens, size_t n_heads,
                          size_t head_dim, float eps, kvz_error *err);
/* kvz_rope_apply on the device: in-place rotate-half RoPE of
 * x [n_tokens, n_heads, head_dim], token t at position pos0 + t. inv_freq
 * [head_dim/2] is a device copy of what kvz_rope_inv_freq computes on the host
 * (this is where llama3 scaling enters); head_dim must be even. */
int kvz_cuda_rope_apply(float *x, size_t n_tokens, size_t n_heads, size_t head_dim,
                        size_t pos0, const float *inv_freq, kvz_error *err);
/* kvz_swiglu on the device: out [n_rows, d_ff] = silu(gate) * up, gate and up
 * the two halves of each gate_up [n_rows, 2*d_ff] row (gate first). */
int kvz_cuda_swiglu(const float *gate_up, float *out, size_t n_rows, size_t d_ff,
                    kvz_error *err);

#endif
