/* cuda_forward_attention_tc_nocuda: the twin of cuda_forward_attention_tc.cu
 * for builds without CUDA: kvz_cuda_attention_bf16 reports KVZ_EUNSUPPORTED;
 * the pure helpers (supported head_dim, shared-memory size) still answer. */
#include "kvz_cuda_attention.h"

int kvz_cuda_attention_bf16_supported(size_t head_dim)
{
    return head_dim > 0 && head_dim % 16 == 0 && head_dim <= KVZ_CUDA_ATTN_MAX_HEAD_DIM;
}

size_t kvz_cuda_attention_bf16_smem_bytes(size_t head_dim)
{
    size_t kv_tile = (size_t)64 * (head_dim + 8) * 2;
    return 3 * kv_tile + (size_t)64 * 68 * 4 + (size_t)64 * 72 * 2 + (size_t)64 * (head_dim + 4) * 4;
}

int kvz_cuda_attention_bf16(const kvz_attn_args *a, kvz_error *err)
{
    (void)a;
    return kvz_fail(err, KVZ_EUNSUPPORTED, "cuda attention (bf16): this kvzap build has no CUDA backend");
}
