/* cuda_forward_attention: the GPU forward pass's attention (kvz_cuda_attention
 * in kernels/kvz_cuda_attention.h): a flash-style causal grouped-query
 * attention kernel in fp32 with an online softmax, which also returns each
 * query row's log-sum-exp (the tap's lse). Never materialises T x T scores.
 *
 * Work split: one thread block per (block of ATT_BQ queries, query head);
 * ATT_WARPS warps, each owning ATT_QPW of the block's queries. The block
 * streams the keys its queries may see through shared memory in tiles of
 * ATT_BK = 32 keys (K tile rows padded by one float so lane j reading row j
 * hits its own bank). Per tile and query, lane j scores key j (a dot product
 * against the query held in shared memory), the warp reduces the tile's max
 * and sum with shuffles, and the output accumulator (lane owns dimensions
 * lane, lane+32, ...) is rescaled and gets p_j * v_j with p_j broadcast by
 * __shfl_sync. Same semantics as ops/ops_attention.c: scores scale * q.k,
 * key j visible to query i iff j <= pos0 + i, kv head = h / (H / Hkv),
 * lse = m + ln(l). */
#include <math.h>
#include <stdio.h>

#include "cuda_ops_internal.cuh"

extern "C" {
#include "kvz_cuda_attention.h"
}

enum {
    ATT_WARPS = 8,
    ATT_QPW = 4,                          /* queries per warp */
    ATT_BQ = ATT_WARPS * ATT_QPW,         /* queries per block */
    ATT_BK = 32,                          /* keys per tile: one per lane */
    ATT_DCH = KVZ_CUDA_ATTN_MAX_HEAD_DIM / 32 /* output dims per lane, at most */
};
#define ATT_FULL_MASK 0xffffffffu

static __device__ float att_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(ATT_FULL_MASK, v, o);
    return v;
}

static __device__ float att_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(ATT_FULL_MASK, v, o));
    return v;
}

/* Shared memory floats for head_dim dh: K tile, V tile, the block's queries. */
static size_t att_smem_floats(size_t dh)
{
    return (size_t)ATT_BK * (dh + 1) + (size_t)ATT_BK * dh + (size_t)ATT_BQ * dh;
}

/* Shapes: q [n_q, H, dh], k/v [pos0+n_q, Hkv, dh], out [n_q, H, dh],
 * lse [n_q, H] or NULL. Grid (ceil(n_q/ATT_BQ), H); block ATT_WARPS*32
 * threads; dynamic shared memory att_smem_floats(dh) floats. Every branch on
 * a query index is uniform across its warp (a warp owns whole queries), so
 * the full-mask shuffles always see 32 participating lanes. */
static __global__ void flash_attention_kernel(const float *q, const float *k, const float *v,
                                              float *out, float *lse, size_t n_q, size_t pos0,
                                              size_t n_heads, size_t group, size_t dh,
                                              float scale)
{
    extern __shared__ float att_smem[];
    float *k_tile = att_smem;                           /* [BK][dh+1] */
    float *v_tile = k_tile + (size_t)ATT_BK * (dh + 1); /* [BK][dh] */
    float *q_blk = v_tile + (size_t)ATT_BK * dh;        /* [BQ][dh] */
    size_t h = blockIdx.y, kvh = h / group;
    size_t q_stride = n_heads * dh, kv_stride = (n_heads / group) * dh;
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    size_t i0 = (size_t)blockIdx.x * ATT_BQ;
    size_t n_rows = n_q - i0 < ATT_BQ ? n_q - i0 : ATT_BQ;
    size_t n_keys = pos0 + i0 + n_rows; /* keys the block's last query sees */
    size_t n_ch = (dh + 31) / 32;

    for (size_t e = threadIdx.x; e < ATT_BQ * dh; e += blockDim.x) {
        size_t r = e / dh, d = e % dh;
        q_blk[e] = r < n_rows ? q[(i0 + r) * q_stride + h * dh + d] : 0.0f;
    }
    float acc[ATT_QPW][ATT_DCH], m[ATT_QPW], l[ATT_QPW];
    for (int qq = 0; qq < ATT_QPW; qq++) {
        m[qq] = -INFINITY;
        l[qq] = 0.0f;
        for (int c = 0; c < ATT_DCH; c++)
            acc[qq][c] = 0.0f;
    }

    for (size_t j0 = 0; j0 < n_keys; j0 += ATT_BK) {
        __syncthreads(); /* the previous tile (and at first q_blk's writers) are done */
        size_t tile_keys = n_keys - j0 < ATT_BK ? n_keys - j0 : ATT_BK;
        for (size_t e = threadIdx.x; e < ATT_BK * dh; e += blockDim.x) {
            size_t j = e / dh, d = e % dh;
            size_t src = (j0 + j) * kv_stride + kvh * dh + d;
            k_tile[j * (dh + 1) + d] = j < tile_keys ? k[src] : 0.0f;
            v_tile[e] = j < tile_keys ? v[src] : 0.0f;
        }
        __syncthreads();
        for (int qq = 0; qq < ATT_QPW; qq++) {
            size_t r = warp * ATT_QPW + qq;
            size_t pos = pos0 + i0 + r;
            if (r >= n_rows || j0 > pos)
                continue; /* warp-uniform: no row, or every key of the tile is in its future */
            size_t visible = pos - j0 + 1 < tile_keys ? pos - j0 + 1 : tile_keys;
            const float *qr = q_blk + r * dh;
            float s = -INFINITY;
            if (lane < visible) {
                const float *kr = k_tile + lane * (dh + 1);
                float dot = 0.0f;
                for (size_t d = 0; d < dh; d++)
                    dot += qr[d] * kr[d];
                s = scale * dot;
            }
            float tile_max = att_warp_max(s);
            float m_new = fmaxf(m[qq], tile_max);
            float corr = m[qq] == -INFINITY ? 0.0f : expf(m[qq] - m_new);
            float p = lane < visible ? expf(s - m_new) : 0.0f;
            l[qq] = l[qq] * corr + att_warp_sum(p);
            m[qq] = m_new;
            for (int c = 0; c < ATT_DCH; c++)
                acc[qq][c] *= corr;
            for (size_t j = 0; j < visible; j++) {
                float pj = __shfl_sync(ATT_FULL_MASK, p, (int)j);
                const float *vr = v_tile + j * dh;
                for (int c = 0; c < ATT_DCH; c++) {
                    size_t d = lane + 32 * (size_t)c;
                    if ((size_t)c < n_ch && d < dh)
                        acc[qq][c] += pj * vr[d];
                }
            }
        }
    }

    for (int qq = 0; qq < ATT_QPW; qq++) {
        size_t r = warp * ATT_QPW + qq;
        if (r >= n_rows)
            continue;
        float *dst = out + (i0 + r) * q_stride + h * dh;
        for (int c = 0; c < ATT_DCH; c++) {
            size_t d = lane + 32 * (size_t)c;
            if ((size_t)c < n_ch && d < dh)
                dst[d] = acc[qq][c] / l[qq];
        }
        if (lse && lane == 0)
            lse[(i0 + r) * n_heads + h] = m[qq] + logf(l[qq]);
    }
}

static int check_args(const kvz_attn_args *a, kvz_error *err)
{
    if (!a || !a->q || !a->k || !a->v || !a->out)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention: NULL arguments or arrays");
    if (a->n_heads == 0 || a->n_kv_heads == 0 || a->n_heads % a->n_kv_heads != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "cuda attention: %zu heads are not a positive multiple of %zu KV heads",
                        a->n_heads, a->n_kv_heads);
    if (a->head_dim == 0 || a->head_dim > KVZ_CUDA_ATTN_MAX_HEAD_DIM)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention: head_dim %zu is not in 1..%d",
                        a->head_dim, (int)KVZ_CUDA_ATTN_MAX_HEAD_DIM);
    if (a->n_heads > 65535)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention: %zu heads (at most 65535)", a->n_heads);
    return KVZ_OK;
}

extern "C" int kvz_cuda_attention(const kvz_attn_args *a, kvz_error *err)
{
    int rc = check_args(a, err);
    if (rc || a->n_q == 0)
        return rc;
    size_t bytes = att_smem_floats(a->head_dim) * sizeof(float);
    rc = kvz_cuda_allow_smem((const void *)flash_attention_kernel, bytes, "cuda attention", err);
    if (rc)
        return rc;
    size_t n_qblocks = (a->n_q + ATT_BQ - 1) / ATT_BQ;
    if (n_qblocks > 0x7fffffffu)
        return kvz_fail(err, KVZ_EINVAL, "cuda attention: %zu queries are too many", a->n_q);
    dim3 grid((unsigned)n_qblocks, (unsigned)a->n_heads);
    flash_attention_kernel<<<grid, ATT_WARPS * 32, bytes, 0>>>(
        a->q, a->k, a->v, a->out, a->lse, a->n_q, a->pos0, a->n_heads,
        a->n_heads / a->n_kv_heads, a->head_dim, a->scale);
    return kvz_cuda_check_launch("cuda attention: flash_attention_kernel launch", err);
}

/* ---------- ragged attention (a pruned KV cache, ops/ops.h) ----------
 * One warp per (query, head): the lanes split head_dim (up to
 * RAG_PER_LANE elements each), the keys of the head's slab are walked in
 * order (positions ascend, so the first key past the query ends the walk)
 * with an online softmax in fp32. Decode (one query) and prefill chunks use
 * the same kernel; it is memory-bound on the kept keys. */
enum { RAG_PER_LANE = KVZ_CUDA_ATTN_MAX_HEAD_DIM / 32, RAG_THREADS = 128 };

static __global__ void ragged_attention_kernel(const float *q, const float *k, const float *v,
                                               const int32_t *pos, const int32_t *count,
                                               const int32_t *row0, float *out, size_t n_q,
                                               size_t q_pos0, size_t cap,
                                               size_t n_heads, size_t group, size_t dh,
                                               float scale)
{
    size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x % 32;
    if (warp >= n_q * n_heads)
        return; /* uniform per warp: blockDim is a multiple of 32 */
    size_t i = warp / n_heads, h = warp % n_heads, g = h / group;
    const float *qr = q + (i * n_heads + h) * dh;
    size_t r0 = row0 ? (size_t)row0[g] : g * cap;
    const float *kg = k + r0 * dh, *vg = v + r0 * dh;
    const int32_t *pg = pos + r0;
    long long qpos = (long long)(q_pos0 + i);
    int n = count[g];
    float qv[RAG_PER_LANE], o[RAG_PER_LANE];
    for (int e = 0; e < RAG_PER_LANE; e++) {
        size_t d = lane + 32 * (size_t)e;
        qv[e] = d < dh ? qr[d] : 0.0f;
        o[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j < n && (long long)pg[j] <= qpos; j++) {
        const float *kr = kg + (size_t)j * dh, *vr = vg + (size_t)j * dh;
        float s = 0.0f;
        for (int e = 0; e < RAG_PER_LANE; e++) {
            size_t d = lane + 32 * (size_t)e;
            if (d < dh)
                s += qv[e] * kr[d];
        }
        s = att_warp_sum(s) * scale;
        float m_new = fmaxf(m, s);
        float corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
        for (int e = 0; e < RAG_PER_LANE; e++) {
            size_t d = lane + 32 * (size_t)e;
            if (d < dh)
                o[e] = o[e] * corr + p * vr[d];
        }
        m = m_new;
    }
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float *orow = out + (i * n_heads + h) * dh;
    for (int e = 0; e < RAG_PER_LANE; e++) {
        size_t d = lane + 32 * (size_t)e;
        if (d < dh)
            orow[d] = o[e] * inv;
    }
}

extern "C" int kvz_cuda_ragged_attention(const kvz_ragged_attn_args *a, kvz_error *err)
{
    if (a->head_dim > KVZ_CUDA_ATTN_MAX_HEAD_DIM)
        return kvz_fail(err, KVZ_EINVAL, "cuda ragged attention: head_dim %zu above %d",
                        a->head_dim, (int)KVZ_CUDA_ATTN_MAX_HEAD_DIM);
    if (a->n_q == 0)
        return KVZ_OK;
    size_t warps = a->n_q * a->n_heads, per_block = RAG_THREADS / 32;
    size_t blocks = (warps + per_block - 1) / per_block;
    if (blocks > 0x7fffffffu)
        return kvz_fail(err, KVZ_EINVAL, "cuda ragged attention: %zu queries are too many",
                        a->n_q);
    ragged_attention_kernel<<<(unsigned)blocks, RAG_THREADS, 0, 0>>>(
        a->q, a->k, a->v, a->pos, a->count, a->row0, a->out, a->n_q, a->q_pos0, a->cap, a->n_heads,
        a->n_heads / a->n_kv_heads, a->head_dim, a->scale);
    return kvz_cuda_check_launch("cuda ragged attention: ragged_attention_kernel launch", err);
}
