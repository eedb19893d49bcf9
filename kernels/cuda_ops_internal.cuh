/* cuda_ops_internal: helpers shared by the kernels/ .cu files (CUDA builds
 * only; never include from C): status checks that turn CUDA and cuBLAS
 * failures into kvz_error messages, launch sizing and the shared-memory
 * opt-in. */
#ifndef KVZ_CUDA_OPS_INTERNAL_CUH
#define KVZ_CUDA_OPS_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "../common/kvz_error.h"
}

/* KVZ_OK, or fills err with "<what>: <CUDA message> (<error name>)" and
 * returns KVZ_ENOMEM for allocation failures, KVZ_EIO otherwise. */
int kvz_cuda_check(cudaError_t rc, const char *what, kvz_error *err);
/* The same for cuBLAS statuses. */
int kvz_cublas_check(cublasStatus_t rc, const char *what, kvz_error *err);
/* Checks the launch that was just made (cudaGetLastError). */
int kvz_cuda_check_launch(const char *what, kvz_error *err);
/* Blocks for a grid-stride loop over n items with `threads` per block
 * (at least 1, at most 65535 * 16 so the grid stays modest). */
unsigned kvz_cuda_blocks_for(size_t n, unsigned threads);
/* Lets `kernel` launch with `bytes` of dynamic shared memory: nothing to do
 * up to the default 48 KiB; above, checks the current device's opt-in limit
 * (cudaDevAttrMaxSharedMemoryPerBlockOptin, cached per device: this runs
 * once per layer) and sets cudaFuncAttributeMaxDynamicSharedMemorySize.
 * KVZ_EUNSUPPORTED ("<what>: needs N bytes of shared memory per block,
 * device D allows M") when the device cannot; KVZ_EIO on CUDA errors. */
int kvz_cuda_allow_smem(const void *kernel, size_t bytes, const char *what, kvz_error *err);

#endif
