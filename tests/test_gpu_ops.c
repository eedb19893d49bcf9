/* test_gpu_ops: the CUDA elementwise ops of kernels/kvz_cuda_ops.h (RMSNorm,
 * per-head RMSNorm, RoPE with and without llama3 scaling, SwiGLU) against the
 * CPU ops of ops/ops.h on random inputs of awkward sizes: NMSE <= 1e-6, no
 * NaN/Inf, and guard floats on both sides of every device output untouched.
 * Skipped (77) when the build has no CUDA or the machine has no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvz_cuda.h"
#include "kernels/kvz_cuda_ops.h"
#include "kvz_test.h"
#include "kvz_test_gpu.h"
#include "ops/ops.h"

/* ---------- inputs and comparison ---------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static void random_fill(float *v, size_t n, float scale)
{
    kvz_test_random_fill(&rng_state, v, n, scale);
}

static void compare(const char *what, const float *got, const float *ref, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !isfinite(got[i]);
    KVZ_CHECK(bad == 0, "%s: %zu non-finite values", what, bad);
    kvz_test_nmse(what, got, ref, n, 1e-6);
}

/* ---------- ops ---------- */

static void test_rmsnorm(size_t rows, size_t dim, int in_place)
{
    char what[96];
    snprintf(what, sizeof what, "rmsnorm %zux%zu%s", rows, dim, in_place ? " in place" : "");
    size_t n = rows * dim;
    float *x = malloc(n * sizeof *x), *w = malloc(dim * sizeof *w);
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    random_fill(x, n, 3.0f);
    random_fill(w, dim, 1.5f);
    kvz_rmsnorm(x, w, ref, rows, dim, 1e-6f);
    kvz_guarded dx, dw, dy;
    kvz_guarded_create(&dx, x, n);
    kvz_guarded_create(&dw, w, dim);
    kvz_guarded_create(&dy, NULL, n);
    kvz_error err = {0};
    float *out = in_place ? dx.data : dy.data;
    KVZ_CHECK_OK(kvz_cuda_rmsnorm(dx.data, dw.data, out, rows, dim, 1e-6f, &err), err);
    kvz_guarded_fetch(in_place ? &dx : &dy, got, what);
    compare(what, got, ref, n);
    kvz_guarded_free(&dx), kvz_guarded_free(&dw), kvz_guarded_free(&dy);
    free(x), free(w), free(ref), free(got);
}

static void test_head_rmsnorm(size_t T, size_t H, size_t dh)
{
    const char *what = "head rmsnorm (q/k norm)";
    size_t n = T * H * dh;
    float *x = malloc(n * sizeof *x), *w = malloc(dh * sizeof *w);
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    random_fill(x, n, 2.0f);
    random_fill(w, dh, 1.0f);
    kvz_rmsnorm(x, w, ref, T * H, dh, 1e-6f);
    kvz_guarded dx, dw;
    kvz_guarded_create(&dx, x, n);
    kvz_guarded_create(&dw, w, dh);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_cuda_head_rmsnorm(dx.data, dw.data, T, H, dh, 1e-6f, &err), err);
    kvz_guarded_fetch(&dx, got, what);
    compare(what, got, ref, n);
    kvz_guarded_free(&dx), kvz_guarded_free(&dw);
    free(x), free(w), free(ref), free(got);
}

static void test_rope(size_t T, size_t H, size_t dh, size_t pos0, double theta,
                      const kvz_rope_scaling *scaling)
{
    char what[96];
    snprintf(what, sizeof what, "rope theta %g pos0 %zu%s", theta, pos0,
             scaling ? " llama3" : "");
    size_t n = T * H * dh;
    float *x = malloc(n * sizeof *x), *inv = malloc(dh / 2 * sizeof *inv);
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    random_fill(x, n, 2.0f);
    kvz_rope_inv_freq_raw(theta, dh, scaling, inv);
    memcpy(ref, x, n * sizeof *x);
    kvz_rope_apply(ref, T, H, dh, pos0, inv);
    kvz_guarded dx, dinv;
    kvz_guarded_create(&dx, x, n);
    kvz_guarded_create(&dinv, inv, dh / 2);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_cuda_rope_apply(dx.data, T, H, dh, pos0, dinv.data, &err), err);
    kvz_guarded_fetch(&dx, got, what);
    compare(what, got, ref, n);
    kvz_guarded_free(&dx), kvz_guarded_free(&dinv);
    free(x), free(inv), free(ref), free(got);
}

static void test_swiglu(size_t rows, size_t d_ff)
{
    const char *what = "swiglu";
    float *gu = malloc(rows * 2 * d_ff * sizeof *gu);
    float *ref = malloc(rows * d_ff * sizeof *ref), *got = malloc(rows * d_ff * sizeof *got);
    random_fill(gu, rows * 2 * d_ff, 6.0f);
    kvz_swiglu(gu, ref, rows, d_ff);
    kvz_guarded dgu, dout;
    kvz_guarded_create(&dgu, gu, rows * 2 * d_ff);
    kvz_guarded_create(&dout, NULL, rows * d_ff);
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_cuda_swiglu(dgu.data, dout.data, rows, d_ff, &err), err);
    kvz_guarded_fetch(&dout, got, what);
    compare(what, got, ref, rows * d_ff);
    kvz_guarded_free(&dgu), kvz_guarded_free(&dout);
    free(gu), free(ref), free(got);
}

static void test_bad_arguments(void)
{
    kvz_error err = {0};
    float *dev = NULL;
    KVZ_CHECK_OK(kvz_cuda_alloc((void **)&dev, 64 * sizeof *dev, &err), err);
    KVZ_CHECK(kvz_cuda_rmsnorm(NULL, dev, dev, 1, 8, 1e-6f, &err) == KVZ_EINVAL, "NULL x");
    KVZ_CHECK(kvz_cuda_rope_apply(dev, 1, 1, 7, 0, dev, &err) == KVZ_EINVAL, "odd head_dim");
    KVZ_CHECK(strstr(err.msg, "head_dim 7") != NULL, "message: %s", err.msg);
    KVZ_CHECK(kvz_cuda_swiglu(dev, dev, 1, 0, &err) == KVZ_EINVAL, "d_ff 0");
    float *empty = dev;
    KVZ_CHECK(kvz_cuda_alloc((void **)&empty, 0, &err) == KVZ_EINVAL && empty == NULL, "0 bytes");
    KVZ_CHECK_OK(kvz_cuda_sync(&err), err);
    kvz_cuda_free(dev);
}

/* A failed allocation (the trainer falls back to pageable memory or the CPU
 * after one) must not leave CUDA's last-error state set: the next kernel
 * launch's cudaGetLastError check would report it as a launch failure. */
static void test_failed_alloc_then_launch(void)
{
    kvz_error err = {0};
    void *huge = NULL;
    KVZ_CHECK(kvz_cuda_alloc(&huge, (size_t)1 << 50, &err) == KVZ_ENOMEM && huge == NULL,
              "a 1 PiB cudaMalloc fails with KVZ_ENOMEM: %s", err.msg);
    test_rmsnorm(3, 8, 0);
}

int main(void)
{
    if (!kvz_backend_compiled(KVZ_BACKEND_CUDA))
        kvz_test_skip("built without CUDA");
    kvz_error err = {0};
    if (kvz_cuda_device_count(&err) == 0)
        kvz_test_skip(err.msg[0] ? err.msg : "no CUDA device");
    test_rmsnorm(37, 72, 0);
    test_rmsnorm(37, 72, 1);
    test_rmsnorm(5, 1001, 0); /* rows longer than a block's threads */
    test_head_rmsnorm(37, 5, 72);
    test_rope(37, 5, 72, 11, 10000.0, NULL);
    kvz_rope_scaling llama3 = {KVZ_ROPE_SCALING_LLAMA3, 8.0, 1.0, 4.0, 8192};
    test_rope(37, 5, 72, 5000, 500000.0, &llama3); /* all three llama3 bands at dh 72 */
    test_swiglu(37, 217);
    test_bad_arguments();
    test_failed_alloc_then_launch();
    kvz_cuda_ops_release();
    return kvz_test_done();
}
