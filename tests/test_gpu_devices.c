/* test_gpu_devices: the CUDA backend sees a device and reports sane properties.
 * Skipped (77) when the build has no CUDA or the machine has no GPU. */
#include <stdio.h>

#include "ops/backend.h"
#include "kvz_test.h"

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    int n = kvz_backend_device_count(KVZ_BACKEND_CUDA, &err);
    if (n == 0)
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    for (int d = 0; d < n; d++) {
        kvz_device_info info;
        KVZ_CHECK_OK(kvz_backend_device_info(KVZ_BACKEND_CUDA, d, &info, &err), err);
        KVZ_CHECK(info.major >= 7, "device %d compute capability %d.%d", d, info.major, info.minor);
        KVZ_CHECK(info.total_memory > ((size_t)1 << 30), "device %d memory %zu", d, info.total_memory);
        printf("cuda:%d %s sm_%d%d\n", d, info.name, info.major, info.minor);
    }
    return kvz_test_done();
}
