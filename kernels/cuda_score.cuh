/* cuda_score.cuh: the KVzip+ score phases on the GPU (kernels/cuda_score.cu,
 * its tensor-core phase 4 in kernels/cuda_score_tc.cu), which the cuda
 * backend's score ops call (kernels/backend_cuda.cu; contracts in
 * ops/backend.h). CUDA-only, internal to kernels/. Every array is device
 * memory; work is queued on `stream` and not waited for. */
#ifndef KVZ_CUDA_SCORE_CUH
#define KVZ_CUDA_SCORE_CUH

#include <cublas_v2.h>

#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "../common/kvz_error.h"
}

enum {
    KVZ_SCORE_TC_TILE = 64,        /* context keys per block = repeat queries per tile */
    KVZ_SCORE_TC_MAX_HEAD_DIM = 256
};

/* Phase 4 of the score (see context_best_kernel in cuda_score.cu) with
 * bf16 q.k products on tensor cores: q [T, H, dh], k [T, Hkv, dh] (device
 * fp32), lse [H, |R|], log_xnorm [|R|], lognorm [H, |P|] (device double, the
 * earlier phases' scratch). Block z of the n_splits slices covers the repeat
 * queries [r0 + z r_len, ...) and writes out + z * split_stride
 * ([|P|, Hkv] floats); r_len a multiple of KVZ_SCORE_TC_TILE. */
typedef struct kvz_score_best_args {
    const float *q, *k;
    size_t H, Hkv, dh, p0, p1, r0, r1;
    float scale;
    const double *lse, *log_xnorm, *lognorm;
    size_t r_len, n_splits, split_stride;
    float *out;
    cudaStream_t stream;
} kvz_score_best_args;

/* kvz_op_row_lognorms. */
int kvz_cuda_score_row_lognorms(const float *x, size_t ld, size_t width, size_t n, double *out,
                                cudaStream_t stream, kvz_error *err);
/* Floats of scratch kvz_cuda_score_value_lognorms needs for H query heads
 * in groups of H / Hkv, head_dim dh and n keys: the group's Gram matrices
 * plus Y for a block of keys, at most about 64 MiB. */
size_t kvz_cuda_score_value_scratch(size_t H, size_t Hkv, size_t dh, size_t n);
/* kvz_op_value_lognorms through the heads' Gram matrices: two strided
 * batched cuBLAS GEMMs per KV head (blas bound to `stream`), a dot kernel
 * in double. scratch: kvz_cuda_score_value_scratch floats. */
int kvz_cuda_score_value_lognorms(cublasHandle_t blas, float *scratch, const float *v,
                                  const float *w_o, size_t H, size_t Hkv, size_t dh, size_t D,
                                  size_t i0, size_t i1, double *out, cudaStream_t stream,
                                  kvz_error *err);
/* kvz_op_causal_lse (tiled: one thread per query, key tiles in shared
 * memory), or the copy of tap_lse when not NULL. */
int kvz_cuda_score_causal_lse(const float *q, const float *k, const float *tap_lse, size_t H,
                              size_t Hkv, size_t dh, float scale, size_t r0, size_t r1,
                              double *lse, cudaStream_t stream, kvz_error *err);
/* Floats of scratch kvz_cuda_score_best needs (0: none): the partial maxima
 * of the repeat-query slices that keep the device busy. */
size_t kvz_cuda_score_best_scratch(size_t Hkv, size_t dh, size_t p0, size_t p1, size_t r0,
                                   size_t r1, int tensor_cores);
/* kvz_op_kvzip_best: the exact fp32 kernel (one thread per context key,
 * query tiles in shared memory), or with tensor_cores (requested and
 * kvz_cuda_score_tc_supported) the bf16 wmma kernel. scratch: at least
 * kvz_cuda_score_best_scratch floats (may be NULL when that is 0). */
int kvz_cuda_score_best(const float *q, const float *k, size_t H, size_t Hkv, size_t dh,
                        float scale, size_t p0, size_t p1, size_t r0, size_t r1,
                        const double *lse, const double *log_xnorm, const double *lognorm,
                        int tensor_cores, float *scratch, float *out, cudaStream_t stream,
                        kvz_error *err);

/* 1 when head_dim suits the kernel: a multiple of 16 in 16..256. */
extern "C" int kvz_cuda_score_tc_supported(size_t head_dim);
/* Queues the kernel on a->stream (opting in to its shared memory). */
extern "C" int kvz_cuda_score_best_tc(const kvz_score_best_args *a, kvz_error *err);

#endif
