/* test_train: `kvzap train`'s library driver (trainer/train.h) end to end on
 * a synthetic oracle dataset written with the store (L=3, D=24, Hkv=2;
 * targets = a fixed linear map of x plus a small nonlinearity and noise;
 * 12 train and 4 test documents):
 *   - every file of docs/training-output.md exists; metrics.json parses and
 *     held-out R^2 is high for Linear (and MLP);
 *   - the Linear surrogate from the dataset's float64 ridge sums equals the
 *     ridge refit from the stored hidden states (float32 storage) and a
 *     direct kvz_ridge_solve on the train rows;
 *   - the F32 exports reload (kvz_export_load) and predict the held-out rows
 *     exactly as the trainer's predictions/layer_<l>.csv (within 1e-5);
 *   - train.layers subset, non-finite targets (error vs skip), MLP from a
 *     dataset without hidden states refused, incomplete dataset refused. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/kvz_file.h"
#include "data/corpus.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle_store.h"
#include "kvzip_oracle/oracle_store_internal.h" /* kvz_h5_seal */
#include "trainer/export.h"
#include "trainer/ridge.h"
#include "trainer/train.h"

enum { L = 3, D = 24, H = 2, N_DOCS = 16, PER_DOC = 40 };

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}
static double nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* Target of layer l, head h for x. */
static float target(size_t l, size_t h, const float *x)
{
    double y = -6.0 - (double)l + 0.5 * (double)h;
    for (size_t k = 0; k < D; k++)
        y += 0.3 * sin((double)(k + 3 * h + 7 * l)) * x[k];
    y += 0.4 * tanh(x[0] * x[1]);
    return (float)(y + 0.05 * nrand());
}

/* Writes the dataset; bad_doc >= 0 puts a NaN target into that document. */
static int write_dataset(const char *path, int store_hidden, int bad_doc, int finish)
{
    kvz_oracle_meta m = {0};
    m.model_path = "synthetic";
    m.model_architecture = "llama";
    m.model_config_json = "{}";
    m.n_tokens = PER_DOC;
    m.min_doc_tokens = 0;
    m.max_doc_tokens = 100000;
    m.train_docs_per_subset = 12;
    m.test_docs_per_subset = 4;
    m.hidden_dtype = KVZ_HIDDEN_FLOAT32;
    m.store_hidden = store_hidden;
    m.ridge_stats = 1;
    m.n_layers = L;
    m.d_model = D;
    m.n_kv_heads = H;
    m.n_documents_planned = N_DOCS;
    kvz_oracle_run *run = NULL;
    size_t done = 0;
    kvz_error err = {0};
    int rc = kvz_oracle_run_open(path, &m, 4, 0, 1, &run, &done, &err);
    KVZ_CHECK_OK(rc, err);
    static float hidden[L * PER_DOC * D], scores[L * PER_DOC * H];
    int32_t tok[PER_DOC], pos[PER_DOC];
    for (size_t d = 0; rc == KVZ_OK && d < N_DOCS; d++) {
        for (size_t i = 0; i < PER_DOC; i++) {
            tok[i] = (int32_t)(d * 100 + i);
            pos[i] = (int32_t)(5 + i);
            for (size_t l = 0; l < L; l++) {
                float *x = hidden + (l * PER_DOC + i) * D;
                for (size_t k = 0; k < D; k++)
                    x[k] = (float)(nrand() + 0.2 * (double)k / D);
                for (size_t h = 0; h < H; h++)
                    scores[(l * PER_DOC + i) * H + h] = target(l, h, x);
            }
        }
        if ((int)d == bad_doc)
            scores[(1 * PER_DOC + 3) * H + 1] = NAN;
        char src[32];
        snprintf(src, sizeof src, "syn.jsonl:%zu", d + 1);
        kvz_oracle_doc_record rec = {src, "syn", d < 4 ? KVZ_SPLIT_TEST : KVZ_SPLIT_TRAIN,
                                     100, 220, 5, 5 + PER_DOC, 120, 160};
        kvz_oracle_doc_samples s = {PER_DOC, tok, pos, hidden, scores};
        rc = kvz_oracle_run_append(run, &rec, &s, &err);
        KVZ_CHECK_OK(rc, err);
    }
    if (rc == KVZ_OK && finish) {
        rc = kvz_oracle_run_finish(run, &err);
        KVZ_CHECK_OK(rc, err);
    }
    kvz_oracle_run_close(run);
    return rc;
}

static int train(const char *dataset, const char *out, const char *const *extra, size_t n_extra,
                 kvz_error *err)
{
    const char *sets[16];
    char s_data[512], s_out[512];
    snprintf(s_data, sizeof s_data, "train.dataset=%s", dataset);
    snprintf(s_out, sizeof s_out, "train.output=%s", out);
    size_t n = 0;
    sets[n++] = s_data;
    sets[n++] = s_out;
    sets[n++] = "train.epochs=20";
    sets[n++] = "train.mlp_hidden=16";
    sets[n++] = "train.batch_size=64";
    sets[n++] = "train.mlp_init_output_bias=true";
    for (size_t i = 0; i < n_extra; i++)
        sets[n++] = extra[i];
    kvz_run_config cfg;
    int rc = kvz_config_load_full(NULL, sets, n, &cfg, err);
    if (rc)
        return rc;
    kvz_train_summary sum;
    rc = kvz_train_run(&cfg, NULL, NULL, &sum, err);
    kvz_config_free(&cfg);
    return rc;
}

static char *path2(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Held-out predictions csv (head,oracle,linear,mlp) vs the reloaded export. */
static void check_predictions(const char *out, size_t layer, const char *dataset)
{
    char name[64];
    snprintf(name, sizeof name, "predictions/layer_%zu.csv", layer);
    char *text = NULL;
    size_t len = 0;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_file_read_all(path2(out, name), &text, &len, &err), err);
    kvz_surrogate *lin = NULL, *mlp = NULL;
    KVZ_CHECK_OK(kvz_export_load(path2(out, "linear"), &lin, &err), err);
    KVZ_CHECK_OK(kvz_export_load(path2(out, "mlp"), &mlp, &err), err);
    kvz_oracle_file *f = NULL;
    KVZ_CHECK_OK(kvz_oracle_file_open(dataset, &f, &err), err);
    if (!text || !lin || !mlp || !f)
        goto done;
    /* test rows are the first 4 documents' samples: rows 0 .. 4*PER_DOC-1 */
    size_t n = 4 * PER_DOC;
    float *x = malloc(n * D * sizeof(float)), *pl = malloc(n * H * 4), *pm = malloc(n * H * 4);
    float *csv_l = malloc(n * H * 4), *csv_m = malloc(n * H * 4);
    KVZ_CHECK_OK(kvz_oracle_file_read_hidden(f, layer, 0, n, x, &err), err);
    KVZ_CHECK_OK(kvz_surrogate_predict(lin, layer, x, n, pl, NULL, &err), err);
    KVZ_CHECK_OK(kvz_surrogate_predict(mlp, layer, x, n, pm, NULL, &err), err);
    char *line = strchr(text, '\n');
    size_t got = 0;
    while (line && got < n * H) {
        unsigned h;
        float o, a, b;
        if (sscanf(line + 1, "%u,%g,%g,%g", &h, &o, &a, &b) != 4)
            break;
        csv_l[got] = a;
        csv_m[got] = b;
        got++;
        line = strchr(line + 1, '\n');
    }
    KVZ_CHECK(got == n * H, "predictions rows %zu, expected %zu", got, n * H);
    if (got == n * H) {
        kvz_test_allclose("linear export vs trainer predictions", pl, csv_l, n * H, 1e-5, 1e-6);
        kvz_test_allclose("mlp export vs trainer predictions", pm, csv_m, n * H, 1e-5, 1e-6);
    }
    free(x), free(pl), free(pm), free(csv_l), free(csv_m);
done:
    free(text);
    kvz_surrogate_free(lin);
    kvz_surrogate_free(mlp);
    kvz_oracle_file_close(f);
}

static double layer_r2(const char *out, const char *model, size_t idx)
{
    char *text = NULL;
    size_t len = 0;
    kvz_error err = {0};
    if (kvz_file_read_all(path2(out, "metrics.json"), &text, &len, &err))
        return NAN;
    /* crude: find the idx-th "<model>": {"fit|train..." then "r2": */
    const char *p = text;
    char key[32];
    snprintf(key, sizeof key, "\"%s\": {", model);
    for (size_t i = 0; p && i <= idx; i++)
        p = strstr(i ? p + 1 : p, key);
    double r2 = NAN;
    const char *q = p ? strstr(p, "\"r2\": ") : NULL;
    if (q)
        r2 = atof(q + 6);
    free(text);
    return r2;
}

static void test_full_run(const char *dir)
{
    char *data = strdup(path2(dir, "data.h5")), *out = strdup(path2(dir, "out"));
    kvz_error err = {0};
    if (write_dataset(data, 1, -1, 1) == KVZ_OK) {
        int rc = train(data, out, NULL, 0, &err);
        KVZ_CHECK_OK(rc, err);
        const char *files[] = {"metrics.json", "metrics.csv", "train_log.csv", "compression.csv",
                               "linear/config.json", "linear/model.safetensors",
                               "mlp/config.json", "mlp/model.safetensors",
                               "predictions/layer_0.csv", "predictions/layer_1.csv",
                               "predictions/layer_2.csv"};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++)
            KVZ_CHECK(kvz_path_exists(path2(out, files[i])), "%s exists", files[i]);
        for (size_t l = 0; l < L; l++) {
            double rl = layer_r2(out, "linear", l), rm = layer_r2(out, "mlp", l);
            KVZ_CHECK(rl > 0.9, "layer %zu linear R2 %.4f > 0.9", l, rl);
            KVZ_CHECK(rm > 0.8, "layer %zu mlp R2 %.4f > 0.8", l, rm);
        }
        check_predictions(out, 0, data);
        check_predictions(out, 2, data);
        KVZ_CHECK_OK(kvz_export_check(path2(out, "mlp"), NULL, &err), err);
    }
    free(data);
    free(out);
}

/* Linear from the stored ridge sums == refit from the hidden states. */
static void test_ridge_sources(const char *dir)
{
    char *data = strdup(path2(dir, "r.h5"));
    kvz_error err = {0};
    if (write_dataset(data, 1, -1, 1) != KVZ_OK) {
        free(data);
        return;
    }
    const char *lin[] = {"train.model=linear"};
    KVZ_CHECK_OK(train(data, path2(dir, "r_out"), lin, 1, &err), err);
    kvz_surrogate *from_stats = NULL;
    KVZ_CHECK_OK(kvz_export_load(path2(dir, "r_out/linear"), &from_stats, &err), err);
    /* refit layer 1 from the train rows directly */
    kvz_oracle_file *f = NULL;
    KVZ_CHECK_OK(kvz_oracle_file_open(data, &f, &err), err);
    size_t n = N_DOCS * PER_DOC, n_test = 4 * PER_DOC, n_train = n - n_test;
    float *x = malloc(n * D * 4), *y = malloc(n * H * 4), w[H * D], b[H];
    kvz_ridge_acc *acc = NULL;
    if (f && from_stats && x && y) {
        kvz_oracle_file_read_hidden(f, 1, 0, n, x, &err);
        kvz_oracle_file_read_scores(f, 1, 0, n, y, &err);
        kvz_ridge_acc_create(D, H, &acc, &err);
        kvz_ridge_acc_add(acc, x + n_test * D, y + n_test * H, n_train, &err);
        kvz_ridge_stats st = kvz_ridge_acc_stats(acc);
        KVZ_CHECK_OK(kvz_ridge_solve(&st, 1.0, w, b, &err), err);
        kvz_surrogate_layer p = kvz_surrogate_layer_at(from_stats, 1);
        kvz_test_allclose("ridge W: dataset sums vs refit", p.w1, w, H * D, 1e-6, 1e-5);
        kvz_test_allclose("ridge b: dataset sums vs refit", p.b1, b, H, 1e-6, 1e-5);
    }
    kvz_ridge_acc_free(acc);
    free(x);
    free(y);
    kvz_surrogate_free(from_stats);
    kvz_oracle_file_close(f);
    free(data);
}

static void test_errors(const char *dir)
{
    kvz_error err = {0};
    char *bad = strdup(path2(dir, "nan.h5")), *nohid = strdup(path2(dir, "nohid.h5"));
    char *part = strdup(path2(dir, "partial.h5"));
    if (write_dataset(bad, 1, 6, 1) == KVZ_OK) {
        KVZ_CHECK(train(bad, path2(dir, "o1"), NULL, 0, &err) == KVZ_EFORMAT,
                  "NaN target refused by default");
        KVZ_CHECK(strstr(err.msg, "NaN/Inf") && strstr(err.msg, "non_finite"), "message: %s",
                  err.msg);
        const char *skip[] = {"train.non_finite=skip", "train.layers=1"};
        KVZ_CHECK_OK(train(bad, path2(dir, "o2"), skip, 2, &err), err);
    }
    if (write_dataset(nohid, 0, -1, 1) == KVZ_OK) {
        KVZ_CHECK(train(nohid, path2(dir, "o3"), NULL, 0, &err) == KVZ_EINVAL,
                  "MLP without hidden states refused");
        KVZ_CHECK(strstr(err.msg, "no hidden states") != NULL, "message: %s", err.msg);
        const char *lin[] = {"train.model=linear"};
        KVZ_CHECK_OK(train(nohid, path2(dir, "o4"), lin, 1, &err), err);
        KVZ_CHECK(kvz_path_exists(path2(dir, "o4/linear/model.safetensors")),
                  "linear from ridge sums only");
    }
    write_dataset(part, 1, -1, 0); /* never finished: no final file */
    KVZ_CHECK(train(part, path2(dir, "o5"), NULL, 0, &err) != KVZ_OK, "unfinished dataset refused");
    const char *layers[] = {"train.layers=7"};
    char *data = path2(dir, "data.h5");
    if (kvz_path_exists(data)) {
        KVZ_CHECK(train(data, path2(dir, "o6"), layers, 1, &err) == KVZ_EINVAL, "layer 7 refused");
        KVZ_CHECK(strstr(err.msg, "out of range") != NULL, "message: %s", err.msg);
        KVZ_CHECK(train(data, "/dev/null/out", NULL, 0, &err) == KVZ_EIO, "unwritable output");
    }
    free(bad);
    free(nohid);
    free(part);
}

/* Rewrites an int32 root attribute of an HDF5 file in place. */
static int set_root_attr_i32(const char *path, const char *name, int value)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return -1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &value) >= 0 ? 0 : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Fclose(f);
    return rc == 0 ? kvz_h5_seal(path, NULL) : rc; /* as if written so */
}

/* A dataset of another format version, or one not marked complete, is refused. */
static void test_version_and_completion(const char *dir)
{
    kvz_error err = {0};
    char *v2 = strdup(path2(dir, "v2.h5")), *inc = strdup(path2(dir, "inc.h5"));
    if (write_dataset(v2, 1, -1, 1) == KVZ_OK && set_root_attr_i32(v2, "format_version", 99) == 0) {
        KVZ_CHECK(train(v2, path2(dir, "o7"), NULL, 0, &err) == KVZ_EFORMAT, "version 99 refused");
        KVZ_CHECK(strstr(err.msg, "version 99") != NULL, "message: %s", err.msg);
        KVZ_CHECK(!kvz_path_exists(path2(dir, "o7/metrics.json")), "nothing written");
    }
    if (write_dataset(inc, 1, -1, 1) == KVZ_OK && set_root_attr_i32(inc, "complete", 0) == 0) {
        KVZ_CHECK(train(inc, path2(dir, "o8"), NULL, 0, &err) == KVZ_EFORMAT, "incomplete refused");
        KVZ_CHECK(strstr(err.msg, "incomplete") != NULL, "message: %s", err.msg);
    }
    free(v2);
    free(inc);
}

int main(void)
{
    const char *dir = kvz_test_tmpdir();
    test_full_run(dir);
    test_ridge_sources(dir);
    test_errors(dir);
    test_version_and_completion(dir);
    return kvz_test_done();
}
