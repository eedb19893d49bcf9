/* device_nocuda: kvz_cuda.h for builds without CUDA: no devices. */
#include "kvz_cuda.h"

int kvz_cuda_emulated(void)
{
    return 0;
}

int kvz_cuda_device_count(kvz_error *err)
{
    kvz_fail(err, KVZ_EUNSUPPORTED, "this kvzap was built without CUDA");
    return 0;
}

int kvz_cuda_device_info_get(int device, kvz_cuda_device_info *out, kvz_error *err)
{
    (void)device;
    (void)out;
    return kvz_fail(err, KVZ_EUNSUPPORTED, "this kvzap was built without CUDA");
}
