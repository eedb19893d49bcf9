/* cuda_score_tc.cuh: the interface between the KVzip+ scorer
 * (kernels/cuda_score.cu) and its tensor-core phase 4
 * (kernels/cuda_score_tc.cu). CUDA-only, internal to kernels/. */
#ifndef KVZ_CUDA_SCORE_TC_CUH
#define KVZ_CUDA_SCORE_TC_CUH

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

/* 1 when head_dim suits the kernel: a multiple of 16 in 16..256. */
extern "C" int kvz_cuda_score_tc_supported(size_t head_dim);
/* Queues the kernel on a->stream (opting in to its shared memory). */
extern "C" int kvz_cuda_score_best_tc(const kvz_score_best_args *a, kvz_error *err);

#endif
