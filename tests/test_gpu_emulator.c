/* test_gpu_emulator: self-test of the CPU emulator of the CUDA subset
 * (tests/cuda_emu): the cases of tests/cuda_emu/selftest/emu_selftest.cu
 * (cuBLAS against the documented formulas, bf16/fp16 rounding, shared
 * memory, warp shuffles, launch errors, sticky faults, a missing
 * __syncthreads), plus the KVZ_CUDA_EMU_DEVICES=0 skip path. Skipped (77)
 * outside KVZ_CUDA_EMU builds: there is no emulator to test. */
#include <stdio.h>
#include <stdlib.h>

#include "ops/backend.h"
#include "kvz_test.h"

#ifdef KVZ_CUDA_EMU
int kvz_emu_selftest_count(void);
const char *kvz_emu_selftest_name(int i);
int kvz_emu_selftest_run(int i, char *report, size_t cap);

static void run_cases(void)
{
    static char report[16384];
    for (int i = 0; i < kvz_emu_selftest_count(); i++) {
        int fails = kvz_emu_selftest_run(i, report, sizeof report);
        KVZ_CHECK(fails == 0, "%s: %d failure(s):\n%s", kvz_emu_selftest_name(i), fails, report);
        printf("%-48s %s\n", kvz_emu_selftest_name(i), fails ? "FAILED" : "ok");
    }
}

static void check_device_hiding(void)
{
    kvz_error err = {0};
    setenv("KVZ_CUDA_EMU_DEVICES", "0", 1);
    KVZ_CHECK(kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 0, "KVZ_CUDA_EMU_DEVICES=0 still shows a device");
    unsetenv("KVZ_CUDA_EMU_DEVICES");
    KVZ_CHECK(kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 1, "the device did not come back");
}
#endif

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA) || !kvz_backend_emulated())
        kvz_test_skip("not a KVZ_CUDA_EMU build: no emulator to test");
    kvz_error err = {0};
    if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) == 0)
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
#ifdef KVZ_CUDA_EMU
    run_cases();
    check_device_hiding();
#endif
    return kvz_test_done();
}
