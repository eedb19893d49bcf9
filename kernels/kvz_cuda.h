/* kvz_cuda: the plain-C face of the CUDA backend (no CUDA headers here).
 * Implemented by the kernels/ .cu files when the build has CUDA, and by
 * the kernels/ _nocuda.c files otherwise, so callers never need #ifdef. */
#ifndef KVZ_CUDA_H
#define KVZ_CUDA_H

#include <stddef.h>

#include "../common/kvz_error.h"

/* 1 when this build contains the CUDA backend. */
int kvz_cuda_compiled(void);

/* 1 when that backend runs on the CPU emulator of tests/cuda_emu (build
 * option KVZ_CUDA_EMU; tests keep emulated work small then), else 0. */
int kvz_cuda_emulated(void);

/* Number of usable CUDA devices (0 when none, no driver, or no CUDA build).
 * Never fails: a missing driver is "0 devices"; the reason goes to err if given. */
int kvz_cuda_device_count(kvz_error *err);

typedef struct kvz_cuda_device_info {
    char name[256];
    int major, minor;     /* compute capability */
    size_t total_memory;  /* bytes */
    int multiprocessors;
} kvz_cuda_device_info;

int kvz_cuda_device_info_get(int device, kvz_cuda_device_info *out, kvz_error *err);

#endif
