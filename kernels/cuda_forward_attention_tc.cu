/* cuda_forward_attention_tc: the bf16-mode tensor-core attention
 * (kvz_cuda_attention_bf16 in kernels/kvz_cuda_attention.h): causal GQA
 * flash attention with Q K^T and P V on tensor cores (nvcuda::wmma
 * m16n16k16, bf16 inputs, fp32 accumulation) and the scale, mask and online
 * softmax in fp32, returning each row's natural-log lse like the CPU op.
 *
 * Work split: one block per (64 queries, query head), 4 warps; warp w owns
 * the block's query rows 16w..16w+15. Keys stream through shared memory in
 * tiles of 64, converted to bf16 (rows past the block's last visible key
 * zero-filled). Per tile, each warp computes S_w = Q_w K^T (16 x 64 fp32)
 * with wmma into shared memory; lane pairs (lane 2r, 2r+1 own row r, 32 keys
 * each, combined with __shfl_xor_sync) apply scale and causal mask, update
 * the running max m and sum l (kept in both lanes' registers), write
 * P = exp(s - m_new) as bf16 and rescale their O row by exp(m_old - m_new);
 * then O_w += P_w V with wmma, O held as fp32 in shared memory. Only the
 * layout-agnostic wmma API is used (load/store/mma/fill, never fragment
 * elements), so every row-wise step is plain shared-memory code and the CPU
 * emulator (tests/cuda_emu/include/mma.h) runs it unchanged. */
#include <math.h>
#include <stdio.h>

#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_ops_internal.cuh"
#include "cuda_wmma_tiles.cuh"

extern "C" {
#include "kvz_cuda_attention.h"
}

using namespace nvcuda;

enum {
    TC_WARPS = 4,
    TC_BQ = 16 * TC_WARPS, /* queries per block */
    TC_BK = 64,            /* keys per tile */
    TC_KPAD = 8,           /* bf16 row padding: ldm % 8 == 0, rows 32-byte aligned */
    TC_FPAD = 4,           /* float row padding: ldm % 4 == 0 */
    TC_S_LD = TC_BK + TC_FPAD,
    TC_P_LD = TC_BK + TC_KPAD
};
#define TC_FULL_MASK 0xffffffffu


/* Shared-memory layout for head_dim dh (every section a multiple of 32 bytes,
 * so with a 128-byte aligned base every wmma pointer is 32-byte aligned):
 * Q, K, V tiles bf16 [64][dh+8]; per warp S fp32 [16][68], P bf16 [16][72],
 * O fp32 [16][dh+4]. */
struct tc_layout {
    size_t q, k, v, s, p, o, bytes;
};

static __host__ __device__ tc_layout tc_smem_layout(size_t dh)
{
    tc_layout L;
    size_t kv_tile = (size_t)TC_BQ * (dh + TC_KPAD) * 2;
    L.q = 0;
    L.k = L.q + kv_tile;
    L.v = L.k + kv_tile;
    L.s = L.v + kv_tile;
    L.p = L.s + (size_t)TC_BQ * TC_S_LD * 4;
    L.o = L.p + (size_t)TC_BQ * TC_P_LD * 2;
    L.bytes = L.o + (size_t)TC_BQ * (dh + TC_FPAD) * 4;
    return L;
}

/* O_w[16][dh] += P_w[16][16 n_sub] V[16 n_sub][dh]. */
static __device__ void tc_accumulate(float *o_w, size_t o_ld, const __nv_bfloat16 *p_w,
                                     const __nv_bfloat16 *v_t, size_t ld, size_t dh,
                                     size_t n_sub)
{
    for (size_t d0 = 0; d0 < dh; d0 += 16) {
        kvz_wmma_acc acc;
        wmma::load_matrix_sync(acc, o_w + d0, (unsigned)o_ld, wmma::mem_row_major);
        for (size_t c = 0; c < n_sub; c++) {
            kvz_wmma_a a;
            kvz_wmma_b b;
            wmma::load_matrix_sync(a, p_w + c * 16, TC_P_LD);
            wmma::load_matrix_sync(b, v_t + c * 16 * ld + d0, (unsigned)ld);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(o_w + d0, acc, (unsigned)o_ld, wmma::mem_row_major);
    }
}

/* The online-softmax step of one row for one tile, done by a lane pair
 * (half 0/1: keys half*32..half*32+31). visible: keys of the tile the row
 * sees (0 for a row past n_q). Writes the row's P (bf16), rescales its O
 * half, updates m and l (identical in both lanes). */
static __device__ void tc_row_update(const float *s_row, __nv_bfloat16 *p_row, float *o_row,
                                     size_t dh, size_t visible, unsigned half, float scale,
                                     float *m, float *l)
{
    float tile_max = -INFINITY;
    for (unsigned c = 0; c < 32; c++) {
        unsigned j = half * 32 + c;
        if (j < visible)
            tile_max = fmaxf(tile_max, scale * s_row[j]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(TC_FULL_MASK, tile_max, 1));
    float m_new = fmaxf(*m, tile_max);
    float corr = *m == -INFINITY ? (m_new == -INFINITY ? 1.0f : 0.0f) : expf(*m - m_new);
    float sum = 0.0f;
    for (unsigned c = 0; c < 32; c++) {
        unsigned j = half * 32 + c;
        float p = j < visible ? expf(scale * s_row[j] - m_new) : 0.0f;
        sum += p;
        p_row[j] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(TC_FULL_MASK, sum, 1);
    *l = *l * corr + sum;
    *m = m_new;
    for (size_t d = half; d < dh; d += 2)
        o_row[d] *= corr;
}

/* Grid (ceil(n_q/64), H), block 128 threads, dynamic shared memory
 * tc_smem_layout(dh).bytes. Shapes as kvz_cuda_attention. Branches on a
 * warp's row range are warp-uniform; every __syncthreads is reached by all. */
static __global__ void __launch_bounds__(TC_WARPS * 32)
    flash_attention_tc_kernel(const float *q, const float *k, const float *v, float *out,
                              float *lse, size_t n_q, size_t pos0, size_t n_heads, size_t group,
                              size_t dh, float scale)
{
    extern __shared__ __align__(128) unsigned char tc_smem[];
    tc_layout L = tc_smem_layout(dh);
    size_t ld = dh + TC_KPAD, o_ld = dh + TC_FPAD;
    __nv_bfloat16 *q_t = (__nv_bfloat16 *)(tc_smem + L.q);
    __nv_bfloat16 *k_t = (__nv_bfloat16 *)(tc_smem + L.k);
    __nv_bfloat16 *v_t = (__nv_bfloat16 *)(tc_smem + L.v);
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, half = lane % 2;
    size_t row = 16 * (size_t)warp + lane / 2; /* this lane pair's row in the block */
    float *s_w = (float *)(tc_smem + L.s) + (size_t)warp * 16 * TC_S_LD;
    __nv_bfloat16 *p_w = (__nv_bfloat16 *)(tc_smem + L.p) + (size_t)warp * 16 * TC_P_LD;
    float *o_w = (float *)(tc_smem + L.o) + (size_t)warp * 16 * o_ld;
    size_t h = blockIdx.y, kvh = h / group;
    size_t q_stride = n_heads * dh, kv_stride = (n_heads / group) * dh;
    size_t i0 = (size_t)blockIdx.x * TC_BQ;
    size_t n_rows = n_q - i0 < TC_BQ ? n_q - i0 : TC_BQ;
    size_t n_keys = pos0 + i0 + n_rows; /* keys the block's last query sees */
    size_t w_rows = n_rows > 16 * (size_t)warp ? n_rows - 16 * (size_t)warp : 0;
    w_rows = w_rows < 16 ? w_rows : 16;
    size_t w_last = pos0 + i0 + 16 * (size_t)warp + w_rows - 1; /* warp's last position */
    size_t pos = pos0 + i0 + row;
    float m = -INFINITY, l = 0.0f;

    kvz_wmma_load_rows(q_t, ld, q + i0 * q_stride + h * dh, q_stride, n_rows, TC_BQ, dh);
    for (size_t d = half; d < dh; d += 2)
        o_w[(lane / 2) * o_ld + d] = 0.0f;
    for (size_t j0 = 0; j0 < n_keys; j0 += TC_BK) {
        size_t tile_keys = n_keys - j0 < TC_BK ? n_keys - j0 : TC_BK;
        __syncthreads(); /* the previous tile's readers (and Q's writers) are done */
        kvz_wmma_load_rows(k_t, ld, k + j0 * kv_stride + kvh * dh, kv_stride, tile_keys, TC_BQ, dh);
        kvz_wmma_load_rows(v_t, ld, v + j0 * kv_stride + kvh * dh, kv_stride, tile_keys, TC_BQ, dh);
        __syncthreads();
        if (w_rows == 0 || j0 > w_last)
            continue; /* warp-uniform: no rows, or the whole tile is in the warp's future */
        size_t w_keys = w_last - j0 + 1 < tile_keys ? w_last - j0 + 1 : tile_keys;
        size_t n_sub = (w_keys + 15) / 16;
        kvz_wmma_scores(s_w, TC_S_LD, q_t + 16 * (size_t)warp * ld, k_t, ld, dh, n_sub);
        __syncwarp();
        size_t visible = 0;
        if (row < n_rows && j0 <= pos)
            visible = pos - j0 + 1 < tile_keys ? pos - j0 + 1 : tile_keys;
        size_t r = lane / 2;
        tc_row_update(s_w + r * TC_S_LD, p_w + r * TC_P_LD, o_w + r * o_ld, dh, visible, half,
                      scale, &m, &l);
        __syncwarp();
        tc_accumulate(o_w, o_ld, p_w, v_t, ld, dh, n_sub);
    }
    __syncwarp();
    if (row >= n_rows)
        return;
    const float *o_row = o_w + (lane / 2) * o_ld;
    float *dst = out + (i0 + row) * q_stride + h * dh;
    for (size_t d = half; d < dh; d += 2)
        dst[d] = o_row[d] / l;
    if (lse && half == 0)
        lse[(i0 + row) * n_heads + h] = m + logf(l);
}

static int tc_check_args(const kvz_attn_args *a, kvz_error *err)
{
    if (!a || !a->q || !a->k || !a->v || !a->out)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention (bf16): NULL arguments or arrays");
    if (a->n_heads == 0 || a->n_kv_heads == 0 || a->n_heads % a->n_kv_heads != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "cuda attention (bf16): %zu heads are not a positive multiple of %zu KV "
                        "heads", a->n_heads, a->n_kv_heads);
    if (!kvz_cuda_attention_bf16_supported(a->head_dim))
        return kvz_fail(err, KVZ_EINVAL,
                        "cuda attention (bf16): head_dim %zu is not a multiple of 16 in 16..%d",
                        a->head_dim, (int)KVZ_CUDA_ATTN_MAX_HEAD_DIM);
    if (a->n_heads > 65535)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention (bf16): %zu heads (at most 65535)",
                        a->n_heads);
    return KVZ_OK;
}

extern "C" int kvz_cuda_attention_bf16_supported(size_t head_dim)
{
    return head_dim > 0 && head_dim % 16 == 0 && head_dim <= KVZ_CUDA_ATTN_MAX_HEAD_DIM;
}

extern "C" size_t kvz_cuda_attention_bf16_smem_bytes(size_t head_dim)
{
    return tc_smem_layout(head_dim).bytes;
}

extern "C" int kvz_cuda_attention_bf16(const kvz_attn_args *a, kvz_error *err)
{
    int rc = tc_check_args(a, err);
    if (rc || a->n_q == 0)
        return rc;
    size_t bytes = tc_smem_layout(a->head_dim).bytes;
    rc = kvz_cuda_allow_smem((const void *)flash_attention_tc_kernel, bytes,
                             "cuda attention (bf16)", err);
    if (rc)
        return rc;
    size_t n_qblocks = (a->n_q + TC_BQ - 1) / TC_BQ;
    if (n_qblocks > 0x7fffffffu)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention (bf16): %zu queries are too many",
                        a->n_q);
    dim3 grid((unsigned)n_qblocks, (unsigned)a->n_heads);
    flash_attention_tc_kernel<<<grid, TC_WARPS * 32, bytes, 0>>>(
        a->q, a->k, a->v, a->out, a->lse, a->n_q, a->pos0, a->n_heads,
        a->n_heads / a->n_kv_heads, a->head_dim, a->scale);
    return kvz_cuda_check_launch("cuda attention (bf16): flash_attention_tc_kernel launch", err);
}
