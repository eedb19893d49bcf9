/* gelu: vectorized exact GELU and its derivative (see gelu.h for the
 * formulas and the compile flags this file gets from CMakeLists.txt). */
#include "gelu.h"

#include <math.h>

#define GELU_SQRT1_2 0.70710678118654752440f
#define GELU_INV_SQRT_2PI 0.39894228040143267794f

/* GCC: one clone per ISA level, chosen at load time: libmvec's 16-wide
 * AVX-512, 8-wide AVX2 or 4-wide SSE variants. Clang gets plain functions:
 * it does not map erff to libmvec, and clang 14 emits target_clones as
 * `name.ifunc` only, so the plain name never links (clang builds are for
 * the fuzzers and sanitizers, not for speed). */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define GELU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GELU_CLONES
#endif

GELU_CLONES
void kvz_gelu_forward(const float *h, float *a, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        a[i] = 0.5f * h[i] * (1.0f + erff(h[i] * GELU_SQRT1_2));
}

GELU_CLONES
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
