/* test_oracle_store: the oracle HDF5 store (kvzip_oracle/oracle_store.h) on
 * synthetic runs (L=3, D=8, Hkv=2, 7 documents of 3..12 samples, test and
 * train splits): write with docs_per_shard=2, read everything back (exact in
 * float32 mode, float16 rounding in float16 mode), ridge sums vs a naive
 * float64 computation, crash + resume (mid-shard, a shard left under its
 * .tmp name, stray files) giving the same contents and the same bytes as an
 * uninterrupted run, resume/overwrite refusals, incomplete and truncated
 * files, a full disk (RLIMIT_FSIZE in a child), h5dump -H, float16 rounding. */
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/kvz_file.h"
#include "common/kvz_utf8.h"
#include "data/corpus.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle_store.h"
#include "kvzip_oracle/oracle_store_internal.h" /* kvz_h5_seal, KVZ_H5_USERBLOCK */
#include "model/dequant.h"

uint16_t kvz_f32_to_f16_rne(float f); /* oracle_store_h5.c (internal) */

enum { L = 3, D = 8, H = 2, N_DOCS = 7, MAX_N = 12 };

/* ---------- synthetic data ---------- */

static uint32_t rng_state;
static float urand(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f;
}

typedef struct doc_data {
    kvz_oracle_doc_record rec;
    kvz_oracle_doc_samples s;
    char source[64], subset[32];
    int32_t token_id[MAX_N], position[MAX_N];
    float hidden[L * MAX_N * D], scores[L * MAX_N * H];
} doc_data;

static void make_doc(size_t i, doc_data *d)
{
    memset(d, 0, sizeof *d);
    rng_state = 1234u + (uint32_t)i * 7919u;
    size_t n = 3 + (i * 7) % 10; /* 3, 10, 7, 4, 11, 8, 5 */
    snprintf(d->source, sizeof d->source, "corpus/docs.jsonl:%zu", i + 1);
    snprintf(d->subset, sizeof d->subset, i % 2 ? "code" : "prose \xc3\xa9");
    d->rec = (kvz_oracle_doc_record){d->source, d->subset, i < 2 || i == 5 ? KVZ_SPLIT_TEST
                                                                          : KVZ_SPLIT_TRAIN,
                                     100 + i, 230 + 2 * i, 10, 110 + i, 120 + i, 220 + 2 * i};
    for (size_t k = 0; k < n; k++) {
        d->token_id[k] = (int32_t)(1000 * i + 17 * k);
        d->position[k] = (int32_t)(10 + 3 * k + i % 2);
    }
    for (size_t k = 0; k < L * n * D; k++)
        d->hidden[k] = (urand() - 0.5f) * 40.0f;
    d->hidden[0] = 1.0f + 1.0f / 2048.0f; /* a float16 tie */
    d->hidden[1] = 3e-6f;                 /* a float16 subnormal */
    for (size_t k = 0; k < L * n * H; k++)
        d->scores[k] = -8.0f * urand();
    d->s = (kvz_oracle_doc_samples){n, d->token_id, d->position, d->hidden, d->scores};
}

static kvz_oracle_meta make_meta(int dtype)
{
    return (kvz_oracle_meta){.model_path = "/models/tiny.gguf", .model_architecture = "llama",
                             .model_config_json = "{\"hidden_size\": 8, \"name\": \"t\xc3\xafny\"}",
                             .tokenizer = NULL, .chat_template = "{{ messages }}",
                             .corpus = "corpus/docs.jsonl", .text_field = "text",
                             .subset_field = "subset", .scoring = KVZ_SCORING_KVZIP_PLUS,
                             .chunk_size = 2048, .n_tokens = 16, .min_doc_tokens = 750,
                             .max_doc_tokens = 1250, .train_docs_per_subset = 500,
                             .test_docs_per_subset = 5, .seed = 42, .hidden_dtype = dtype,
                             .store_hidden = 1, .ridge_stats = 1, .n_layers = L, .d_model = D,
                             .n_kv_heads = H, .n_documents_planned = N_DOCS};
}

static char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", kvz_test_tmpdir(), name);
    return buf[k];
}

/* Appends documents [from, to); returns the first failing status. */
static int append_docs(kvz_oracle_run *r, size_t from, size_t to, kvz_error *err)
{
    doc_data *d = malloc(sizeof *d);
    int rc = KVZ_OK;
    for (size_t i = from; i < to && rc == KVZ_OK; i++) {
        make_doc(i, d);
        rc = kvz_oracle_run_append(r, &d->rec, &d->s, err);
    }
    free(d);
    return rc;
}

static int write_run(const char *out, int dtype, size_t dps, kvz_error *err)
{
    kvz_oracle_meta m = make_meta(dtype);
    kvz_oracle_run *r;
    size_t done;
    int rc = kvz_oracle_run_open(out, &m, dps, 0, 1, &r, &done, err);
    if (rc != KVZ_OK)
        return rc;
    rc = append_docs(r, 0, N_DOCS, err);
    if (rc == KVZ_OK)
        rc = kvz_oracle_run_finish(r, err);
    kvz_oracle_run_close(r);
    return rc;
}

/* ---------- checks ---------- */

static float f16_round(float x)
{
    return kvz_f16_to_f32(kvz_f32_to_f16_rne(x));
}

static void check_ridge(kvz_oracle_file *f)
{
    double xtx[D * D], xty[D * H], xs[D], ys[H], yq[H];
    doc_data *d = malloc(sizeof *d);
    for (size_t l = 0; l < L; l++) {
        double rx[D * D] = {0}, rxy[D * H] = {0}, rxs[D] = {0}, rys[H] = {0}, ryq[H] = {0};
        int64_t count = 0, rcount = 0;
        for (size_t i = 0; i < N_DOCS; i++) {
            make_doc(i, d);
            if (d->rec.split != KVZ_SPLIT_TRAIN)
                continue;
            size_t n = d->s.n;
            rcount += (int64_t)n;
            for (size_t k = 0; k < n; k++) {
                const float *x = d->hidden + (l * n + k) * D, *y = d->scores + (l * n + k) * H;
                for (size_t a = 0; a < D; a++) {
                    rxs[a] += x[a];
                    for (size_t b = 0; b < D; b++)
                        rx[a * D + b] += (double)x[a] * x[b];
                    for (size_t h = 0; h < H; h++)
                        rxy[a * H + h] += (double)x[a] * y[h];
                }
                for (size_t h = 0; h < H; h++)
                    rys[h] += y[h], ryq[h] += (double)y[h] * y[h];
            }
        }
        kvz_error err = {0};
        KVZ_CHECK_OK(kvz_oracle_file_read_ridge(f, l, xtx, xty, xs, ys, yq, &count, &err), err);
        KVZ_CHECK(count == rcount, "layer %zu count %lld vs %lld", l, (long long)count,
                  (long long)rcount);
        double worst = 0;
        for (size_t k = 0; k < D * D; k++)
            worst = fmax(worst, fabs(xtx[k] - rx[k]) / (1 + fabs(rx[k])));
        for (size_t k = 0; k < D * H; k++)
            worst = fmax(worst, fabs(xty[k] - rxy[k]) / (1 + fabs(rxy[k])));
        for (size_t k = 0; k < D; k++)
            worst = fmax(worst, fabs(xs[k] - rxs[k]) / (1 + fabs(rxs[k])));
        for (size_t k = 0; k < H; k++)
            worst = fmax(worst, fmax(fabs(ys[k] - rys[k]), fabs(yq[k] - ryq[k])) /
                                    (1 + fabs(ryq[k])));
        KVZ_CHECK(worst < 1e-12, "layer %zu ridge rel err %g", l, worst);
        for (size_t a = 0; a < D; a++)
            for (size_t b = 0; b < a; b++)
                KVZ_CHECK(xtx[a * D + b] == xtx[b * D + a], "xtx symmetric");
    }
    free(d);
}

/* Every sample, document row and layer row of f equals the synthetic data. */
static void check_contents(const char *path, int dtype)
{
    kvz_error err = {0};
    kvz_oracle_file *f;
    int rc = kvz_oracle_file_open(path, &f, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc)
        return;
    const kvz_oracle_file_info *in = kvz_oracle_file_get_info(f);
    KVZ_CHECK(in->n_layers == L && in->d_model == D && in->n_kv_heads == H &&
                  in->n_documents == N_DOCS && in->hidden_dtype == dtype && in->seed == 42 &&
                  in->store_hidden && in->ridge_stats &&
                  in->format_version == KVZ_ORACLE_FORMAT_VERSION,
              "info");
    KVZ_CHECK(!strcmp(in->model_architecture, "llama") && !strcmp(in->tokenizer, "") &&
                  !strcmp(in->chat_template, "{{ messages }}") &&
                  strstr(in->model_config_json, "t\xc3\xafny"),
              "info strings");
    uint8_t dsplit[N_DOCS];
    int64_t start[N_DOCS];
    int32_t nsamp[N_DOCS];
    KVZ_CHECK_OK(kvz_oracle_file_read_doc_table(f, dsplit, start, nsamp, &err), err);
    doc_data *d = malloc(sizeof *d);
    size_t row = 0;
    float got[L * MAX_N * D];
    for (size_t i = 0; i < N_DOCS; i++) {
        make_doc(i, d);
        size_t n = d->s.n;
        KVZ_CHECK(dsplit[i] == d->rec.split && start[i] == (int64_t)row && nsamp[i] == (int32_t)n,
                  "doc %zu table", i);
        int32_t tok[MAX_N], di[MAX_N], pos[MAX_N];
        uint8_t sp[MAX_N];
        KVZ_CHECK_OK(kvz_oracle_file_read_samples(f, row, n, tok, di, pos, sp, &err), err);
        kvz_test_equal_i32("token_id", tok, n, d->token_id, n);
        kvz_test_equal_i32("position", pos, n, d->position, n);
        for (size_t k = 0; k < n; k++)
            KVZ_CHECK(di[k] == (int32_t)i && sp[k] == d->rec.split, "doc %zu sample %zu", i, k);
        for (size_t l = 0; l < L; l++) {
            float ref[MAX_N * D];
            const float *x = d->hidden + l * n * D;
            for (size_t k = 0; k < n * D; k++)
                ref[k] = dtype == KVZ_HIDDEN_FLOAT16 ? f16_round(x[k]) : x[k];
            KVZ_CHECK_OK(kvz_oracle_file_read_hidden(f, l, row, n, got, &err), err);
            kvz_test_allclose("hidden", got, ref, n * D, 0, 0);
            if (dtype == KVZ_HIDDEN_FLOAT16) /* and within float16 precision of the input */
                kvz_test_allclose("hidden vs f32", got, x, n * D, 6e-8, 1.0 / 2048);
            KVZ_CHECK_OK(kvz_oracle_file_read_scores(f, l, row, n, got, &err), err);
            kvz_test_allclose("scores", got, d->scores + l * n * H, n * H, 0, 0);
        }
        row += n;
    }
    KVZ_CHECK(in->n_samples == row, "n_samples %zu vs %zu", in->n_samples, row);
    KVZ_CHECK(kvz_oracle_file_read_scores(f, 0, row - 1, 2, got, &err) == KVZ_EINVAL,
              "out of range read");
    KVZ_CHECK(kvz_oracle_file_read_hidden(f, L, 0, 1, got, &err) == KVZ_EINVAL, "bad layer");
    check_ridge(f);
    free(d);
    kvz_oracle_file_close(f);
}

static int files_equal(const char *a, const char *b)
{
    char *x, *y;
    size_t nx, ny;
    kvz_error err;
    if (kvz_file_read_all(a, &x, &nx, &err) || kvz_file_read_all(b, &y, &ny, &err))
        return 0;
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static char *parts_of(const char *out)
{
    static char buf[600];
    snprintf(buf, sizeof buf, "%s.parts", out);
    return buf;
}

/* ---------- tests ---------- */

static void test_f16_rounding(void)
{
    size_t bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float v = kvz_f16_to_f32((uint16_t)h);
        if (isnan(v)) {
            bad += !isnan(kvz_f16_to_f32(kvz_f32_to_f16_rne(v)));
            continue;
        }
        bad += kvz_f32_to_f16_rne(v) != h;
        if ((h & 0x7fff) < 0x7bff) { /* midpoint to the next: ties to even */
            double mid = ((double)v + kvz_f16_to_f32((uint16_t)(h + 1))) / 2;
            uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            bad += kvz_f32_to_f16_rne((float)mid) != want;
        }
    }
    KVZ_CHECK(bad == 0, "%zu float16 round-trip / tie mismatches", bad);
    KVZ_CHECK(kvz_f32_to_f16_rne(65519.0f) == 0x7bff && kvz_f32_to_f16_rne(65520.0f) == 0x7c00 &&
                  kvz_f32_to_f16_rne(-INFINITY) == 0xfc00 &&
                  kvz_f32_to_f16_rne(ldexpf(1, -25)) == 0 &&
                  kvz_f32_to_f16_rne(ldexpf(3, -26)) == 1 &&
                  kvz_f32_to_f16_rne(-0.0f) == 0x8000 && kvz_f32_to_f16_rne(1e-10f) == 0,
              "float16 edge values");
}

static void test_write_read(int dtype, const char *name)
{
    kvz_error err = {0};
    const char *out = tmp_path(name);
    KVZ_CHECK_OK(write_run(out, dtype, 2, &err), err);
    KVZ_CHECK(!exists(parts_of(out)), "parts directory removed");
    check_contents(out, dtype);
}

/* Interrupted twice (mid-shard), with a committed shard left as .tmp and
 * stray files, then resumed with another docs_per_shard: same bytes. */
static void test_resume(const char *ref)
{
    kvz_error err = {0};
    const char *out = tmp_path("resumed.h5");
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    kvz_oracle_run *r;
    size_t done = 99;
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 1, 0, &r, &done, &err), err);
    KVZ_CHECK(done == 0, "fresh resume starts at 0");
    KVZ_CHECK_OK(append_docs(r, 0, 3, &err), err);
    KVZ_CHECK(kvz_oracle_run_n_documents(r) == 3, "3 documents appended");
    kvz_oracle_run_close(r); /* crash: doc 2 was in an unfinished shard */

    KVZ_CHECK(kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "pass --resume"),
              "resume=0 refused: %s", err.msg);
    kvz_oracle_meta other = m;
    other.n_tokens = 15;
    KVZ_CHECK(kvz_oracle_run_open(out, &other, 2, 1, 0, &r, &done, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "oracle.n_tokens was 16, now 15") &&
                  strstr(err.msg, ".parts: cannot resume"),
              "meta mismatch: %s", err.msg);
    other = m;
    other.hidden_dtype = KVZ_HIDDEN_FLOAT32;
    KVZ_CHECK(kvz_oracle_run_open(out, &other, 2, 1, 0, &r, &done, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "oracle.hidden_dtype"),
              "dtype mismatch: %s", err.msg);

    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 1, 0, &r, &done, &err), err);
    KVZ_CHECK(done == 2, "resume after doc 2: %zu", done);
    KVZ_CHECK_OK(append_docs(r, done, 5, &err), err);
    kvz_oracle_run_close(r); /* crash again: doc 4 unfinished */

    /* Shard 1 as if the run stopped between ridge.h5 and its rename; strays. */
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/shard-000001.h5", parts_of(out));
    snprintf(b, sizeof b, "%s/shard-000001.h5.tmp", parts_of(out));
    KVZ_CHECK(rename(a, b) == 0, "rename shard 1 to .tmp");
    snprintf(a, sizeof a, "%s/shard-000007.h5", parts_of(out));
    FILE *fp = fopen(a, "w");
    fputs("junk", fp);
    fclose(fp);
    snprintf(b, sizeof b, "%s/final.h5.tmp", parts_of(out));
    fp = fopen(b, "w");
    fputs("junk", fp);
    fclose(fp);

    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 3, 1, 0, &r, &done, &err), err);
    KVZ_CHECK(done == 4, "resume after doc 4: %zu", done);
    KVZ_CHECK(!exists(a) && !exists(b), "stray files removed");
    KVZ_CHECK_OK(append_docs(r, done, N_DOCS, &err), err);
    KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
    kvz_oracle_run_close(r);
    check_contents(out, KVZ_HIDDEN_FLOAT16);
    KVZ_CHECK(files_equal(out, ref), "resumed file is byte-identical to the uninterrupted one");
}

static void test_refusals(const char *ref)
{
    kvz_error err = {0};
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    kvz_oracle_run *r;
    size_t done;
    KVZ_CHECK(kvz_oracle_run_open(ref, &m, 2, 0, 0, &r, &done, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "already exists"),
              "existing output refused: %s", err.msg);
    KVZ_CHECK(kvz_oracle_run_open("/nonexistent-kvz-dir/x.h5", &m, 2, 0, 0, &r, &done, &err) ==
                      KVZ_EIO &&
                  strstr(err.msg, "/nonexistent-kvz-dir"),
              "missing dir: %s", err.msg);
    char under_file[700];
    snprintf(under_file, sizeof under_file, "%s/sub/x.h5", ref);
    KVZ_CHECK(kvz_oracle_run_open(under_file, &m, 2, 0, 0, &r, &done, &err) == KVZ_EIO,
              "dir is a file: %s", err.msg);
    if (geteuid() != 0) {
        const char *ro = tmp_path("readonly");
        mkdir(ro, 0555);
        char p[600];
        snprintf(p, sizeof p, "%s/x.h5", ro);
        KVZ_CHECK(kvz_oracle_run_open(p, &m, 2, 0, 0, &r, &done, &err) == KVZ_EIO &&
                      strstr(err.msg, "not writable"),
                  "read-only dir: %s", err.msg);
    }
    m.n_layers = 0;
    KVZ_CHECK(kvz_oracle_run_open(tmp_path("z.h5"), &m, 2, 0, 0, &r, &done, &err) == KVZ_EINVAL,
              "L = 0 refused");
    /* Bad documents are refused without harming the run. */
    m = make_meta(KVZ_HIDDEN_FLOAT16);
    const char *out = tmp_path("bad_docs.h5");
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err), err);
    doc_data *d = malloc(sizeof *d);
    make_doc(0, d);
    d->hidden[5] = NAN;
    KVZ_CHECK(kvz_oracle_run_append(r, &d->rec, &d->s, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "non-finite"),
              "NaN hidden: %s", err.msg);
    make_doc(0, d);
    d->hidden[D + 1] = 70000.0f;
    KVZ_CHECK(kvz_oracle_run_append(r, &d->rec, &d->s, &err) == KVZ_EINVAL &&
                  strstr(err.msg, "overflows float16"),
              "f16 overflow: %s", err.msg);
    make_doc(0, d);
    d->position[2] = d->position[1];
    KVZ_CHECK(kvz_oracle_run_append(r, &d->rec, &d->s, &err) == KVZ_EINVAL, "positions");
    free(d);
    kvz_oracle_run_close(r);
}

/* A shard, a file with complete = 0, a truncated file, a non-HDF5 file. */
static void test_bad_files(const char *ref)
{
    kvz_error err = {0};
    kvz_oracle_file *f;
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    kvz_oracle_run *r;
    size_t done;
    const char *out = tmp_path("unfinished.h5");
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err), err);
    KVZ_CHECK_OK(append_docs(r, 0, 2, &err), err);
    kvz_oracle_run_close(r);
    char shard[700];
    snprintf(shard, sizeof shard, "%s/shard-000000.h5", parts_of(out));
    KVZ_CHECK(kvz_oracle_file_open(shard, &f, &err) == KVZ_EFORMAT &&
                  strstr(err.msg, "incomplete (the run did not finish; resume it)"),
              "shard: %s", err.msg);

    char *bytes;
    size_t n;
    KVZ_CHECK_OK(kvz_file_read_all(ref, &bytes, &n, &err), err);
    const char *inc = tmp_path("incomplete.h5");
    FILE *fp = fopen(inc, "wb");
    fwrite(bytes, 1, n, fp);
    fclose(fp);
    hid_t h = H5Fopen(inc, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(h, "complete", H5P_DEFAULT);
    int32_t zero = 0;
    H5Awrite(a, H5T_NATIVE_INT32, &zero);
    H5Aclose(a);
    H5Fclose(h);
    /* edited in place: the seal no longer matches */
    KVZ_CHECK(kvz_oracle_file_open(inc, &f, &err) == KVZ_EFORMAT && strstr(err.msg, "corrupt"),
              "edited file: %s", err.msg);
    /* re-sealed (as a writer that stopped before complete = 1 would have) */
    KVZ_CHECK_OK(kvz_h5_seal(inc, &err), err);
    KVZ_CHECK(kvz_oracle_file_open(inc, &f, &err) == KVZ_EFORMAT && strstr(err.msg, "incomplete"),
              "complete=0: %s", err.msg);

    const char *cut = tmp_path("truncated.h5");
    fp = fopen(cut, "wb");
    fwrite(bytes, 1, n / 2, fp);
    fclose(fp);
    KVZ_CHECK(kvz_oracle_file_open(cut, &f, &err) == KVZ_EFORMAT && strstr(err.msg, cut) &&
                  strstr(err.msg, "truncated"),
              "truncated: %s", err.msg);
    KVZ_CHECK(kvz_oracle_file_open_ex(cut, 0, &f, &err) == KVZ_EFORMAT &&
                  strstr(err.msg, "truncated"),
              "truncated, unverified open still checks the size: %s", err.msg);
    fp = fopen(cut, "wb");
    fputs("not hdf5 at all", fp);
    fclose(fp);
    KVZ_CHECK(kvz_oracle_file_open(cut, &f, &err) == KVZ_EFORMAT, "junk: %s", err.msg);
    KVZ_CHECK(kvz_oracle_file_open(tmp_path("missing.h5"), &f, &err) == KVZ_EIO, "missing");
    free(bytes);
}

/* Child: write with a file-size limit; exits 0 when the failure was reported
 * as KVZ_EIO naming the file (`where`) and the OS reason, and no output
 * appeared. */
/* Writes bytes[0..n) to path with byte `at` XORed by `mask` (when at < n). */
static void write_flipped(const char *path, const char *bytes, size_t n, size_t at, int mask)
{
    FILE *fp = fopen(path, "wb");
    for (size_t i = 0; i < n; i++)
        fputc(i == at ? (unsigned char)bytes[i] ^ mask : (unsigned char)bytes[i], fp);
    fclose(fp);
}

/* Issue 14.4: damaged datasets are refused before libhdf5 parses them.
 * (1) One flipped byte anywhere after the seal block (64 places spread over
 * the file, every one of them) and a flipped byte inside the seal: refused
 * as corrupt, naming the file. (2) Unverified open (--no-verify) of a file
 * with a flipped byte inside a data chunk: the open may succeed but reading
 * that chunk fails (Fletcher-32) instead of returning wrong numbers.
 * (3) A file without a seal: refused with what to do; readable unverified.
 * (4) Resume with a damaged committed shard: refused, naming the shard. */
static void test_integrity(const char *ref)
{
    kvz_error err = {0};
    kvz_oracle_file *f;
    char *bytes;
    size_t n;
    KVZ_CHECK_OK(kvz_file_read_all(ref, &bytes, &n, &err), err);
    const char *bad = tmp_path("flipped.h5");
    int refused = 0, tries = 0;
    for (int k = 0; k < 64; k++) {
        size_t at = KVZ_H5_USERBLOCK + (size_t)((double)(n - KVZ_H5_USERBLOCK - 1) * k / 63.0);
        write_flipped(bad, bytes, n, at, 0x10);
        int rc = kvz_oracle_file_open(bad, &f, &err);
        tries++;
        if (rc == KVZ_EFORMAT && strstr(err.msg, "corrupt") && strstr(err.msg, bad))
            refused++;
        else
            fprintf(stderr, "  flipped byte %zu of %zu: rc %d (%s)\n", at, n, rc, err.msg);
        if (rc == KVZ_OK)
            kvz_oracle_file_close(f);
    }
    KVZ_CHECK(refused == tries, "every flipped byte refused as corrupt (%d of %d)", refused,
              tries);
    write_flipped(bad, bytes, n, 20, 0x01); /* inside the recorded hash */
    KVZ_CHECK(kvz_oracle_file_open(bad, &f, &err) == KVZ_EFORMAT && strstr(err.msg, "corrupt"),
              "damaged seal: %s", err.msg);

    /* (2) a flipped byte in the first chunk of /layers/0/log_scores */
    hid_t h = H5Fopen(ref, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = h >= 0 ? H5Dopen2(h, "/layers/0/log_scores", H5P_DEFAULT) : -1;
    hsize_t coord[2] = {0, 0}, chunk_size = 0;
    haddr_t addr = 0;
    unsigned mask = 0;
    int have = d >= 0 && H5Dget_chunk_info_by_coord(d, coord, &mask, &addr, &chunk_size) >= 0;
    if (d >= 0)
        H5Dclose(d);
    if (h >= 0)
        H5Fclose(h);
    KVZ_CHECK(have && chunk_size > 8, "chunk 0 of /layers/0/log_scores located");
    if (have && chunk_size > 8) {
        /* chunk addresses are relative to the HDF5 base address (after the block) */
        write_flipped(bad, bytes, n, KVZ_H5_USERBLOCK + addr + chunk_size / 2, 0x40);
        KVZ_CHECK(kvz_oracle_file_open(bad, &f, &err) == KVZ_EFORMAT, "verified: refused");
        int rc = kvz_oracle_file_open_ex(bad, 0, &f, &err);
        KVZ_CHECK_OK(rc, err);
        if (rc == KVZ_OK) {
            float row[H];
            rc = kvz_oracle_file_read_scores(f, 0, 0, 1, row, &err);
            KVZ_CHECK(rc == KVZ_EIO && strstr(err.msg, bad),
                      "unverified read of a damaged chunk fails (Fletcher-32): rc %d %s", rc,
                      err.msg);
            kvz_oracle_file_close(f);
        }
    }

    /* (3) the seal removed: no seal, clear message; unverified open reads it */
    write_flipped(bad, bytes, n, n, 0);
    FILE *fp = fopen(bad, "r+b");
    static const char zeros[32] = {0};
    fwrite(zeros, 1, sizeof zeros, fp);
    fclose(fp);
    KVZ_CHECK(kvz_oracle_file_open(bad, &f, &err) == KVZ_EFORMAT &&
                  strstr(err.msg, "no integrity seal") && strstr(err.msg, "--no-verify"),
              "unsealed: %s", err.msg);
    int rc = kvz_oracle_file_open_ex(bad, 0, &f, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        kvz_oracle_file_close(f);
    free(bytes);

    /* (4) resume with a damaged committed shard */
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    kvz_oracle_run *r;
    size_t done;
    const char *out = tmp_path("damaged_shard.h5");
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err), err);
    KVZ_CHECK_OK(append_docs(r, 0, 3, &err), err); /* shard 0 committed, shard 1 open */
    kvz_oracle_run_close(r);
    char shard[700];
    snprintf(shard, sizeof shard, "%s/shard-000000.h5", parts_of(out));
    char *sb;
    size_t sn;
    KVZ_CHECK_OK(kvz_file_read_all(shard, &sb, &sn, &err), err);
    if (sb) {
        write_flipped(shard, sb, sn, sn / 2, 0x08);
        rc = kvz_oracle_run_open(out, &m, 2, 1, 0, &r, &done, &err);
        KVZ_CHECK(rc == KVZ_EFORMAT && strstr(err.msg, "shard-000000.h5") &&
                      strstr(err.msg, "corrupt"),
                  "resume with a damaged shard: rc %d %s", rc, err.msg);
        if (rc == KVZ_OK)
            kvz_oracle_run_close(r);
        free(sb);
    }
}

/* Issue 14.8: corpus file names are bytes. A source that is not UTF-8 is
 * stored as valid UTF-8 (what h5py's .asstr() needs), escaped reversibly:
 * kvz_utf8_unescape_bytes gives the raw bytes back. Also the escape on
 * random byte strings: always valid UTF-8, always round-trips. */
static void test_non_utf8_sources(void)
{
    uint32_t st = 99;
    for (int trial = 0; trial < 2000; trial++) {
        unsigned char raw[24];
        size_t n = (size_t)(trial % 24);
        for (size_t i = 0; i < n; i++) {
            st = st * 1103515245u + 12345u;
            raw[i] = trial % 3 ? (unsigned char)(st >> 16)
                               : (unsigned char)"ab\\\xc3\xa9\xff\x80"[(st >> 16) % 7];
        }
        char *esc = kvz_utf8_escape_bytes((const char *)raw, n);
        size_t back_n = 0;
        char *back = esc ? kvz_utf8_unescape_bytes(esc, &back_n) : NULL;
        int ok = esc && kvz_utf8_validate(esc, strlen(esc), NULL, NULL) == KVZ_OK && back &&
                 back_n == n && !memcmp(back, raw, n);
        if (!ok)
            KVZ_CHECK(0, "escape round trip, trial %d", trial);
        free(esc);
        free(back);
    }
    kvz_error err = {0};
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    const char *out = tmp_path("names.h5");
    kvz_oracle_run *r;
    size_t done;
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 4, 0, 0, &r, &done, &err), err);
    doc_data *d = malloc(sizeof *d);
    const char *raw_source = "corpus/caf\xe9 \\ file.jsonl:1"; /* Latin-1 e-acute, a backslash */
    for (size_t i = 0; i < N_DOCS; i++) {
        make_doc(i, d);
        if (i == 0)
            d->rec.source = raw_source;
        KVZ_CHECK_OK(kvz_oracle_run_append(r, &d->rec, &d->s, &err), err);
    }
    free(d);
    KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
    kvz_oracle_run_close(r);
    hid_t h = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = h >= 0 ? H5Dopen2(h, "/documents/source", H5P_DEFAULT) : -1;
    hid_t t = kvz_h5_str_type();
    char *rows[N_DOCS] = {0};
    int read = ds >= 0 && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0;
    KVZ_CHECK(read, "read /documents/source");
    if (read) {
        KVZ_CHECK(kvz_utf8_validate(rows[0], strlen(rows[0]), NULL, NULL) == KVZ_OK &&
                      !strcmp(rows[0], "corpus/caf\\xE9 \\\\ file.jsonl:1"),
                  "stored as escaped UTF-8: '%s'", rows[0]);
        size_t bn = 0;
        char *back = kvz_utf8_unescape_bytes(rows[0], &bn);
        KVZ_CHECK(back && !strcmp(back, raw_source), "raw bytes recoverable");
        free(back);
        KVZ_CHECK(!strcmp(rows[1], "corpus/docs.jsonl:2"), "UTF-8 names unchanged: %s", rows[1]);
        for (size_t i = 0; i < N_DOCS; i++)
            H5free_memory(rows[i]);
    }
    H5Tclose(t);
    if (ds >= 0)
        H5Dclose(ds);
    if (h >= 0)
        H5Fclose(h);
}

static void full_disk_child(const char *out, size_t dps, rlim_t limit, const char *where)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {limit, limit};
    setrlimit(RLIMIT_FSIZE, &rl);
    kvz_error err = {0};
    int rc = write_run(out, KVZ_HIDDEN_FLOAT16, dps, &err);
    int ok = rc == KVZ_EIO && strstr(err.msg, out) && strstr(err.msg, where) &&
             strstr(err.msg, "File too large") && !exists(out);
    fprintf(stderr, "full disk (docs_per_shard %zu): rc %d: %s\n", dps, rc, err.msg);
    _exit(ok ? 0 : 1);
}

/* Largest file in the parts directory of an unfinished docs_per_shard=2 run. */
static off_t largest_part(void)
{
    const char *out = tmp_path("probe.h5");
    kvz_error err = {0};
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    kvz_oracle_run *r;
    size_t done;
    if (kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err) != KVZ_OK)
        return 0;
    append_docs(r, 0, N_DOCS, &err);
    kvz_oracle_run_close(r);
    off_t big = 0;
    const char *names[] = {"ridge.h5", "shard-000000.h5", "shard-000001.h5", "shard-000002.h5"};
    for (size_t i = 0; i < 4; i++) {
        char p[700];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", parts_of(out), names[i]);
        if (stat(p, &st) == 0 && st.st_size > big)
            big = st.st_size;
    }
    return big;
}

static void test_full_disk(const char *ref)
{
    struct stat st;
    stat(ref, &st);
    off_t part = largest_part();
    /* docs_per_shard 2: every part fits, the merged file does not; 100: the
     * one shard does not fit. */
    KVZ_CHECK(part > 0 && part < st.st_size, "parts (%lld bytes) smaller than the output "
              "(%lld)", (long long)part, (long long)st.st_size);
    size_t dps_cases[2] = {2, 100};
    rlim_t limits[2] = {(rlim_t)(part + st.st_size) / 2, (rlim_t)part + 1};
    for (int c = 0; c < 2; c++) {
        const char *out = tmp_path(c ? "full_shard.h5" : "full_merge.h5");
        pid_t pid = fork();
        if (pid == 0)
            full_disk_child(out, dps_cases[c], limits[c], c ? "shard-000000.h5.tmp" : "merged");
        int status = 0;
        waitpid(pid, &status, 0);
        KVZ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "full disk case %d", c);
        KVZ_CHECK(!exists(out) && exists(parts_of(out)), "no output, parts kept");
        kvz_error err = {0};
        kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
        kvz_oracle_run *r;
        size_t done;
        KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 1, 0, &r, &done, &err), err);
        KVZ_CHECK_OK(append_docs(r, done, N_DOCS, &err), err);
        KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
        kvz_oracle_run_close(r);
        KVZ_CHECK(files_equal(out, ref), "after the full disk: same bytes (case %d, resumed "
                  "at %zu)", c, done);
    }
}

/* store_hidden = 0, ridge_stats = 0 (hidden may be NULL), then an empty run. */
/* The parts directory cannot be removed once the dataset is in place (a
 * foreign file in it): finish succeeds, names it in the warning, and the
 * dataset is complete and readable. */
static void test_parts_left_behind(void)
{
    kvz_error err = {0};
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT16);
    const char *out = tmp_path("leftover.h5");
    kvz_oracle_run *r;
    size_t done;
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 4, 0, 0, &r, &done, &err), err);
    KVZ_CHECK_OK(append_docs(r, 0, N_DOCS, &err), err);
    char stray[4200];
    snprintf(stray, sizeof stray, "%s/notes.txt", parts_of(out));
    FILE *fp = fopen(stray, "w");
    KVZ_CHECK(fp != NULL, "create %s", stray);
    if (fp) {
        fputs("not kvzap's", fp);
        fclose(fp);
    }
    KVZ_CHECK(!strcmp(kvz_oracle_run_warning(r), ""), "no warning before finish");
    KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
    const char *w = kvz_oracle_run_warning(r);
    KVZ_CHECK(strstr(w, "is complete") && strstr(w, parts_of(out)) && strstr(w, "by hand"),
              "warning names the left-over directory: '%s'", w);
    kvz_oracle_run_close(r);
    check_contents(out, KVZ_HIDDEN_FLOAT16);
    KVZ_CHECK(exists(stray), "the foreign file is left alone");
    unlink(stray);
    rmdir(parts_of(out));
}

static void test_minimal_runs(void)
{
    kvz_error err = {0};
    kvz_oracle_meta m = make_meta(KVZ_HIDDEN_FLOAT32);
    m.store_hidden = m.ridge_stats = 0;
    const char *out = tmp_path("scores_only.h5");
    kvz_oracle_run *r;
    size_t done;
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 3, 0, 0, &r, &done, &err), err);
    doc_data *d = malloc(sizeof *d);
    for (size_t i = 0; i < 4; i++) {
        make_doc(i, d);
        d->s.hidden = NULL;
        KVZ_CHECK_OK(kvz_oracle_run_append(r, &d->rec, &d->s, &err), err);
    }
    KVZ_CHECK(kvz_oracle_run_n_documents(r) == 4 && kvz_oracle_run_n_samples(r) == 3 + 10 + 7 + 4,
              "counts");
    KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
    kvz_oracle_run_close(r);
    kvz_oracle_file *f;
    KVZ_CHECK_OK(kvz_oracle_file_open(out, &f, &err), err);
    if (f) {
        float x[MAX_N * D];
        KVZ_CHECK(kvz_oracle_file_read_hidden(f, 0, 0, 1, x, &err) == KVZ_ENOTFOUND, "no hidden");
        KVZ_CHECK(kvz_oracle_file_read_ridge(f, 0, NULL, NULL, NULL, NULL, NULL, NULL, &err) ==
                      KVZ_ENOTFOUND,
                  "no ridge");
        make_doc(3, d);
        KVZ_CHECK_OK(kvz_oracle_file_read_scores(f, 2, 20, 4, x, &err), err);
        kvz_test_allclose("scores of doc 3", x, d->scores + 2 * 4 * H, 4 * H, 0, 0);
        kvz_oracle_file_close(f);
    }
    free(d);

    m = make_meta(KVZ_HIDDEN_FLOAT16);
    out = tmp_path("empty.h5");
    KVZ_CHECK_OK(kvz_oracle_run_open(out, &m, 2, 0, 0, &r, &done, &err), err);
    KVZ_CHECK_OK(kvz_oracle_run_finish(r, &err), err);
    kvz_oracle_run_close(r);
    KVZ_CHECK_OK(kvz_oracle_file_open(out, &f, &err), err);
    if (f) {
        KVZ_CHECK(kvz_oracle_file_get_info(f)->n_samples == 0, "empty dataset");
        int64_t count = -1;
        KVZ_CHECK_OK(kvz_oracle_file_read_ridge(f, 1, NULL, NULL, NULL, NULL, NULL, &count, &err),
                     err);
        KVZ_CHECK(count == 0, "empty ridge count");
        kvz_oracle_file_close(f);
    }
}

static void test_h5dump(const char *ref)
{
    if (system("command -v h5dump >/dev/null 2>&1") != 0) {
        fprintf(stderr, "h5dump not installed: skipping its check\n");
        return;
    }
    char cmd[1200];
    const char *txt = tmp_path("h5dump.txt");
    snprintf(cmd, sizeof cmd, "h5dump -H '%s' > '%s' 2>&1", ref, txt);
    KVZ_CHECK(system(cmd) == 0, "h5dump -H ran");
    char *s;
    size_t n;
    kvz_error err;
    if (kvz_file_read_all(txt, &s, &n, &err) != KVZ_OK)
        return;
    int ok = strstr(s, "GROUP \"samples\"") && strstr(s, "GROUP \"documents\"") &&
             strstr(s, "GROUP \"layers\"") && strstr(s, "GROUP \"ridge\"") &&
             strstr(s, "DATASET \"hidden\"") && strstr(s, "ATTRIBUTE \"complete\"");
    KVZ_CHECK(ok, "h5dump shows the layout; it printed:\n%.3000s", s);
    free(s);
}

int main(void)
{
    test_f16_rounding();
    test_write_read(KVZ_HIDDEN_FLOAT32, "f32.h5");
    test_write_read(KVZ_HIDDEN_FLOAT16, "f16.h5");
    const char *ref = tmp_path("f16.h5");
    char refcopy[600];
    snprintf(refcopy, sizeof refcopy, "%s", ref);
    const char *again = tmp_path("f16_again.h5");
    kvz_error err = {0};
    KVZ_CHECK_OK(write_run(again, KVZ_HIDDEN_FLOAT16, 5, &err), err);
    KVZ_CHECK(files_equal(again, refcopy), "two runs (docs_per_shard 2 and 5): same bytes");
    test_resume(refcopy);
    test_refusals(refcopy);
    test_bad_files(refcopy);
    test_integrity(refcopy);
    test_non_utf8_sources();
    test_full_disk(refcopy);
    test_parts_left_behind();
    test_minimal_runs();
    test_h5dump(refcopy);
    const char *keep = getenv("KVZ_ORACLE_STORE_KEEP"); /* manual h5py checks */
    if (keep) {
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", refcopy, keep);
        KVZ_CHECK(system(cmd) == 0, "copy to %s", keep);
    }
    return kvz_test_done();
}
