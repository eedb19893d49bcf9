/* cuda.h (kvzap CUDA emulator stand-in): the driver API is not emulated;
 * this only pulls in the runtime so code that includes <cuda.h> compiles. */
#ifndef KVZ_EMU_CUDA_H
#define KVZ_EMU_CUDA_H
#include "cuda_runtime.h"
#define CUDA_VERSION 13000
#endif
