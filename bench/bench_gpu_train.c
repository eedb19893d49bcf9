/* bench_gpu_train: the kvzap side of bench/bench_gpu_train.sh (not a test;
 * CMake builds it with the library as <build>/bench/bench_gpu_train, on the
 * cuda backend of ops/backend.h). Subcommands, each printing one JSON line:
 *   write PATH N D HKV     an oracle dataset (1 layer, float16 hidden states,
 *                          no ridge sums, 1024-sample documents, 5% test
 *                          documents) with y = -7 + x.a + 0.5 tanh(x.b) + noise
 *   mlp PATH OUT HIDDEN BATCH EPOCHS PRECISION
 *                          `kvzap train` of the MLP on the GPU through
 *                          kvz_train_run (model.device=cuda): wall time from
 *                          opening the file to the written outputs, so the
 *                          HDF5 read, upload, training and held-out metrics
 *                          are all inside; samples/s = n_train * epochs / wall
 *                          (and / the MLP's own train_seconds)
 *   ridge N D HKV BLOCKS   the ridge fit on the GPU for N rows: one random
 *                          fp32 block of N/BLOCKS rows in cuda backend memory
 *                          added BLOCKS times to kvz_ridge_acc_create_on(cuda)
 *                          (kvz_ridge_acc_add: kvz_op_ridge_add, float64
 *                          X^T X by cublasDsyrk), then kvz_ridge_acc_solve
 *                          (download of the sums + Cholesky on the host);
 *                          accumulate_seconds ends with a backend sync,
 *                          solve_seconds is the kvz_ridge_acc_solve call */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "data/corpus.h"
#include "kvzip_oracle/oracle_store.h"
#include "ops/backend.h"
#include "trainer/ridge.h"
#include "trainer/train.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}
static float nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static int fail(const char *what, const kvz_error *err)
{
    fprintf(stderr, "bench_gpu_train: %s: %s\n", what, err->msg);
    return 1;
}

enum { PER_DOC = 1024 };

static void make_doc(size_t D, size_t H, const float *a, const float *b, float *x, float *y)
{
    for (size_t i = 0; i < PER_DOC; i++) {
        double z[64] = {0}, u[64] = {0};
        for (size_t k = 0; k < D; k++) {
            float v = nrand();
            x[i * D + k] = v;
            for (size_t h = 0; h < H && h < 64; h++) {
                z[h] += v * a[h * D + k];
                u[h] += v * b[h * D + k];
            }
        }
        for (size_t h = 0; h < H; h++)
            y[i * H + h] = (float)(-7.0 + z[h % 64] + 0.5 * tanh(u[h % 64]) + 0.1 * nrand());
    }
}

static int cmd_write(const char *path, size_t n, size_t D, size_t H)
{
    size_t docs = (n + PER_DOC - 1) / PER_DOC, test_docs = docs / 20 ? docs / 20 : 1;
    kvz_oracle_meta m = {0};
    m.model_path = "synthetic";
    m.model_architecture = "llama";
    m.model_config_json = "{}";
    m.n_tokens = PER_DOC;
    m.max_doc_tokens = 1u << 30;
    m.train_docs_per_subset = docs - test_docs;
    m.test_docs_per_subset = test_docs;
    m.hidden_dtype = KVZ_HIDDEN_FLOAT16;
    m.store_hidden = 1;
    m.n_layers = 1;
    m.d_model = D;
    m.n_kv_heads = H;
    m.n_documents_planned = docs;
    kvz_oracle_run *run = NULL;
    size_t done = 0;
    kvz_error err = {0};
    if (kvz_oracle_run_open(path, &m, 16, 0, 1, &run, &done, &err))
        return fail("open", &err);
    float *a = malloc(H * D * sizeof *a), *b = malloc(H * D * sizeof *b);
    float *x = malloc(PER_DOC * D * sizeof *x), *y = malloc(PER_DOC * H * sizeof *y);
    int32_t *tok = malloc(PER_DOC * sizeof *tok), *pos = malloc(PER_DOC * sizeof *pos);
    for (size_t i = 0; i < H * D; i++) {
        a[i] = nrand() / (float)sqrt((double)D);
        b[i] = 2.0f * nrand() / (float)sqrt((double)D);
    }
    for (size_t i = 0; i < PER_DOC; i++)
        tok[i] = (int32_t)i, pos[i] = (int32_t)(5 + i);
    double t0 = now_s();
    int rc = KVZ_OK;
    for (size_t d = 0; rc == KVZ_OK && d < docs; d++) {
        make_doc(D, H, a, b, x, y);
        kvz_oracle_doc_record rec = {"bench", "bench", d < test_docs ? KVZ_SPLIT_TEST : KVZ_SPLIT_TRAIN,
                                     PER_DOC, PER_DOC * 3, 5, 5 + PER_DOC, PER_DOC + 10,
                                     2 * PER_DOC + 10};
        kvz_oracle_doc_samples s = {PER_DOC, tok, pos, x, y};
        rc = kvz_oracle_run_append(run, &rec, &s, &err);
    }
    rc = rc ? rc : kvz_oracle_run_finish(run, &err);
    kvz_oracle_run_close(run);
    free(a), free(b), free(x), free(y), free(tok), free(pos);
    if (rc)
        return fail("write", &err);
    printf("{\"samples\": %zu, \"documents\": %zu, \"write_seconds\": %.3f}\n", docs * PER_DOC,
           docs, now_s() - t0);
    return 0;
}

static double metric(json_t *root, const char *key)
{
    json_t *l0 = json_array_get(json_object_get(root, "layers"), 0);
    return json_number_value(json_object_get(json_object_get(l0, "mlp"), key));
}

static int cmd_mlp(const char *path, const char *out, const char *hidden, const char *batch,
                   const char *epochs, const char *precision)
{
    char s[7][600];
    snprintf(s[0], sizeof s[0], "train.dataset=%s", path);
    snprintf(s[1], sizeof s[1], "train.output=%s", out);
    snprintf(s[2], sizeof s[2], "train.mlp_hidden=%s", hidden);
    snprintf(s[3], sizeof s[3], "train.batch_size=%s", batch);
    snprintf(s[4], sizeof s[4], "train.epochs=%s", epochs);
    snprintf(s[5], sizeof s[5], "train.gpu_precision=%s", precision);
    snprintf(s[6], sizeof s[6], "model.device=cuda");
    const char *sets[] = {s[0], s[1], s[2], s[3], s[4], s[5], s[6], "train.model=mlp"};
    kvz_run_config cfg;
    kvz_error err = {0};
    if (kvz_config_load_full(NULL, sets, 8, &cfg, &err))
        return fail("config", &err);
    kvz_train_summary sum;
    double t0 = now_s();
    int rc = kvz_train_run(&cfg, NULL, NULL, &sum, &err);
    double wall = now_s() - t0;
    kvz_config_free(&cfg);
    if (rc)
        return fail("train", &err);
    char mpath[700];
    snprintf(mpath, sizeof mpath, "%s/metrics.json", out);
    json_t *root = json_load_file(mpath, 0, NULL);
    double train_s = root ? metric(root, "train_seconds") : NAN;
    double val = root ? metric(root, "final_val_loss") : NAN;
    json_decref(root);
    double samples = (double)sum.n_train * 0.95 * atof(epochs); /* 5% validation rows */
    printf("{\"n_train\": %zu, \"wall_seconds\": %.3f, \"samples_per_s_wall\": %.0f, "
           "\"mlp_train_seconds\": %.3f, \"samples_per_s_train\": %.0f, \"final_val_loss\": %.6g, "
           "\"precision\": \"%s\"}\n",
           sum.n_train, wall, samples / wall, train_s, samples / train_s, val, precision);
    return 0;
}

static int ridge_run(kvz_backend *be, size_t rows, size_t D, size_t H, size_t blocks,
                     double *secs, kvz_error *err)
{
    float *x = malloc(rows * D * sizeof *x), *y = malloc(rows * H * sizeof *y);
    float *w = malloc(H * D * sizeof *w), *b = malloc(H * sizeof *b);
    if (!x || !y || !w || !b) {
        free(x), free(y), free(w), free(b);
        return kvz_fail(err, KVZ_ENOMEM, "out of memory (%zu rows of %zu)", rows, D);
    }
    for (size_t i = 0; i < rows * D; i++)
        x[i] = nrand();
    for (size_t i = 0; i < rows * H; i++)
        y[i] = -7.0f + nrand();
    kvz_buf dx = {0}, dy = {0};
    kvz_ridge_acc *acc = NULL;
    int rc = kvz_backend_alloc(be, KVZ_F32, rows * D, "the ridge block of x", &dx, err);
    rc = rc ? rc : kvz_backend_alloc(be, KVZ_F32, rows * H, "the ridge block of y", &dy, err);
    rc = rc ? rc : kvz_backend_upload(be, dx.data, x, rows * D * sizeof(float), err);
    rc = rc ? rc : kvz_backend_upload(be, dy.data, y, rows * H * sizeof(float), err);
    rc = rc ? rc : kvz_backend_sync(be, err);
    double t0 = now_s();
    rc = rc ? rc : kvz_ridge_acc_create_on(be, D, H, &acc, err);
    for (size_t k = 0; rc == KVZ_OK && k < blocks; k++)
        rc = kvz_ridge_acc_add(acc, dx.data, dy.data, rows, err);
    rc = rc ? rc : kvz_backend_sync(be, err);
    double t1 = now_s();
    rc = rc ? rc : kvz_ridge_acc_solve(acc, 1.0, w, b, err);
    secs[0] = t1 - t0;
    secs[1] = now_s() - t1;
    kvz_ridge_acc_free(acc);
    kvz_backend_free(be, &dx);
    kvz_backend_free(be, &dy);
    free(x), free(y), free(w), free(b);
    return rc;
}

static int cmd_ridge(size_t n, size_t D, size_t H, size_t blocks)
{
    kvz_error err = {0};
    kvz_backend_options opt = {KVZ_BACKEND_CUDA, 0, 0};
    kvz_backend *be = NULL;
    if (kvz_backend_open(&opt, &be, &err))
        return fail("ridge", &err);
    size_t rows = (n + blocks - 1) / blocks;
    double warm[2], secs[2];
    int rc = ridge_run(be, rows < 256 ? rows : 256, D, H, 1, warm, &err) || /* warm-up: handles, BLAS */
             ridge_run(be, rows, D, H, blocks, secs, &err);
    kvz_backend_close(be);
    if (rc)
        return fail("ridge", &err);
    printf("{\"rows\": %zu, \"accumulate_seconds\": %.3f, \"solve_seconds\": %.3f, "
           "\"seconds\": %.3f}\n",
           rows * blocks, secs[0], secs[1], secs[0] + secs[1]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "write"))
        return cmd_write(argv[2], strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10),
                         strtoul(argv[5], NULL, 10));
    if (argc == 8 && !strcmp(argv[1], "mlp"))
        return cmd_mlp(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7]);
    if (argc == 6 && !strcmp(argv[1], "ridge"))
        return cmd_ridge(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10),
                         strtoul(argv[4], NULL, 10), strtoul(argv[5], NULL, 10));
    fprintf(stderr, "usage: bench_gpu_train write PATH N D HKV | mlp PATH OUT HIDDEN BATCH EPOCHS "
                    "PRECISION | ridge N D HKV BLOCKS\n");
    return 2;
}
