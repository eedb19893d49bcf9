/* device.cu: CUDA device discovery behind kvz_backend_device_count,
 * kvz_backend_device_info and kvz_backend_emulated (ops/backend.c calls
 * these in CUDA builds only). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "../ops/backend.h"
}

extern "C" int kvz_cuda_device_count(kvz_error *err);
extern "C" int kvz_cuda_device_info_get(int device, kvz_device_info *out, kvz_error *err);
extern "C" int kvz_cuda_emulated(void);

extern "C" int kvz_cuda_emulated(void)
{
#ifdef KVZ_CUDA_EMU
    return 1;
#else
    return 0;
#endif
}

extern "C" int kvz_cuda_device_count(kvz_error *err)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        kvz_fail(err, KVZ_EUNSUPPORTED, "cuda: no usable device: %s", cudaGetErrorString(rc));
        (void)cudaGetLastError(); /* clear the sticky error */
        return 0;
    }
    return n;
}

extern "C" int kvz_cuda_device_info_get(int device, kvz_device_info *out, kvz_error *err)
{
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess)
        return kvz_fail(err, KVZ_EINVAL, "cuda device %d: %s", device, cudaGetErrorString(rc));
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->major = prop.major;
    out->minor = prop.minor;
    out->total_memory = prop.totalGlobalMem;
    out->multiprocessors = prop.multiProcessorCount;
    return KVZ_OK;
}
