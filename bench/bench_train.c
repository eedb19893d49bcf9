/* bench_train: the kvzap side of bench/bench_train.sh (not a test, not part of
 * the CMake build; the script compiles it against libkvzap.a). Reads the raw
 * float32 data of train_reference_bench.py gen (x [n, D] then y [n, Hkv]),
 * then times, best of `repeat`:
 *   - kvz_mlp_train with kvz_mlp_options_default (15 epochs unless told
 *     otherwise, batch 512, AdamW, cosine lr, clip 1.0, 5% validation),
 *     hidden D/8; samples/s = n_train * epochs / seconds;
 *   - ridge: kvz_ridge_acc_create + kvz_ridge_acc_add of all n rows +
 *     kvz_ridge_acc_stats + kvz_ridge_solve (alpha 1).
 * Before timing, one untimed warm-up of each on the first 2048 rows (OpenBLAS
 * thread start, page faults), as the reference side does. Prints one JSON line.
 * Usage: bench_train DATA N D HKV THREADS [EPOCHS [REPEAT]] */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/ops.h"
#include "trainer/mlp.h"
#include "trainer/ridge.h"

typedef struct bench_data {
    size_t n, d, h;
    float *x, *y;
} bench_data;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int load_data(const char *path, bench_data *b)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fprintf(stderr, "bench_train: %s: cannot open\n", path), 1;
    b->x = malloc(b->n * b->d * sizeof(float));
    b->y = malloc(b->n * b->h * sizeof(float));
    int ok = b->x && b->y && fread(b->x, sizeof(float), b->n * b->d, fp) == b->n * b->d &&
             fread(b->y, sizeof(float), b->n * b->h, fp) == b->n * b->h;
    fclose(fp);
    if (!ok)
        fprintf(stderr, "bench_train: %s: short file or out of memory (n=%zu D=%zu Hkv=%zu)\n",
                path, b->n, b->d, b->h);
    return !ok;
}

/* One MLP training run; returns seconds (or -1) and the final validation MSE. */
static double mlp_once(const bench_data *b, size_t epochs, float *params, double *val_mse,
                       size_t *n_train)
{
    kvz_mlp_shape s = {b->d, b->d / 8, b->h};
    kvz_mlp_options o;
    kvz_mlp_options_default(&o);
    o.epochs = epochs;
    kvz_mlp_log log;
    kvz_error err = {0};
    double t0 = now_s();
    int rc = kvz_mlp_train(s, b->x, b->y, b->n, &o, kvz_mlp_view(s, params), &log, &err);
    double sec = now_s() - t0;
    if (rc) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return -1;
    }
    *val_mse = log.val_loss[epochs - 1];
    *n_train = b->n - (size_t)ceil(o.val_fraction * (double)b->n);
    kvz_mlp_log_free(&log);
    return sec;
}

/* MSE of the ridge prediction x w^T + bias over all rows (float64). */
static double ridge_mse(const bench_data *b, const float *w, const float *bias)
{
    double sse = 0;
    for (size_t r = 0; r < b->n; r++)
        for (size_t j = 0; j < b->h; j++) {
            double p = bias[j];
            for (size_t k = 0; k < b->d; k++)
                p += (double)b->x[r * b->d + k] * w[j * b->d + k];
            double e = p - b->y[r * b->h + j];
            sse += e * e;
        }
    return sse / (double)(b->n * b->h);
}

static double ridge_once(const bench_data *b, float *w, float *bias)
{
    kvz_error err = {0};
    kvz_ridge_acc *acc = NULL;
    double t0 = now_s();
    int rc = kvz_ridge_acc_create(b->d, b->h, &acc, &err);
    if (!rc)
        rc = kvz_ridge_acc_add(acc, b->x, b->y, b->n, &err);
    if (!rc) {
        kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
        rc = kvz_ridge_solve(&st, 1.0, w, bias, &err);
    }
    double sec = now_s() - t0;
    kvz_ridge_acc_free(acc);
    if (rc) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return -1;
    }
    return sec;
}

static int run(const bench_data *b, size_t epochs, int repeat, int threads)
{
    kvz_mlp_shape s = {b->d, b->d / 8, b->h};
    float *params = malloc(kvz_mlp_n_params(s) * sizeof(float));
    float *w = malloc(b->d * b->h * sizeof(float)), *bias = malloc(b->h * sizeof(float));
    double mlp_best = INFINITY, ridge_best = INFINITY, val = NAN;
    size_t n_train = 0;
    int rc = !params || !w || !bias;
    if (!rc) { /* untimed warm-up */
        bench_data head = *b;
        head.n = b->n < 2048 ? b->n : 2048;
        rc = mlp_once(&head, 1, params, &val, &n_train) < 0 || ridge_once(&head, w, bias) < 0;
    }
    for (int i = 0; i < repeat && !rc; i++) {
        double sec = mlp_once(b, epochs, params, &val, &n_train);
        double rsec = sec < 0 ? -1 : ridge_once(b, w, bias);
        rc = sec < 0 || rsec < 0;
        mlp_best = sec < mlp_best ? sec : mlp_best;
        ridge_best = rsec < ridge_best ? rsec : ridge_best;
    }
    if (!rc)
        printf("{\"threads\": %d, \"openblas_core\": \"%s\", \"openblas_threads\": %d, "
               "\"mlp\": {\"seconds\": %.6f, \"samples_per_s\": %.1f, \"val_mse\": %.6g, "
               "\"n_train\": %zu, \"epochs\": %zu}, "
               "\"ridge\": {\"seconds\": %.6f, \"train_mse\": %.6g}}\n",
               threads, openblas_get_corename(), openblas_get_num_threads(), mlp_best,
               (double)(n_train * epochs) / mlp_best, val, n_train, epochs, ridge_best,
               ridge_mse(b, w, bias));
    free(params);
    free(w);
    free(bias);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench_train DATA N D HKV THREADS [EPOCHS [REPEAT]]\n");
        return 2;
    }
    bench_data b = {strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10),
                    strtoul(argv[4], NULL, 10), NULL, NULL};
    int threads = atoi(argv[5]);
    size_t epochs = argc > 6 ? strtoul(argv[6], NULL, 10) : 15;
    int repeat = argc > 7 ? atoi(argv[7]) : 1;
    if (!b.n || b.d < 8 || !b.h || !epochs || repeat < 1) {
        fprintf(stderr, "bench_train: bad arguments\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    kvz_ops_set_threads(threads);
    int rc = load_data(argv[1], &b);
    if (!rc)
        rc = run(&b, epochs, repeat, threads);
    free(b.x);
    free(b.y);
    return rc;
}
