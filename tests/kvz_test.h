/* kvz_test: the tiny test harness every tests/test_*.c uses.
 * Checks count failures instead of aborting, so one run shows every mismatch;
 * numeric comparisons use |a-b| <= atol + rtol*|ref| (or NMSE) and print the
 * worst elements on failure. kvz_test_done() prints "N passed, N failed" and
 * returns the exit status (0 pass, 1 fail). kvz_test_skip() exits 77. */
#ifndef KVZ_TEST_H
#define KVZ_TEST_H

#include <stddef.h>
#include <stdint.h>

extern int kvz_test_passed, kvz_test_failed;

#define KVZ_CHECK(cond, ...) kvz_test_check((cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define KVZ_CHECK_OK(rc, err) \
    kvz_test_check((rc) == 0, __FILE__, __LINE__, #rc " == KVZ_OK", "%s", (err).msg)

void kvz_test_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Element-wise |got-ref| <= atol + rtol*|ref|; prints the worst 5 on failure. */
int kvz_test_allclose(const char *what, const float *got, const float *ref, size_t n,
                      double atol, double rtol);
/* Normalized MSE sum((got-ref)^2)/sum(ref^2) <= max_nmse. */
int kvz_test_nmse(const char *what, const float *got, const float *ref, size_t n,
                  double max_nmse);
/* Exact equality of integer arrays; prints the first mismatches. */
int kvz_test_equal_i32(const char *what, const int32_t *got, size_t n_got, const int32_t *ref,
                       size_t n_ref);

/* sum(bits[i] * (2i+1)) mod 2^64 over the float32 bit patterns: an exact,
 * order-sensitive fingerprint the reference scripts compute the same way. */
uint64_t kvz_test_checksum_f32(const float *v, size_t n);

/* $KVZ_FIXTURES/rel (static buffer, valid until the next call). */
const char *kvz_test_fixture(const char *rel);
/* A fresh temporary directory (removed by kvz_test_done). */
const char *kvz_test_tmpdir(void);

void kvz_test_skip(const char *reason) __attribute__((noreturn));
int kvz_test_done(void);

/* Extra peak memory allowed in memory-bound checks under AddressSanitizer,
 * which keeps freed blocks in its quarantine (256 MiB by default) and adds
 * shadow memory; 0 otherwise. */
#if defined(__SANITIZE_ADDRESS__)
#define KVZ_TEST_ASAN_SLACK_MIB 300.0
#else
#define KVZ_TEST_ASAN_SLACK_MIB 0.0
#endif

#endif
