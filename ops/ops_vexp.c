/* ops_vexp: the exponentials of the softmaxes (forward attention, KVzip+
 * log-sum-exp), vectorized. Compiled with -ffast-math -fopenmp-simd (see
 * CMakeLists.txt) so GCC calls glibc's libmvec expf (16-wide on AVX-512,
 * <= 4 ulp) instead of one scalar call per element; -INFINITY inputs give 0
 * as before. Sums are reassociated (vector lanes), so they may differ from a
 * sequential sum in the last bits. */
#include "ops.h"

#include <math.h>

/* GCC: one clone per ISA level (libmvec's AVX-512, AVX2 or SSE expf),
 * chosen at load time. Clang gets plain functions: clang 14 emits
 * target_clones as `name.ifunc` only, so the plain name never links, and its
 * -fveclib=libmvec ignores the target ISA (see trainer/gelu.c). */
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
