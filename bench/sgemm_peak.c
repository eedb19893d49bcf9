/* sgemm_peak: this machine's measured OpenBLAS sgemm rate for the projection
 * shapes of one forward pass over T tokens (row-major x[T, in] W[out, in]^T,
 * as model/forward_run.c calls it). Prints one JSON object.
 * Build: cc -O2 bench/sgemm_peak.c -o sgemm_peak $(pkg-config --cflags --libs openblas)
 * Usage: sgemm_peak T THREADS D Q KV D_FF [REPEAT]   (Q = heads*head_dim, KV = kv_heads*head_dim) */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best-of-repeat seconds of one sgemm y[T, out] = x[T, in] w[out, in]^T. */
static double time_sgemm(int T, int in, int out, int repeat)
{
    float *x = malloc((size_t)T * in * sizeof *x), *w = malloc((size_t)out * in * sizeof *w);
    float *y = malloc((size_t)T * out * sizeof *y);
    for (size_t i = 0; i < (size_t)T * in; i++)
        x[i] = (float)((i * 37) % 101) * 0.01f;
    for (size_t i = 0; i < (size_t)out * in; i++)
        w[i] = (float)((i * 53) % 97) * 0.01f;
    double best = 1e30;
    for (int r = 0; r < repeat + 1; r++) { /* first run warms up */
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
        double s = now() - t0;
        if (r > 0 && s < best)
            best = s;
    }
    free(x), free(w), free(y);
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: sgemm_peak T THREADS D Q KV D_FF [REPEAT]\n");
        return 2;
    }
    int T = atoi(argv[1]), threads = atoi(argv[2]), D = atoi(argv[3]), Q = atoi(argv[4]);
    int KV = atoi(argv[5]), ff = atoi(argv[6]), repeat = argc > 7 ? atoi(argv[7]) : 5;
    openblas_set_num_threads(threads);
    int shapes[4][2] = {{D, Q + 2 * KV}, {Q, D}, {D, 2 * ff}, {ff, D}}; /* {in, out} */
    const char *names[4] = {"qkv", "o", "gate_up", "down"};
    double total_flops = 0, total_s = 0;
    printf("{\"T\": %d, \"threads\": %d", T, threads);
    for (int i = 0; i < 4; i++) {
        double s = time_sgemm(T, shapes[i][0], shapes[i][1], repeat);
        double f = 2.0 * T * shapes[i][0] * shapes[i][1];
        total_flops += f, total_s += s;
        printf(", \"%s_gflops\": %.2f", names[i], f / s * 1e-9);
    }
    printf(", \"layer_mix_gflops\": %.2f}\n", total_flops / total_s * 1e-9);
    return 0;
}
