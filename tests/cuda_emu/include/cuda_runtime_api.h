/* cuda_runtime_api.h (kvzap CUDA emulator stand-in): same as cuda_runtime.h. */
#include "cuda_runtime.h"
