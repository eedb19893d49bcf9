/* cuda_score: the phases of the KVzip+ layer score (spec 1.2/1.3) on the
 * GPU, behind the cuda backend's score ops (kernels/cuda_score.cuh; the
 * algorithm that runs them is kvz_kvzip_score_layer in
 * kvzip_oracle/kvzip_score.c). Each phase is queued on a given stream
 * without waiting; everything after the logits in double and in the log
 * domain:
 *   1. ln ||x_j||           for the repeat queries          (row-norm kernel)
 *   2. ln ||W_O^g v_i^h||   for the context keys, through the head's Gram
 *      matrix: ||W v||^2 = v^T (W^T W) v. Per KV head, one strided-batched
 *      cuBLAS GEMM gives Gram_g = W_O^g^T W_O^g [dh, dh] for the group's
 *      query heads, a second one Y_g = Gram_g V^T for a block of keys, and a
 *      kernel the dot products v_i . Y_g[:, i] in double. That is
 *      2 D dh^2 H + 2 |P| dh^2 H flops instead of 2 |P| D dh H for the
 *      products themselves (about 6x fewer at Qwen3-8B shapes)
 *   3. lse[g, j]            log-sum-exp of query j's full causal row (keys
 *      0..j), tiled: one thread per query, key tiles in shared memory; or,
 *      when the tap carries the attention's own lse (device [T, H]), copied
 *      from it (no second pass over the rows)
 *   4. out[i, h]            max over g in group(h), j in R of
 *      scale q_j.k_i - lse[g, j] - ln||x_j|| + ln||W_O^g v_i||, tiled: one
 *      thread per context key, query tiles in shared memory; every repeat
 *      query sees every context key (p1 <= r0), so no mask and no atomics.
 *      In the oracle's BF16 mode (the async entry's tensor_cores flag) the
 *      q.k products run on tensor cores instead (kernels/cuda_score_tc.cu,
 *      bf16 q and k, 64 keys x 64 queries per wmma tile) when head_dim is a
 *      multiple of 16 up to 256, unless KVZ_SCORE=fp32 when the backend opened.
 * Never a T x T matrix; scratch O(H (|P| + |R|)) doubles + one GEMM buffer. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_ops_internal.cuh"
#include "cuda_score.cuh"


enum {
    SCORE_TILE = 32,   /* threads per block (one warp) = rows per shared tile */
    NORM_THREADS = 256 /* power of two, for the tree reduction */
};
static const size_t GEMM_BUFFER_FLOATS = (size_t)16 << 20; /* 64 MiB */

/* ---------- kernels ---------- */

/* ln of the Euclidean norm of rows of width `width`. Rows come in n_groups
 * groups of rows_per_group rows; row r of group g starts at
 * a + (g * rows_per_group + r) * lda and its result goes to
 * out[g * out_group_stride + r]. Grid: blocks stride over all rows; block:
 * NORM_THREADS threads share one row (double sum, tree reduction). */
static __global__ void log_row_norms_kernel(const float *a, size_t lda, size_t width,
                                            size_t n_groups, size_t rows_per_group,
                                            double *out, size_t out_group_stride)
{
    __shared__ double partial[NORM_THREADS];
    size_t n_rows = n_groups * rows_per_group;
    for (size_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *ar = a + row * lda;
        double sum = 0.0;
        for (size_t c = threadIdx.x; c < width; c += NORM_THREADS)
            sum += (double)ar[c] * (double)ar[c];
        partial[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned s = NORM_THREADS / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s)
                partial[threadIdx.x] += partial[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            size_t g = row / rows_per_group, r = row % rows_per_group;
            out[g * out_group_stride + r] = 0.5 * log(partial[0]);
        }
        __syncthreads(); /* partial[0] read before the next row overwrites it */
    }
}

/* Copies rows [row0, row0 + n_rows) of head `head` from a [rows, n_heads, dh]
 * array into tile[n_rows][tile_ld] (tile_ld >= dh); all SCORE_TILE threads
 * help, consecutive threads read consecutive values. */
/* out[g * out_group_stride + i] = 0.5 ln(v_i . y_g[:, i]) for g < n_groups,
 * i < n: v_i = v + i * v_ld ([dh] floats), y_g[:, i] = y + (g * n + i) * dh
 * (Gram_g v_i, column-major [dh, n] per group). The dot is in double; a
 * value <= 0 (a zero v_i, or rounding) gives -inf, like the CPU's ln 0.
 * Grid-stride, one thread per (g, i). */
static __global__ void log_gram_norms_kernel(const float *v, size_t v_ld, const float *y,
                                             size_t dh, size_t n_groups, size_t n, double *out,
                                             size_t out_group_stride)
{
    size_t total = n_groups * n;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        size_t g = t / n, i = t % n;
        const float *vi = v + i * v_ld, *yi = y + (g * n + i) * dh;
        double sum = 0.0;
        for (size_t d = 0; d < dh; d++)
            sum += (double)vi[d] * (double)yi[d];
        out[g * out_group_stride + i] = sum > 0.0 ? 0.5 * log(sum) : -INFINITY;
    }
}

static __device__ void load_head_tile(const float *src, size_t n_heads, size_t head,
                                      size_t dh, size_t row0, size_t n_rows, float *tile,
                                      size_t tile_ld)
{
    for (size_t e = threadIdx.x; e < n_rows * dh; e += SCORE_TILE) {
        size_t r = e / dh, d = e % dh;
        tile[r * tile_ld + d] = src[((row0 + r) * n_heads + head) * dh + d];
    }
}

static __device__ float dot(const float *a, const float *b, size_t n)
{
    float acc = 0.0f;
    for (size_t d = 0; d < n; d++)
        acc += a[d] * b[d];
    return acc;
}

/* Causal log-sum-exp rows. Shapes: q [T, H, dh], k [T, Hkv, dh],
 * lse [H, r1 - r0]. Grid: x = tiles of SCORE_TILE repeat queries, y = query
 * head g (KV head g / (H / Hkv)). Block: SCORE_TILE threads, thread lane owns
 * query j = r0 + tile * SCORE_TILE + lane. Shared (dynamic): qs[SCORE_TILE]
 * [dh + 1] (padded: each thread reads its own row) and ks[SCORE_TILE][dh]
 * (all threads read the same key: broadcast). Per query an online
 * log-sum-exp over keys 0..j of scale * q.k: running max m in float, sum l
 * in double; lse = m + ln l. */
static __global__ void causal_lse_kernel(const float *q, const float *k, size_t H, size_t Hkv,
                                         size_t dh, size_t r0, size_t r1, float scale,
                                         double *lse)
{
    extern __shared__ float smem[];
    float *qs = smem, *ks = smem + SCORE_TILE * (dh + 1);
    size_t g = blockIdx.y, h = g / (H / Hkv), lane = threadIdx.x;
    size_t j0 = r0 + (size_t)blockIdx.x * SCORE_TILE;
    size_t nq = r1 - j0 < SCORE_TILE ? r1 - j0 : SCORE_TILE;
    size_t j = j0 + lane, end = j0 + nq; /* keys 0..end-1 cover the tile */
    load_head_tile(q, H, g, dh, j0, nq, qs, dh + 1);
    float m = -INFINITY;
    double l = 0.0;
    for (size_t i0 = 0; i0 < end; i0 += SCORE_TILE) {
        size_t nk = end - i0 < SCORE_TILE ? end - i0 : SCORE_TILE;
        __syncthreads(); /* the previous key tile is consumed (and qs is loaded) */
        load_head_tile(k, Hkv, h, dh, i0, nk, ks, dh);
        __syncthreads();
        for (size_t c = 0; lane < nq && c < nk && i0 + c <= j; c++) {
            float s = scale * dot(qs + lane * (dh + 1), ks + c * dh, dh);
            if (s > m) {
                l *= exp((double)m - (double)s);
                m = s;
            }
            l += exp((double)s - (double)m);
        }
    }
    if (lane < nq)
        lse[g * (r1 - r0) + (j - r0)] = (double)m + log(l);
}

/* lse[g, j - r0] = tap_lse[j, g] for j in R: the forward attention's own
 * per-row log-normalizers (fp32 [T, H]) instead of phase 3. Grid-stride. */
static __global__ void lse_from_tap_kernel(const float *tap_lse, size_t H, size_t r0, size_t nR,
                                           double *lse)
{
    size_t n = H * nR;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t g = e / nR, r = e % nR;
        lse[e] = (double)tap_lse[(r0 + r) * H + g];
    }
}

/* Best log-score per context key and KV head. Shapes: q [T, H, dh],
 * k [T, Hkv, dh], lse [H, |R|], log_xnorm [|R|], lognorm [H, |P|],
 * out [|P|, Hkv]. Grid: x = tiles of SCORE_TILE context keys, y = KV head h,
 * z = slices of r_len repeat queries (block z covers [r0 + z r_len, ...) and
 * writes its partial maxima to out + z * split_stride; max_splits_kernel
 * combines them when there is more than one slice).
 * Block: SCORE_TILE threads, thread lane owns key i = p0 + tile * SCORE_TILE
 * + lane. Shared (dynamic): shift[SCORE_TILE] doubles (lse + ln||x_j|| of
 * the query tile), ks[SCORE_TILE][dh + 1] (own row, padded) and
 * qs[SCORE_TILE][dh] (broadcast). For each query head g of the group:
 * best_g = max_j (scale q_j.k_i - shift_j); result max_g best_g + lognorm. */
static __global__ void context_best_kernel(const float *q, const float *k, size_t H,
                                           size_t Hkv, size_t dh, size_t p0, size_t p1,
                                           size_t r0, size_t r1, float scale,
                                           const double *lse, const double *log_xnorm,
                                           const double *lognorm, size_t r_len,
                                           size_t split_stride, float *out)
{
    extern __shared__ double shift[];
    float *ks = (float *)(shift + SCORE_TILE), *qs = ks + SCORE_TILE * (dh + 1);
    size_t h = blockIdx.y, G = H / Hkv, lane = threadIdx.x, nP = p1 - p0, nR = r1 - r0;
    size_t i0 = p0 + (size_t)blockIdx.x * SCORE_TILE;
    size_t nk = p1 - i0 < SCORE_TILE ? p1 - i0 : SCORE_TILE;
    size_t i = i0 + lane;
    size_t js = r0 + (size_t)blockIdx.z * r_len, je = js + r_len < r1 ? js + r_len : r1;
    load_head_tile(k, Hkv, h, dh, i0, nk, ks, dh + 1);
    double best = -INFINITY;
    for (size_t g = h * G; g < (h + 1) * G; g++) {
        double best_g = -INFINITY;
        for (size_t j0 = js; j0 < je; j0 += SCORE_TILE) {
            size_t nq = je - j0 < SCORE_TILE ? je - j0 : SCORE_TILE;
            __syncthreads(); /* the previous query tile is consumed (and ks is loaded) */
            load_head_tile(q, H, g, dh, j0, nq, qs, dh);
            if (lane < nq)
                shift[lane] = lse[g * nR + (j0 + lane - r0)] + log_xnorm[j0 + lane - r0];
            __syncthreads();
            for (size_t r = 0; lane < nk && r < nq; r++) {
                double y = (double)(scale * dot(ks + lane * (dh + 1), qs + r * dh, dh)) - shift[r];
                if (y > best_g)
                    best_g = y;
            }
        }
        if (lane < nk) {
            double y = best_g + lognorm[g * nP + (i - p0)];
            if (y > best)
                best = y;
        }
    }
    if (lane < nk)
        out[blockIdx.z * split_stride + (i - p0) * Hkv + h] = (float)best;
}

/* out[e] = max over z < n_splits of partial[z * n + e] (NaN-ignoring like
 * the kernel above). Grid-stride over the n outputs. */
static __global__ void max_splits_kernel(const float *partial, size_t n_splits, size_t n,
                                         float *out)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        float m = partial[e];
        for (size_t z = 1; z < n_splits; z++) {
            float v = partial[z * n + e];
            if (v > m)
                m = v;
        }
        out[e] = m;
    }
}

/* ---------- host side ---------- */

/* Dynamic shared memory of the two tiled kernels; opts in above 48 KiB. */
static size_t lse_smem(size_t dh)
{
    return SCORE_TILE * (2 * dh + 1) * sizeof(float);
}

static size_t best_smem(size_t dh)
{
    return SCORE_TILE * sizeof(double) + SCORE_TILE * (2 * dh + 1) * sizeof(float);
}

int kvz_cuda_score_row_lognorms(const float *x, size_t ld, size_t width, size_t n, double *out,
                                cudaStream_t stream, kvz_error *err)
{
    log_row_norms_kernel<<<kvz_cuda_blocks_for(n, 1), NORM_THREADS, 0, stream>>>(
        x, ld, width, 1, n, out, 0);
    return kvz_cuda_check_launch("cuda: row lognorms launch", err);
}

/* Keys per Y block: what fits in GEMM_BUFFER_FLOATS after the Gram matrices. */
static size_t value_block_rows(size_t G, size_t dh, size_t n)
{
    size_t gram = G * dh * dh;
    size_t rows = GEMM_BUFFER_FLOATS > gram ? (GEMM_BUFFER_FLOATS - gram) / (G * dh) : 0;
    rows = rows ? rows : 1;
    return rows < n ? rows : n;
}

size_t kvz_cuda_score_value_scratch(size_t H, size_t Hkv, size_t dh, size_t n)
{
    size_t G = H / Hkv;
    return G * dh * dh + G * dh * value_block_rows(G, dh, n);
}

/* For KV head h: gram[gl] = W_O^g^T W_O^g [dh, dh] for the group's query
 * heads g = h G + gl. W_O is row-major [D, H dh]; in cuBLAS's column-major
 * terms head g's slice A_g = W_O^g^T is [dh, D] with ld H dh, dh columns
 * apart from the next head's, and gram = A_g A_g^T. Then for blocks of keys
 * y[gl] = gram[gl] V^T ([dh, nb] column-major; V's slice is [dh, nb] with
 * ld Hkv dh, shared by the batch: stride 0), and the log-norms. */
int kvz_cuda_score_value_lognorms(cublasHandle_t blas, float *scratch, const float *v,
                                  const float *w_o, size_t H, size_t Hkv, size_t dh, size_t D,
                                  size_t i0, size_t i1, double *out, cudaStream_t stream,
                                  kvz_error *err)
{
    if (H * dh > INT_MAX || D > INT_MAX || i1 - i0 > INT_MAX)
        return kvz_fail(err, KVZ_EINVAL, "cuda: value lognorms: too large for cuBLAS");
    const float one = 1.0f, zero = 0.0f;
    size_t G = H / Hkv, n = i1 - i0, rows = value_block_rows(G, dh, n), kv_ld = Hkv * dh;
    float *gram = scratch, *y = scratch + G * dh * dh;
    int idh = (int)dh, wo_ld = (int)(H * dh);
    int rc = kvz_cublas_check(cublasSetStream(blas, stream), "cuda: value lognorms: "
                              "cublasSetStream", err);
    for (size_t h = 0; rc == KVZ_OK && h < Hkv; h++) {
        const float *w = w_o + h * G * dh;
        rc = kvz_cublas_check(
            cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, idh, idh, (int)D, &one, w,
                                      wo_ld, (long long)dh, w, wo_ld, (long long)dh, &zero,
                                      gram, idh, (long long)(dh * dh), (int)G),
            "cuda: value lognorms: W_O Gram GEMM", err);
        for (size_t b = 0; rc == KVZ_OK && b < n; b += rows) {
            size_t nb = n - b < rows ? n - b : rows;
            const float *vb = v + (i0 + b) * kv_ld + h * dh;
            rc = kvz_cublas_check(
                cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, idh, (int)nb, idh,
                                          &one, gram, idh, (long long)(dh * dh), vb, (int)kv_ld,
                                          0, &zero, y, idh, (long long)(dh * nb), (int)G),
                "cuda: value lognorms: Gram V GEMM", err);
            if (rc == KVZ_OK) {
                log_gram_norms_kernel<<<kvz_cuda_blocks_for(G * nb, NORM_THREADS), NORM_THREADS,
                                        0, stream>>>(vb, kv_ld, y, dh, G, nb,
                                                     out + h * G * n + b, n);
                rc = kvz_cuda_check_launch("cuda: value lognorms launch", err);
            }
        }
    }
    return rc;
}

int kvz_cuda_score_causal_lse(const float *q, const float *k, const float *tap_lse, size_t H,
                              size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                              double *lse, cudaStream_t stream, kvz_error *err)
{
    size_t nR = r1 - r0;
    if (tap_lse) {
        lse_from_tap_kernel<<<kvz_cuda_blocks_for(H * nR, 256), 256, 0, stream>>>(tap_lse, H, r0,
                                                                                nR, lse);
        return kvz_cuda_check_launch("cuda: lse from the tap launch", err);
    }
    int rc = kvz_cuda_allow_smem((const void *)causal_lse_kernel, lse_smem(dh),
                                 "cuda: causal lse kernel", err);
    if (rc != KVZ_OK)
        return rc;
    dim3 grid((unsigned)((nR + SCORE_TILE - 1) / SCORE_TILE), (unsigned)H);
    causal_lse_kernel<<<grid, SCORE_TILE, lse_smem(dh), stream>>>(q, k, H, Hkv, dh, r0, r1,
                                                                  scale, lse);
    return kvz_cuda_check_launch("cuda: causal lse launch", err);
}

/* The tensor-core phase 4 when asked for (the backend folds in its
 * KVZ_SCORE=fp32 safety valve) and head_dim suits it. */
static int use_tensor_cores(int requested, size_t dh)
{
    return requested && kvz_cuda_score_tc_supported(dh);
}

/* Slices of the repeat queries for the best kernel: enough blocks to fill
 * the device (about BEST_TARGET_BLOCKS), each slice a whole number of query
 * tiles, at most BEST_MAX_SPLITS slices. Tiles: SCORE_TILE keys and queries
 * (fp32 kernel) or KVZ_SCORE_TC_TILE (tensor cores). */
static void plan_splits(size_t Hkv, size_t nP, size_t nR, int tc, size_t *r_len,
                        size_t *n_splits)
{
    const size_t BEST_TARGET_BLOCKS = 1024, BEST_MAX_SPLITS = 32;
    const size_t tile = tc ? (size_t)KVZ_SCORE_TC_TILE : (size_t)SCORE_TILE;
    size_t blocks = (nP + tile - 1) / tile * Hkv;
    size_t q_tiles = (nR + tile - 1) / tile;
    size_t want = (BEST_TARGET_BLOCKS + blocks - 1) / blocks;
    want = want < q_tiles ? want : q_tiles;
    want = want < BEST_MAX_SPLITS ? want : BEST_MAX_SPLITS;
    want = want ? want : 1;
    *r_len = (q_tiles + want - 1) / want * tile;
    *n_splits = (nR + *r_len - 1) / *r_len;
}

size_t kvz_cuda_score_best_scratch(size_t Hkv, size_t dh, size_t p0, size_t p1, size_t r0,
                                   size_t r1, int tensor_cores)
{
    size_t r_len, n_splits, nP = p1 - p0;
    plan_splits(Hkv, nP, r1 - r0, use_tensor_cores(tensor_cores, dh), &r_len, &n_splits);
    return n_splits > 1 ? n_splits * nP * Hkv : 0;
}

int kvz_cuda_score_best(const float *q, const float *k, size_t H, size_t Hkv, size_t dh,
                        float scale, size_t p0, size_t p1, size_t r0, size_t r1,
                        const double *lse, const double *log_xnorm, const double *lognorm,
                        int tensor_cores, float *scratch, float *out, cudaStream_t stream,
                        kvz_error *err)
{
    size_t nP = p1 - p0, nR = r1 - r0, r_len, n_splits;
    int tc = use_tensor_cores(tensor_cores, dh);
    plan_splits(Hkv, nP, nR, tc, &r_len, &n_splits);
    if (n_splits > 1 && !scratch)
        return kvz_fail(err, KVZ_EINVAL, "cuda: kvzip best: no scratch for %zu slices",
                        n_splits);
    if (Hkv > 65535 || n_splits > 65535 || (nP + SCORE_TILE - 1) / SCORE_TILE > INT_MAX)
        return kvz_fail(err, KVZ_EINVAL, "cuda: kvzip best: grid too large (%zu keys, %zu KV "
                        "heads)", nP, Hkv);
    float *dst = n_splits > 1 ? scratch : out;
    int rc;
    if (tc) {
        kvz_score_best_args a = {q, k, H, Hkv, dh, p0, p1, r0, r1, scale, lse, log_xnorm,
                                 lognorm, r_len, n_splits, nP * Hkv, dst, stream};
        rc = kvz_cuda_score_best_tc(&a, err);
    } else {
        rc = kvz_cuda_allow_smem((const void *)context_best_kernel, best_smem(dh),
                                 "cuda: kvzip best kernel", err);
        if (rc == KVZ_OK) {
            dim3 grid((unsigned)((nP + SCORE_TILE - 1) / SCORE_TILE), (unsigned)Hkv,
                      (unsigned)n_splits);
            context_best_kernel<<<grid, SCORE_TILE, best_smem(dh), stream>>>(
                q, k, H, Hkv, dh, p0, p1, r0, r1, scale, lse, log_xnorm, lognorm, r_len,
                nP * Hkv, dst);
            rc = kvz_cuda_check_launch("cuda: kvzip best launch", err);
        }
    }
    if (rc != KVZ_OK || n_splits == 1)
        return rc;
    size_t n = nP * Hkv;
    max_splits_kernel<<<kvz_cuda_blocks_for(n, 256), 256, 0, stream>>>(scratch, n_splits, n,
                                                                     out);
    return kvz_cuda_check_launch("cuda: kvzip best: max of slices launch", err);
}
