/* kvz_cuda_ops: the plain-C face of the CUDA oracle's per-layer ops (no CUDA
 * headers here): RMSNorm (per-head RMSNorm is the same op on head rows),
 * rotate-half RoPE and SwiGLU, implemented by
 * kernels/cuda_ops.cu; internal to the cuda backend (kernels/backend_cuda.cu),
 * which exists only in CUDA builds.
 *
 * Conventions: every array pointer passed to a launcher is a DEVICE pointer
 * (backend memory) unless the comment says host; arrays are row-major
 * fp32 with exactly the shapes and semantics of the CPU op named in each
 * comment (ops/ops.h), so a GPU result can be
 * compared element by element with the CPU one. Work runs on the default
 * (legacy) stream of the current device. The launchers only enqueue (a
 * fault inside a kernel shows up at the backend's next download or sync). */
#ifndef KVZ_CUDA_OPS_H
#define KVZ_CUDA_OPS_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../model/forward.h"
#include "../model/model_config.h"

/* ---------- elementwise ops ---------- */
/* kvz_rmsnorm on the device: y[r] = w * (x[r] / sqrt(mean(x[r]^2) + eps)) for
 * n_rows rows of dim values; y may equal x. */
int kvz_cuda_rmsnorm(const float *x, const float *w, float *y, size_t n_rows, size_t dim,
                     float eps, kvz_error *err);
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
