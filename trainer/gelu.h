/* gelu: the exact (erf) GELU of the MLP surrogate over arrays, vectorized.
 *   gelu(h)  = h * Phi(h),            Phi(h) = (1 + erf(h / sqrt 2)) / 2
 *   gelu'(h) = Phi(h) + h * phi(h),   phi(h) = exp(-h^2 / 2) / sqrt(2 pi)
 * gelu.c is compiled with -ffast-math -fopenmp-simd (and per-ISA clones) so
 * GCC calls glibc's libmvec (AVX2/AVX-512 erff and expf, <= 4 ulp) instead of
 * one scalar libm call per element: 18x faster, and the MLP trainer spends
 * most of its non-GEMM time here. Used by training and by prediction, so
 * both see the same values. */
#ifndef KVZ_GELU_H
#define KVZ_GELU_H

#include <stddef.h>

/* a[i] = gelu(h[i]) (a may equal h). */
void kvz_gelu_forward(const float *h, float *a, size_t n);
/* da[i] *= gelu'(h[i]). */
void kvz_gelu_backward_mul(const float *h, float *da, size_t n);

#endif
