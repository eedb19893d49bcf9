/* kvz_test: implementation of the test harness (see kvz_test.h). */
#define _GNU_SOURCE
#include "kvz_test.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kvz_test_passed = 0, kvz_test_failed = 0;
static char tmpdir[256];

void kvz_test_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
{
    if (ok) {
        kvz_test_passed++;
        return;
    }
    kvz_test_failed++;
    fprintf(stderr, "FAIL %s:%d: %s: ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

typedef struct worst {
    size_t i;
    double excess;
} worst;

int kvz_test_allclose(const char *what, const float *got, const float *ref, size_t n,
                      double atol, double rtol)
{
    worst w[5] = {{0, -1}, {0, -1}, {0, -1}, {0, -1}, {0, -1}};
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        double lim = atol + rtol * fabs((double)ref[i]);
        int nan = isnan(got[i]) != isnan(ref[i]);
        if (!(d <= lim) && !(isnan(got[i]) && isnan(ref[i]))) {
            bad++;
            double ex = nan ? INFINITY : d - lim;
            for (int k = 0; k < 5; k++)
                if (ex > w[k].excess) {
                    memmove(&w[k + 1], &w[k], (size_t)(4 - k) * sizeof w[0]);
                    w[k] = (worst){i, ex};
                    break;
                }
        }
    }
    if (bad == 0) {
        kvz_test_passed++;
        return 1;
    }
    kvz_test_failed++;
    fprintf(stderr, "FAIL %s: %zu of %zu elements outside atol=%g rtol=%g; worst:\n", what, bad,
            n, atol, rtol);
    for (int k = 0; k < 5 && w[k].excess >= 0; k++)
        fprintf(stderr, "  [%zu] got %.9g ref %.9g (|diff| %.3g)\n", w[k].i, got[w[k].i],
                ref[w[k].i], fabs((double)got[w[k].i] - ref[w[k].i]));
    return 0;
}

int kvz_test_nmse(const char *what, const float *got, const float *ref, size_t n,
                  double max_nmse)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double nmse = den > 0 ? num / den : num;
    if (nmse <= max_nmse) {
        kvz_test_passed++;
        return 1;
    }
    kvz_test_failed++;
    fprintf(stderr, "FAIL %s: NMSE %.3g > %.3g\n", what, nmse, max_nmse);
    kvz_test_allclose(what, got, ref, n, 0, 0); /* prints the worst elements */
    kvz_test_failed--;
    return 0;
}

int kvz_test_equal_i32(const char *what, const int32_t *got, size_t n_got, const int32_t *ref,
                       size_t n_ref)
{
    size_t n = n_got < n_ref ? n_got : n_ref, first = n;
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i]) {
            first = i;
            break;
        }
    if (first == n && n_got == n_ref) {
        kvz_test_passed++;
        return 1;
    }
    kvz_test_failed++;
    fprintf(stderr, "FAIL %s: lengths %zu vs ref %zu, first difference at %zu\n", what, n_got,
            n_ref, first);
    size_t lo = first > 3 ? first - 3 : 0;
    for (size_t i = lo; i < first + 4 && (i < n_got || i < n_ref); i++)
        fprintf(stderr, "  [%zu] got %s%ld ref %s%ld\n", i, i < n_got ? "" : "-",
                i < n_got ? (long)got[i] : 0L, i < n_ref ? "" : "-", i < n_ref ? (long)ref[i] : 0L);
    return 0;
}

uint64_t kvz_test_checksum_f32(const float *v, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        sum += (uint64_t)bits * (2 * (uint64_t)i + 1);
    }
    return sum;
}

const char *kvz_test_fixture(const char *rel)
{
    static char buf[4096];
    const char *dir = getenv("KVZ_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/fixtures", rel);
    return buf;
}

const char *kvz_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/kvz_test.XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return tmpdir;
}

void kvz_test_skip(const char *reason)
{
    printf("skipped: %s\n", reason);
    exit(77);
}

int kvz_test_done(void)
{
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", tmpdir);
    }
    printf("%d passed, %d failed\n", kvz_test_passed, kvz_test_failed);
    return kvz_test_failed ? 1 : 0;
}
