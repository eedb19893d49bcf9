/* cuda_score_tc: phase 4 of the KVzip+ layer score (kernels/cuda_score.cu)
 * on tensor cores, for the oracle's BF16 precision mode: per context key i
 * and KV head h, max over the group's query heads g and repeat queries j of
 * scale q_j.k_i - c[g, j] (c = lse[g, j] + ln||x_j||), plus ln||W_O^g v_i||.
 * The q.k products come from nvcuda::wmma m16n16k16 (bf16 q and k, fp32
 * accumulation); everything after them is in double, like the fp32 kernel.
 *
 * Work split: one block per (64 context keys, KV head, slice of repeat
 * queries), 4 warps; warp w owns keys 16w..16w+15. The K tile is converted to
 * bf16 in shared memory once. For each query head g and each tile of 64
 * repeat queries: the Q tile goes to bf16 in shared memory; each warp
 * computes S_w = K_w Q^T (16 x 64 fp32; Q is matrix_b col_major straight
 * from its row-major [query][dim] tile) into its shared S rows; lane pairs
 * (lanes 2r, 2r+1 own key row r, 32 queries each) fold scale S - c into a
 * running max per (key, g) held in registers, the halves combined with
 * __shfl_xor_sync once per g. Only the layout-agnostic wmma API is used, so
 * the CPU emulator (tests/cuda_emu/include/mma.h) runs it unchanged. */
#include <math.h>

#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_ops_internal.cuh"
#include "cuda_wmma_tiles.cuh"
#include "cuda_score.cuh"

using namespace nvcuda;

enum {
    STC_WARPS = 4,
    STC_TILE = KVZ_SCORE_TC_TILE, /* keys per block = queries per tile = 16 * STC_WARPS */
    STC_KPAD = 8,                 /* bf16 row padding: ldm % 8 == 0, rows 32-byte aligned */
    STC_S_LD = STC_TILE + 4       /* float row padding: ldm % 4 == 0 */
};
#define STC_FULL_MASK 0xffffffffu


/* Shared memory for head_dim dh (each section a multiple of 32 bytes, so
 * with a 128-byte aligned base every wmma pointer is 32-byte aligned):
 * K and Q tiles bf16 [64][dh+8], S fp32 [64][68], c double [64]. */
struct stc_layout {
    size_t k, q, s, c, bytes;
};

static __host__ __device__ stc_layout stc_smem_layout(size_t dh)
{
    stc_layout L;
    size_t tile = (size_t)STC_TILE * (dh + STC_KPAD) * 2;
    L.k = 0;
    L.q = L.k + tile;
    L.s = L.q + tile;
    L.c = L.s + (size_t)STC_TILE * STC_S_LD * 4;
    L.bytes = L.c + (size_t)STC_TILE * 8;
    return L;
}

/* max(best, max over this lane's queries j < nq of scale s_row[j] - c[j]);
 * NaN-ignoring like the fp32 kernel (a comparison with NaN is false). */
static __device__ double stc_row_max(const float *s_row, const double *c, size_t nq,
                                     unsigned half, float scale, double best)
{
    for (unsigned t = 0; t < 32; t++) {
        unsigned j = half * 32 + t;
        if (j < nq) {
            double y = (double)(scale * s_row[j]) - c[j];
            if (y > best)
                best = y;
        }
    }
    return best;
}

/* Grid (ceil(|P|/64), Hkv, n_splits), block 128 threads, dynamic shared
 * memory stc_smem_layout(dh).bytes. Branches on a warp's key range are
 * warp-uniform; every __syncthreads is reached by all threads. */
static __global__ void __launch_bounds__(STC_WARPS * 32)
    context_best_tc_kernel(const float *q, const float *k, size_t H, size_t Hkv, size_t dh,
                           size_t p0, size_t p1, size_t r0, size_t r1, float scale,
                           const double *lse, const double *log_xnorm, const double *lognorm,
                           size_t r_len, size_t split_stride, float *out)
{
    extern __shared__ __align__(128) unsigned char stc_smem[];
    stc_layout L = stc_smem_layout(dh);
    size_t ld = dh + STC_KPAD;
    __nv_bfloat16 *k_t = (__nv_bfloat16 *)(stc_smem + L.k);
    __nv_bfloat16 *q_t = (__nv_bfloat16 *)(stc_smem + L.q);
    double *c_t = (double *)(stc_smem + L.c);
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, half = lane % 2;
    float *s_w = (float *)(stc_smem + L.s) + (size_t)warp * 16 * STC_S_LD;
    const float *s_row = s_w + (size_t)(lane / 2) * STC_S_LD;
    size_t h = blockIdx.y, G = H / Hkv, nP = p1 - p0, nR = r1 - r0;
    size_t i0 = p0 + (size_t)blockIdx.x * STC_TILE;
    size_t nk = p1 - i0 < STC_TILE ? p1 - i0 : STC_TILE;
    size_t row = 16 * (size_t)warp + lane / 2, i = i0 + row; /* this lane pair's key */
    int warp_busy = 16 * (size_t)warp < nk;                  /* warp-uniform */
    size_t js = r0 + (size_t)blockIdx.z * r_len, je = js + r_len < r1 ? js + r_len : r1;
    kvz_wmma_load_rows(k_t, ld, k + i0 * Hkv * dh + h * dh, Hkv * dh, nk, STC_TILE, dh);
    double best = -INFINITY;
    for (size_t g = h * G; g < (h + 1) * G; g++) {
        double best_g = -INFINITY;
        for (size_t j0 = js; j0 < je; j0 += STC_TILE) {
            size_t nq = je - j0 < STC_TILE ? je - j0 : STC_TILE;
            __syncthreads(); /* the previous Q tile and c are consumed (and K is loaded) */
            kvz_wmma_load_rows(q_t, ld, q + j0 * H * dh + g * dh, H * dh, nq, STC_TILE, dh);
            for (size_t t = threadIdx.x; t < nq; t += blockDim.x)
                c_t[t] = lse[g * nR + (j0 + t - r0)] + log_xnorm[j0 + t - r0];
            __syncthreads();
            if (!warp_busy)
                continue;
            kvz_wmma_scores(s_w, STC_S_LD, k_t + 16 * (size_t)warp * ld, q_t, ld, dh, (nq + 15) / 16);
            __syncwarp();
            best_g = stc_row_max(s_row, c_t, nq, half, scale, best_g);
            __syncwarp(); /* S_w read before the next tile's store */
        }
        double other = __shfl_xor_sync(STC_FULL_MASK, best_g, 1);
        if (other > best_g)
            best_g = other;
        if (row < nk) {
            double y = best_g + lognorm[g * nP + (i - p0)];
            if (y > best)
                best = y;
        }
    }
    if (row < nk && half == 0)
        out[blockIdx.z * split_stride + (i - p0) * Hkv + h] = (float)best;
}

extern "C" int kvz_cuda_score_tc_supported(size_t head_dim)
{
    return head_dim > 0 && head_dim % 16 == 0 && head_dim <= KVZ_SCORE_TC_MAX_HEAD_DIM;
}

extern "C" int kvz_cuda_score_best_tc(const kvz_score_best_args *a, kvz_error *err)
{
    if (!kvz_cuda_score_tc_supported(a->dh) || a->r_len % STC_TILE != 0 || a->n_splits == 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda, tensor cores): head_dim %zu (a multiple of 16 in "
                        "16..%d) or repeat slice %zu (a multiple of %d) not supported",
                        a->dh, (int)KVZ_SCORE_TC_MAX_HEAD_DIM, a->r_len, (int)STC_TILE);
    size_t bytes = stc_smem_layout(a->dh).bytes;
    int rc = kvz_cuda_allow_smem((const void *)context_best_tc_kernel, bytes,
                                 "kvzip score (cuda, tensor cores)", err);
    if (rc != KVZ_OK)
        return rc;
    size_t nP = a->p1 - a->p0;
    dim3 grid((unsigned)((nP + STC_TILE - 1) / STC_TILE), (unsigned)a->Hkv,
              (unsigned)a->n_splits);
    context_best_tc_kernel<<<grid, STC_WARPS * 32, bytes, a->stream>>>(
        a->q, a->k, a->H, a->Hkv, a->dh, a->p0, a->p1, a->r0, a->r1, a->scale, a->lse,
        a->log_xnorm, a->lognorm, a->r_len, a->split_stride, a->out);
    return kvz_cuda_check_launch("kvzip score (cuda, tensor cores): best launch", err);
}
