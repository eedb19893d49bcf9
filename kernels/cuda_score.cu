/* cuda_score: kvz_cuda_kvzip_score_layer, the KVzip+ layer score of
 * kvzip_oracle/kvzip_score.h on the GPU (spec 1.2/1.3). Phases, all on the
 * default stream (kvz_cuda_kvzip_score_layer) or a given stream without
 * waiting (kvz_cuda_kvzip_score_layer_async, kvz_cuda_pipeline.h, with a
 * reusable workspace), everything after the logits in double and in the log
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
 *      multiple of 16 up to 256, unless KVZ_SCORE=fp32.
 * Never a T x T matrix; scratch O(H (|P| + |R|)) doubles + one GEMM buffer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_ops_internal.cuh"
#include "cuda_score_tc.cuh"

extern "C" {
#include "kvz_cuda_ops.h"
#include "kvz_cuda_pipeline.h"
}

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

typedef struct score_plan {
    const kvz_layer_tap *tap;
    size_t H, Hkv, G, dh, D, p0, p1, r0, r1, nP, nR;
    size_t gemm_rows;   /* context keys per GEMM block */
    size_t gemm_floats; /* gemm_out: G dh^2 (Gram) + G dh gemm_rows (Y) */
    float scale;
    double *log_xnorm; /* [nR] */
    double *lse;       /* [H, nR] */
    double *lognorm;   /* [H, nP] */
    float *gemm_out;   /* [G, dh, dh] Gram matrices, then [G, gemm_rows, dh] Y */
    float *out;        /* [nP, Hkv] */
    size_t n_splits, r_len; /* repeat-query slices of the best kernel */
    float *partial;    /* [n_splits, nP, Hkv] when n_splits > 1 */
    int tensor_cores;  /* phase 4 on tensor cores (cuda_score_tc.cu) */
    cudaStream_t stream; /* 0: the legacy default stream */
} score_plan;

/* The same checks and messages as the CPU op (kvzip_score.c), plus grid limits. */
static int check_args(const kvz_layer_tap *tap, const kvz_model_config *cfg, size_t p0,
                      size_t p1, size_t r0, size_t r1, const float *out, kvz_error *err)
{
    if (!tap || !cfg || !out || !tap->x || !tap->q || !tap->k || !tap->v || !tap->w_o)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): NULL tap, config, tap array or output");
    size_t L = tap->layer, T = tap->n_tokens;
    if (cfg->n_heads == 0 || cfg->n_kv_heads == 0 || cfg->n_heads % cfg->n_kv_heads != 0 ||
        cfg->head_dim == 0 || cfg->d_model == 0 || cfg->n_heads > 65535)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): layer %zu: bad head config (%zu heads, %zu KV "
                        "heads, head_dim %zu, d_model %zu)",
                        L, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->d_model);
    if (tap->pos0 != 0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): layer %zu: tap starts at position %zu; the score "
                        "needs one full pass from position 0",
                        L, tap->pos0);
    if (p0 >= p1 || r0 >= r1)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): layer %zu: empty range: context [%zu, %zu), "
                        "repeat [%zu, %zu)",
                        L, p0, p1, r0, r1);
    if (p1 > r0)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): layer %zu: context [%zu, %zu) must end at or "
                        "before the repeat [%zu, %zu) starts",
                        L, p0, p1, r0, r1);
    if (r1 > T)
        return kvz_fail(err, KVZ_EINVAL,
                        "kvzip score (cuda): layer %zu: repeat [%zu, %zu) goes past the %zu "
                        "tokens of the pass",
                        L, r0, r1, T);
    return KVZ_OK;
}

/* Dynamic shared memory of the two tiled kernels; opts in above 48 KiB. */
static size_t lse_smem(size_t dh)
{
    return SCORE_TILE * (2 * dh + 1) * sizeof(float);
}

static size_t best_smem(size_t dh)
{
    return SCORE_TILE * sizeof(double) + SCORE_TILE * (2 * dh + 1) * sizeof(float);
}

/* Phase 1: log_xnorm[j - r0] = ln ||x_j|| for j in R. */
static int run_x_norms(const score_plan *sp, kvz_error *err)
{
    log_row_norms_kernel<<<kvz_cuda_blocks_for(sp->nR, 1), NORM_THREADS, 0, sp->stream>>>(
        sp->tap->x + sp->r0 * sp->D, sp->D, sp->D, 1, sp->nR, sp->log_xnorm, 0);
    return kvz_cuda_check_launch("kvzip score (cuda): x norms launch", err);
}

/* Phase 2, step 1 for KV head h: gram[gl] = W_O^g^T W_O^g [dh, dh] for the
 * group's query heads g = h G + gl. W_O is row-major [D, H dh]; in cuBLAS's
 * column-major terms head g's slice A_g = W_O^g^T is [dh, D] with ld H dh,
 * dh columns apart from the next head's, and gram = A_g A_g^T. */
static int run_gram(const score_plan *sp, cublasHandle_t blas, size_t h, float *gram,
                    kvz_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    int dh = (int)sp->dh, wo_ld = (int)(sp->H * sp->dh);
    const float *w = sp->tap->w_o + h * sp->G * sp->dh;
    return kvz_cublas_check(
        cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_T, dh, dh, (int)sp->D, &one, w,
                                  wo_ld, (long long)sp->dh, w, wo_ld, (long long)sp->dh, &zero,
                                  gram, dh, (long long)(sp->dh * sp->dh), (int)sp->G),
        "kvzip score (cuda): W_O Gram GEMM", err);
}

/* Phase 2, step 2 for context keys [b, b + nb) (relative to p0) of KV head
 * h: y[gl] = gram[gl] V^T ([dh, nb] column-major; V's slice is [dh, nb]
 * with ld Hkv dh, shared by the batch: stride 0), then the log-norms. */
static int run_value_norms_block(const score_plan *sp, cublasHandle_t blas, const float *gram,
                                 float *y, size_t b, size_t nb, size_t h, kvz_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    size_t kv_ld = sp->Hkv * sp->dh;
    const float *v = sp->tap->v + (sp->p0 + b) * kv_ld + h * sp->dh;
    int rc = kvz_cublas_check(
        cublasSgemmStridedBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)sp->dh, (int)nb,
                                  (int)sp->dh, &one, gram, (int)sp->dh,
                                  (long long)(sp->dh * sp->dh), v, (int)kv_ld, 0, &zero, y,
                                  (int)sp->dh, (long long)(sp->dh * nb), (int)sp->G),
        "kvzip score (cuda): Gram V GEMM", err);
    if (rc != KVZ_OK)
        return rc;
    log_gram_norms_kernel<<<kvz_cuda_blocks_for(sp->G * nb, NORM_THREADS), NORM_THREADS, 0,
                            sp->stream>>>(v, kv_ld, y, sp->dh, sp->G, nb,
                                          sp->lognorm + h * sp->G * sp->nP + b, sp->nP);
    return kvz_cuda_check_launch("kvzip score (cuda): value norms launch", err);
}

static int run_value_norms(const score_plan *sp, kvz_error *err)
{
    cublasHandle_t blas;
    int rc = kvz_cuda_blas(&blas, err);
    if (rc == KVZ_OK) /* the shared handle: always name the stream (0 for the sync entry) */
        rc = kvz_cublas_check(cublasSetStream(blas, sp->stream),
                              "kvzip score (cuda): cublasSetStream", err);
    float *gram = sp->gemm_out, *y = sp->gemm_out + sp->G * sp->dh * sp->dh;
    for (size_t h = 0; rc == KVZ_OK && h < sp->Hkv; h++) {
        rc = run_gram(sp, blas, h, gram, err);
        for (size_t b = 0; rc == KVZ_OK && b < sp->nP; b += sp->gemm_rows) {
            size_t nb = sp->nP - b < sp->gemm_rows ? sp->nP - b : sp->gemm_rows;
            rc = run_value_norms_block(sp, blas, gram, y, b, nb, h, err);
        }
    }
    return rc;
}

/* Phase 3 from the tap's lse (device [T, H] fp32) when it has one. */
static int run_lse_from_tap(const score_plan *sp, kvz_error *err)
{
    lse_from_tap_kernel<<<kvz_cuda_blocks_for(sp->H * sp->nR, 256), 256, 0, sp->stream>>>(
        sp->tap->lse, sp->H, sp->r0, sp->nR, sp->lse);
    return kvz_cuda_check_launch("kvzip score (cuda): lse from tap launch", err);
}

/* Phase 4 into sp->out, or into sp->partial when the repeat queries are
 * sliced: the tensor-core kernel or the exact fp32 one. */
static int run_best(const score_plan *sp, kvz_error *err)
{
    const kvz_layer_tap *t = sp->tap;
    float *dst = sp->n_splits > 1 ? sp->partial : sp->out;
    if (sp->tensor_cores) {
        kvz_score_best_args a = {t->q, t->k, sp->H, sp->Hkv, sp->dh, sp->p0, sp->p1,
                                 sp->r0, sp->r1, sp->scale, sp->lse, sp->log_xnorm,
                                 sp->lognorm, sp->r_len, sp->n_splits, sp->nP * sp->Hkv,
                                 dst, sp->stream};
        return kvz_cuda_score_best_tc(&a, err);
    }
    int rc = kvz_cuda_allow_smem((const void *)context_best_kernel, best_smem(sp->dh),
                        "kvzip score (cuda): best kernel", err);
    if (rc != KVZ_OK)
        return rc;
    dim3 best_grid((unsigned)((sp->nP + SCORE_TILE - 1) / SCORE_TILE), (unsigned)sp->Hkv,
                   (unsigned)sp->n_splits);
    context_best_kernel<<<best_grid, SCORE_TILE, best_smem(sp->dh), sp->stream>>>(
        t->q, t->k, sp->H, sp->Hkv, sp->dh, sp->p0, sp->p1, sp->r0, sp->r1, sp->scale, sp->lse,
        sp->log_xnorm, sp->lognorm, sp->r_len, sp->nP * sp->Hkv, dst);
    return kvz_cuda_check_launch("kvzip score (cuda): best launch", err);
}

/* Phases 3 and 4. */
static int run_scores(const score_plan *sp, kvz_error *err)
{
    const kvz_layer_tap *t = sp->tap;
    int rc = t->lse ? run_lse_from_tap(sp, err) : KVZ_OK;
    if (rc == KVZ_OK && !t->lse)
        rc = kvz_cuda_allow_smem((const void *)causal_lse_kernel, lse_smem(sp->dh),
                        "kvzip score (cuda): lse kernel", err);
    if (rc != KVZ_OK)
        return rc;
    dim3 lse_grid((unsigned)((sp->nR + SCORE_TILE - 1) / SCORE_TILE), (unsigned)sp->H);
    if (!t->lse) {
        causal_lse_kernel<<<lse_grid, SCORE_TILE, lse_smem(sp->dh), sp->stream>>>(
            t->q, t->k, sp->H, sp->Hkv, sp->dh, sp->r0, sp->r1, sp->scale, sp->lse);
        rc = kvz_cuda_check_launch("kvzip score (cuda): lse launch", err);
    }
    if (rc != KVZ_OK)
        return rc;
    rc = run_best(sp, err);
    if (rc != KVZ_OK || sp->n_splits == 1)
        return rc;
    size_t n = sp->nP * sp->Hkv;
    max_splits_kernel<<<kvz_cuda_blocks_for(n, 256), 256, 0, sp->stream>>>(sp->partial,
                                                                         sp->n_splits, n, sp->out);
    return kvz_cuda_check_launch("kvzip score (cuda): max of slices launch", err);
}

/* Slices of the repeat queries for the best kernel: enough blocks to fill
 * the device (about BEST_TARGET_BLOCKS), each slice a whole number of query
 * tiles, at most BEST_MAX_SPLITS slices. Tiles: SCORE_TILE keys and queries
 * (fp32 kernel) or KVZ_SCORE_TC_TILE (tensor cores). */
static void plan_splits(score_plan *sp)
{
    const size_t BEST_TARGET_BLOCKS = 1024, BEST_MAX_SPLITS = 32;
    const size_t tile = sp->tensor_cores ? (size_t)KVZ_SCORE_TC_TILE : (size_t)SCORE_TILE;
    size_t blocks = (sp->nP + tile - 1) / tile * sp->Hkv;
    size_t q_tiles = (sp->nR + tile - 1) / tile;
    size_t want = (BEST_TARGET_BLOCKS + blocks - 1) / blocks;
    want = want < q_tiles ? want : q_tiles;
    want = want < BEST_MAX_SPLITS ? want : BEST_MAX_SPLITS;
    want = want ? want : 1;
    size_t tiles_per_split = (q_tiles + want - 1) / want;
    sp->r_len = tiles_per_split * tile;
    sp->n_splits = (sp->nR + sp->r_len - 1) / sp->r_len;
}

/* The tensor-core phase 4 when asked for, head_dim suits it and the
 * environment does not force fp32 (KVZ_SCORE=fp32, the safety valve). */
static int use_tensor_cores(int requested, size_t dh)
{
    const char *env = getenv("KVZ_SCORE");
    if (env && strcmp(env, "fp32") == 0)
        return 0;
    return requested && kvz_cuda_score_tc_supported(dh);
}

static void plan_score(score_plan *sp, const kvz_layer_tap *tap, const kvz_model_config *cfg,
                       size_t p0, size_t p1, size_t r0, size_t r1, float *out, int tensor_cores)
{
    memset(sp, 0, sizeof *sp);
    sp->tap = tap, sp->out = out;
    sp->H = cfg->n_heads, sp->Hkv = cfg->n_kv_heads, sp->G = sp->H / sp->Hkv;
    sp->dh = cfg->head_dim, sp->D = cfg->d_model;
    sp->p0 = p0, sp->p1 = p1, sp->r0 = r0, sp->r1 = r1, sp->nP = p1 - p0, sp->nR = r1 - r0;
    sp->scale = (float)(1.0 / sqrt((double)sp->dh));
    sp->tensor_cores = use_tensor_cores(tensor_cores, sp->dh);
    /* gemm_out: the group's Gram matrices, then Y for a block of keys */
    size_t gram = sp->G * sp->dh * sp->dh;
    size_t rows = GEMM_BUFFER_FLOATS > gram ? (GEMM_BUFFER_FLOATS - gram) / (sp->G * sp->dh) : 0;
    rows = rows ? rows : 1;
    sp->gemm_rows = rows < sp->nP ? rows : sp->nP;
    sp->gemm_floats = gram + sp->G * sp->dh * sp->gemm_rows;
    plan_splits(sp);
}

/* ---------- the pipelined entry (kernels/kvz_cuda_pipeline.h) ---------- */

struct kvz_cuda_score_ws {
    size_t cap_nR, cap_lse, cap_lognorm, cap_gemm, cap_partial; /* elements */
    double *log_xnorm, *lse, *lognorm;
    float *gemm_out, *partial;
};

void kvz_cuda_score_ws_free(kvz_cuda_score_ws *ws)
{
    if (!ws)
        return;
    kvz_cuda_free(ws->log_xnorm);
    kvz_cuda_free(ws->lse);
    kvz_cuda_free(ws->lognorm);
    kvz_cuda_free(ws->gemm_out);
    kvz_cuda_free(ws->partial);
    free(ws);
}

/* Makes *buf hold at least need elements of size elem (freeing the old one
 * first: cudaFree waits for the device, so in-flight users are done). */
static int grow(void **buf, size_t *cap, size_t need, size_t elem, kvz_error *err)
{
    if (need <= *cap)
        return KVZ_OK;
    kvz_cuda_free(*buf);
    *buf = NULL;
    *cap = 0;
    int rc = kvz_cuda_alloc(buf, need * elem, err);
    if (rc == KVZ_OK)
        *cap = need;
    return rc;
}

static int bind_workspace(score_plan *sp, kvz_cuda_score_ws **wsp, kvz_error *err)
{
    if (!*wsp && !(*wsp = (kvz_cuda_score_ws *)calloc(1, sizeof **wsp)))
        return kvz_fail(err, KVZ_ENOMEM, "kvzip score (cuda): out of memory");
    kvz_cuda_score_ws *ws = *wsp;
    int rc = grow((void **)&ws->log_xnorm, &ws->cap_nR, sp->nR, sizeof(double), err);
    if (rc == KVZ_OK)
        rc = grow((void **)&ws->lse, &ws->cap_lse, sp->H * sp->nR, sizeof(double), err);
    if (rc == KVZ_OK)
        rc = grow((void **)&ws->lognorm, &ws->cap_lognorm, sp->H * sp->nP, sizeof(double), err);
    if (rc == KVZ_OK)
        rc = grow((void **)&ws->gemm_out, &ws->cap_gemm, sp->gemm_floats, sizeof(float), err);
    if (rc == KVZ_OK && sp->n_splits > 1)
        rc = grow((void **)&ws->partial, &ws->cap_partial, sp->n_splits * sp->nP * sp->Hkv,
                  sizeof(float), err);
    sp->log_xnorm = ws->log_xnorm, sp->lse = ws->lse, sp->lognorm = ws->lognorm;
    sp->gemm_out = ws->gemm_out, sp->partial = ws->partial;
    return rc;
}

extern "C" int kvz_cuda_kvzip_score_layer_async(const kvz_layer_tap *tap,
                                                const kvz_model_config *cfg, size_t p0,
                                                size_t p1, size_t r0, size_t r1,
                                                float *out_logscores, void *stream,
                                                int tensor_cores, kvz_cuda_score_ws **ws,
                                                kvz_error *err)
{
    int rc = check_args(tap, cfg, p0, p1, r0, r1, out_logscores, err);
    if (rc != KVZ_OK)
        return rc;
    if (!ws)
        return kvz_fail(err, KVZ_EINVAL, "kvzip score (cuda): NULL workspace");
    score_plan sp;
    plan_score(&sp, tap, cfg, p0, p1, r0, r1, out_logscores, tensor_cores);
    sp.stream = (cudaStream_t)stream;
    rc = bind_workspace(&sp, ws, err);
    if (rc == KVZ_OK)
        rc = run_x_norms(&sp, err);
    if (rc == KVZ_OK)
        rc = run_value_norms(&sp, err);
    if (rc == KVZ_OK)
        rc = run_scores(&sp, err);
    return rc;
}

/* The synchronous fp32 entry (kvz_cuda_ops.h): the pipelined one on the
 * legacy default stream with a workspace of its own, then a wait. */
extern "C" int kvz_cuda_kvzip_score_layer(const kvz_layer_tap *tap, const kvz_model_config *cfg,
                                          size_t p0, size_t p1, size_t r0, size_t r1,
                                          float *out_logscores, kvz_error *err)
{
    kvz_cuda_score_ws *ws = NULL;
    int rc = kvz_cuda_kvzip_score_layer_async(tap, cfg, p0, p1, r0, r1, out_logscores, NULL, 0,
                                              &ws, err);
    /* Always wait before freeing the scratch; keep the first error. */
    kvz_error sync_err;
    int sync_rc = kvz_cuda_check(cudaDeviceSynchronize(), "kvzip score (cuda): running", &sync_err);
    if (rc == KVZ_OK && sync_rc != KVZ_OK) {
        rc = sync_rc;
        if (err)
            *err = sync_err;
    }
    kvz_cuda_score_ws_free(ws);
    return rc;
}
