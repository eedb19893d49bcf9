/* kvz_cuda_attention: the CUDA backend's attention kernels (no CUDA headers
 * here), called by kernels/backend_cuda.cu for kvz_op_attention. CUDA builds
 * only: everything else reaches them through the op interface
 * (ops/backend.h). Implemented by kernels/cuda_forward_attention.cu and, the
 * bf16 tensor-core variant, kernels/cuda_forward_attention_tc.cu. */
#ifndef KVZ_CUDA_ATTENTION_H
#define KVZ_CUDA_ATTENTION_H

#include "../common/kvz_error.h"
#include "../ops/ops.h"

/* Largest head_dim the kernel takes. */
enum { KVZ_CUDA_ATTN_MAX_HEAD_DIM = 256 };

/* kvz_attention on the device: the same arguments and results (causal GQA,
 * softmax(q k^T * scale) v, lse = ln of each row's normalizer), but q, k, v,
 * out and lse (NULL allowed) are DEVICE pointers; a->block is ignored (the
 * kernel's tiles are fixed). Runs on the legacy default stream and only
 * enqueues (a fault shows up at the next synchronizing call). Errors:
 * KVZ_EINVAL (NULL arrays, 0 heads, heads not a multiple of KV heads,
 * head_dim 0 or above KVZ_CUDA_ATTN_MAX_HEAD_DIM), KVZ_EUNSUPPORTED (no CUDA
 * build; the device's shared memory is too small), KVZ_EIO (a CUDA failure). */
int kvz_cuda_attention(const kvz_attn_args *a, kvz_error *err);

/* The BF16-mode variant: the same contract, but Q, K, V and the softmax
 * weights P are rounded to bf16 for the two products (tensor cores, fp32
 * accumulation); scale, mask, softmax, out and lse stay fp32. head_dim must
 * satisfy kvz_cuda_attention_bf16_supported (else KVZ_EINVAL). */
int kvz_cuda_attention_bf16(const kvz_attn_args *a, kvz_error *err);

/* kvz_ragged_attention on the device (every array in device memory, count
 * and pos included; head_dim <= KVZ_CUDA_ATTN_MAX_HEAD_DIM); enqueues on the
 * legacy default stream like the kernels above. */
int kvz_cuda_ragged_attention(const kvz_ragged_attn_args *a, kvz_error *err);

/* 1 when head_dim is a multiple of 16 in 16..KVZ_CUDA_ATTN_MAX_HEAD_DIM. */
int kvz_cuda_attention_bf16_supported(size_t head_dim);

/* Dynamic shared memory per block of the bf16 kernel at head_dim. */
size_t kvz_cuda_attention_bf16_smem_bytes(size_t head_dim);

#endif
