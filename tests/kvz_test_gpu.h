/* kvz_test_gpu: helpers the GPU tests (tests/test_gpu_*.c) share on top of
 * kvz_test.h: device arrays with guard floats on both sides (a NaN pattern
 * no kernel writes), so an out-of-bounds write or an unwritten output shows
 * up, and a seeded uniform fill. Failures are KVZ_CHECKs. */
#ifndef KVZ_TEST_GPU_H
#define KVZ_TEST_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "ops/backend.h"

enum { KVZ_GUARD = 64 };                 /* guard floats on each side */
#define KVZ_GUARD_BITS 0x7fa5a5a5u       /* the guard pattern: a NaN */

/* v[0..n) = the guard pattern. */
void kvz_test_fill_guard(float *v, size_t n);
/* 1 when v[0..n) all still hold the guard pattern. */
int kvz_test_guard_intact(const float *v, size_t n);

/* The process's cuda backend for these helpers (opened on first use; NULL
 * when the build or the machine has none). Device pointers it hands out
 * work with any cuda backend of the process. */
kvz_backend *kvz_test_cuda(void);

/* n floats at data on the device, KVZ_GUARD pattern floats before and after. */
typedef struct kvz_guarded {
    float *base, *data;
    size_t n;
    kvz_buf buf; /* the allocation (kvz_test_cuda's) */
} kvz_guarded;

/* Uploads host[n] (NULL: the pattern, so unwritten outputs read as NaN).
 * Returns the CUDA status (also checked). */
int kvz_guarded_create(kvz_guarded *g, const float *host_or_NULL, size_t n);
/* Downloads the data into host[n]; checks both guards. */
void kvz_guarded_fetch(const kvz_guarded *g, float *host, const char *what);
/* Checks both guards and that the data still equals host[n] (an input the
 * kernel must not write), then frees. */
void kvz_guarded_check_free(kvz_guarded *g, const float *host, const char *what);
void kvz_guarded_free(kvz_guarded *g);

/* v[i] uniform in [-scale, scale) from a xorshift64 *state. */
void kvz_test_random_fill(uint64_t *state, float *v, size_t n, float scale);

#endif
