/* bench_verify: speed of the oracle dataset's integrity seal (docs/
 * oracle-format.md "Integrity"): seals a file of random bytes, then times
 * kvz_h5_verify from the page cache and, when run as root with "--cold",
 * after dropping the page cache (the disk's speed). Built and run by
 * bench/bench_verify.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvzip_oracle/oracle_store_internal.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_verify FILE BYTES [--cold]\n");
        return 2;
    }
    double gb = strtod(argv[2], NULL) / 1e9;
    kvz_error e = {0};
    double t0 = now();
    if (kvz_h5_seal(argv[1], &e) != KVZ_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double t1 = now();
    printf("seal          %.3f s  %.2f GB/s\n", t1 - t0, gb / (t1 - t0));
    t0 = now();
    int rc = kvz_h5_verify(argv[1], 1, &e);
    t1 = now();
    printf("verify (warm) %.3f s  %.2f GB/s  rc %d\n", t1 - t0, gb / (t1 - t0), rc);
    if (argc > 3 && !strcmp(argv[3], "--cold")) {
        if (system("sync && echo 3 > /proc/sys/vm/drop_caches") != 0) {
            printf("verify (cold) not measured: cannot drop the page cache\n");
            return rc != KVZ_OK;
        }
        t0 = now();
        rc = kvz_h5_verify(argv[1], 1, &e);
        t1 = now();
        printf("verify (cold) %.3f s  %.2f GB/s  rc %d\n", t1 - t0, gb / (t1 - t0), rc);
    }
    return rc != KVZ_OK;
}
