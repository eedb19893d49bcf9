/* kvz_cuda: CUDA device discovery (kernels/device.cu), the functions behind
 * kvz_backend_device_count / kvz_backend_device_info / kvz_backend_emulated
 * (ops/backend.h), which is what callers outside kernels/ use. */
#ifndef KVZ_CUDA_H
#define KVZ_CUDA_H

#include <stddef.h>

#include "../common/kvz_error.h"
#include "../ops/backend.h"

int kvz_cuda_emulated(void);
int kvz_cuda_device_count(kvz_error *err);
typedef kvz_device_info kvz_cuda_device_info;
int kvz_cuda_device_info_get(int device, kvz_device_info *out, kvz_error *err);

#endif
