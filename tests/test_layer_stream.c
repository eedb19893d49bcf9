/* test_layer_stream: the trainer's background layer reader
 * (trainer/layer_stream.h) on a small synthetic store (L=3, D=5, Hkv=2,
 * 6 documents of 9 samples, 2 test documents), block size 7 (not a divisor):
 *   - layers in the requested order (2, 0), every block's train rows then
 *     test rows equal the direct reads routed by the split, in row order,
 *     last_of_layer on the final block only;
 *   - ridge sums read through the stream while the reader runs;
 *   - a NaN log-score: refused with the dataset, layer and sample named
 *     (after the blocks before it), or skipped and counted;
 *   - stopping mid-layer joins the reader (no hang, no leak). */
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvz_test.h"
#include "train_synth_store.h"
#include "trainer/layer_stream.h"

enum { L = 3, D = 5, H = 2, DOCS = 6, PER = 9, TEST_DOCS = 2, N = DOCS * PER, BLOCK = 7 };

static synth_store store_config(long nan_layer, long nan_row)
{
    synth_store c = {L, D, H, DOCS, PER, TEST_DOCS, KVZ_HIDDEN_FLOAT32, 1, 1, nan_layer, nan_row, 7};
    return c;
}

typedef struct expected {
    float x[N * D], y[N * H];
    uint8_t split[N];
} expected;

static void read_direct(kvz_oracle_file *f, size_t layer, expected *e)
{
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_oracle_file_read_hidden(f, layer, 0, N, e->x, &err), err);
    KVZ_CHECK_OK(kvz_oracle_file_read_scores(f, layer, 0, N, e->y, &err), err);
    KVZ_CHECK_OK(kvz_oracle_file_read_samples(f, 0, N, NULL, NULL, NULL, e->split, &err), err);
}

/* Checks one block against the direct reads; *next_train/test count rows. */
static void check_block(const kvz_layer_block *b, const expected *e)
{
    size_t it = 0, is = 0;
    for (size_t r = b->row0; r < b->row0 + b->n_read; r++) {
        int test = e->split[r] != 0;
        const float *bx = test ? b->test_x + is * D : b->train_x + it * D;
        const float *by = test ? b->test_y + is * H : b->train_y + it * H;
        KVZ_CHECK(memcmp(bx, e->x + r * D, D * sizeof(float)) == 0, "layer %zu row %zu: x differs",
                  b->layer, r);
        KVZ_CHECK(memcmp(by, e->y + r * H, H * sizeof(float)) == 0, "layer %zu row %zu: y differs",
                  b->layer, r);
        *(test ? &is : &it) += 1;
    }
    KVZ_CHECK(it == b->n_train && is == b->n_test && b->n_skipped == 0,
              "block at %zu: %zu/%zu train, %zu/%zu test", b->row0, it, b->n_train, is, b->n_test);
}

static kvz_layer_stream *start(kvz_oracle_file *f, const uint8_t *split, const size_t *layers,
                               size_t n_layers, int skip)
{
    kvz_layer_stream_config c = {f, "syn.h5", split, layers, n_layers, 1, skip, BLOCK, 0};
    kvz_layer_stream *s = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_layer_stream_start(&c, &s, &err), err);
    return s;
}

static void test_order_and_routing(const char *path)
{
    kvz_oracle_file *f = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_oracle_file_open(path, &f, &err), err);
    static expected e[L];
    for (size_t l = 0; l < L; l++)
        read_direct(f, l, &e[l]);
    const size_t layers[2] = {2, 0};
    kvz_layer_stream *s = start(f, e[0].split, layers, 2, 0);
    static double xtx[D * D], xty[D * H], xs[D], ys[H], yq[H];
    int64_t count = 0;
    sched_yield(); /* let the reader start while we read the ridge sums */
    KVZ_CHECK_OK(kvz_layer_stream_read_ridge(s, 1, xtx, xty, xs, ys, yq, &count, &err), err);
    KVZ_CHECK(count == (DOCS - TEST_DOCS) * PER, "ridge count %lld", (long long)count);
    for (size_t li = 0; li < 2; li++) {
        size_t rows = 0, blocks = 0;
        for (int last = 0; !last; blocks++) {
            kvz_layer_block b;
            int rc = kvz_layer_stream_next(s, &b, &err);
            KVZ_CHECK_OK(rc, err);
            if (rc)
                break;
            KVZ_CHECK(b.layer == layers[li] && b.layer_index == li && b.row0 == rows,
                      "block %zu: layer %zu row0 %zu", blocks, b.layer, b.row0);
            check_block(&b, &e[layers[li]]);
            rows += b.n_read;
            last = b.last_of_layer;
            KVZ_CHECK(!last || rows == N, "last_of_layer at row %zu", rows);
            kvz_layer_stream_release(s);
        }
        KVZ_CHECK(rows == N && blocks == (N + BLOCK - 1) / BLOCK, "layer %zu: %zu rows, %zu blocks",
                  layers[li], rows, blocks);
    }
    kvz_layer_block b;
    KVZ_CHECK(kvz_layer_stream_next(s, &b, &err) == KVZ_EINVAL, "a block past the end");
    kvz_layer_stream_stop(s);
    kvz_oracle_file_close(f);
}

/* NaN at layer 1, row 30 (block 4 of 7-row blocks). */
static void test_non_finite(const char *path)
{
    kvz_oracle_file *f = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_oracle_file_open(path, &f, &err), err);
    static expected e;
    read_direct(f, 1, &e);
    const size_t layers[2] = {0, 1};
    for (int skip = 0; skip <= 1; skip++) {
        kvz_layer_stream *s = start(f, e.split, layers, 2, skip);
        size_t got = 0, skipped = 0, train = 0, test = 0;
        int rc = KVZ_OK;
        kvz_layer_block b;
        while (rc == KVZ_OK && got < 2 * N) {
            rc = kvz_layer_stream_next(s, &b, &err);
            if (rc)
                break;
            got += b.n_read;
            if (b.layer == 1) {
                skipped += b.n_skipped;
                train += b.n_train;
                test += b.n_test;
            }
            kvz_layer_stream_release(s);
        }
        if (!skip) {
            KVZ_CHECK(rc == KVZ_EFORMAT && got == N + 28, "refused after %zu rows (rc %d)", got, rc);
            KVZ_CHECK(strstr(err.msg, "syn.h5: layer 1 sample 30 has a NaN/Inf log-score") != NULL,
                      "message: %s", err.msg);
        } else {
            KVZ_CHECK(rc == KVZ_OK && skipped == 1 && train + test == N - 1,
                      "skip: %zu skipped, %zu + %zu rows", skipped, train, test);
        }
        kvz_layer_stream_stop(s);
    }
    kvz_oracle_file_close(f);
}

static void test_stop_early(const char *path)
{
    kvz_oracle_file *f = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_oracle_file_open(path, &f, &err), err);
    uint8_t split[N] = {0};
    const size_t layers[3] = {0, 1, 2};
    kvz_layer_stream *s = start(f, split, layers, 3, 0);
    kvz_layer_block b;
    KVZ_CHECK_OK(kvz_layer_stream_next(s, &b, &err), err);
    kvz_layer_stream_stop(s); /* block still held, reader waiting for a slot */
    s = start(f, split, layers, 3, 0);
    kvz_layer_stream_stop(s); /* nothing taken */
    kvz_oracle_file_close(f);
}

int main(void)
{
    char dir[] = "/tmp/kvz_layer_stream_XXXXXX";
    KVZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char ok[256], bad[256];
    snprintf(ok, sizeof ok, "%s/ok.h5", dir);
    snprintf(bad, sizeof bad, "%s/nan.h5", dir);
    synth_store c = store_config(0, -1);
    synth_store cn = store_config(1, 30);
    cn.ridge_stats = 0;
    if (synth_store_write(&c, ok) == KVZ_OK && synth_store_write(&cn, bad) == KVZ_OK) {
        test_order_and_routing(ok);
        test_non_finite(bad);
        test_stop_early(ok);
    }
    remove(ok);
    remove(bad);
    rmdir(dir);
    return kvz_test_done();
}
