/* test_gpu_oracle: the whole oracle job (kvz_oracle_harvest) on the CUDA
 * engine against the CPU engine, through the HDF5 files each writes:
 *   cuda float32 vs cpu: identical documents table, sample positions and
 *     token ids; log-scores |a-b| <= 1e-3; hidden states |a-b| <= 1e-4 |ref|
 *     + 1e-4 rms(layer)
 *   cuda bfloat16 vs cpu: identical samples; per-layer Spearman rank
 *     correlation of the log-scores >= 0.99 (average ranks for ties)
 * Models: the tiny Qwen3 and Llama-3 checkpoints (tests/fixtures/tiny) on a
 * 3-document corpus written here (~60-120 tokens each); on a real GPU also
 * the default model (KVZAP_DEFAULT_MODEL) on 2 documents of the sample
 * corpus. Skips (77) without a CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "ops/backend.h"
#include "kvz_test.h"
#include "kvzip_oracle/oracle.h"
#include "kvzip_oracle/oracle_store.h"

static int emulated(void)
{
    return kvz_backend_emulated();
}

typedef struct dataset {
    size_t n, L, D, Hkv, n_docs;
    int32_t *token_id, *doc, *position, *doc_count;
    int64_t *doc_start;
    float *scores; /* [L, n, Hkv] */
    float *hidden; /* [L, n, D] */
} dataset;

static void dataset_free(dataset *d)
{
    free(d->token_id), free(d->doc), free(d->position), free(d->doc_count);
    free(d->doc_start), free(d->scores), free(d->hidden);
    memset(d, 0, sizeof *d);
}

static int read_layers(kvz_oracle_file *f, dataset *d, kvz_error *err)
{
    int rc = KVZ_OK;
    for (size_t l = 0; rc == KVZ_OK && l < d->L; l++) {
        rc = kvz_oracle_file_read_scores(f, l, 0, d->n, d->scores + l * d->n * d->Hkv, err);
        if (rc == KVZ_OK)
            rc = kvz_oracle_file_read_hidden(f, l, 0, d->n, d->hidden + l * d->n * d->D, err);
    }
    return rc;
}

static int dataset_load(const char *path, dataset *d, kvz_error *err)
{
    memset(d, 0, sizeof *d);
    kvz_oracle_file *f = NULL;
    int rc = kvz_oracle_file_open(path, &f, err);
    if (rc)
        return rc;
    const kvz_oracle_file_info *in = kvz_oracle_file_get_info(f);
    d->n = in->n_samples, d->L = in->n_layers, d->D = in->d_model, d->Hkv = in->n_kv_heads;
    d->n_docs = in->n_documents;
    d->token_id = malloc(d->n * sizeof(int32_t));
    d->doc = malloc(d->n * sizeof(int32_t));
    d->position = malloc(d->n * sizeof(int32_t));
    d->doc_count = malloc((d->n_docs + 1) * sizeof(int32_t));
    d->doc_start = malloc((d->n_docs + 1) * sizeof(int64_t));
    d->scores = malloc(d->L * d->n * d->Hkv * sizeof(float) + 1);
    d->hidden = malloc(d->L * d->n * d->D * sizeof(float) + 1);
    if (!d->token_id || !d->doc || !d->position || !d->doc_count || !d->doc_start ||
        !d->scores || !d->hidden)
        rc = kvz_fail(err, KVZ_ENOMEM, "out of memory");
    rc = rc ? rc
            : kvz_oracle_file_read_samples(f, 0, d->n, d->token_id, d->doc, d->position, NULL,
                                           err);
    rc = rc ? rc : kvz_oracle_file_read_doc_table(f, NULL, d->doc_start, d->doc_count, err);
    rc = rc ? rc : read_layers(f, d, err);
    kvz_oracle_file_close(f);
    return rc;
}

typedef struct job {
    const char *model, *corpus, *out, *device, *precision;
    size_t n_tokens, min_tokens, max_tokens, train_docs;
} job;

static int set(kvz_run_config *c, const char *key, const char *value, kvz_error *err)
{
    return kvz_config_set(c, key, value, err);
}

static int harvest(const job *j, kvz_oracle_summary *sum, kvz_error *err)
{
    kvz_run_config cfg;
    char n_tok[32], mn[32], mx[32], tr[32];
    snprintf(n_tok, sizeof n_tok, "%zu", j->n_tokens);
    snprintf(mn, sizeof mn, "%zu", j->min_tokens);
    snprintf(mx, sizeof mx, "%zu", j->max_tokens);
    snprintf(tr, sizeof tr, "%zu", j->train_docs);
    int rc = kvz_config_init(&cfg, err);
    if (rc)
        return rc;
    const char *kv[][2] = {{"model.path", j->model},           {"oracle.corpus", j->corpus},
                           {"oracle.output", j->out},          {"oracle.n_tokens", n_tok},
                           {"oracle.min_doc_tokens", mn},      {"oracle.max_doc_tokens", mx},
                           {"oracle.train_docs_per_subset", tr}, {"oracle.test_docs_per_subset", "1"},
                           {"oracle.hidden_dtype", "float32"}, {"model.device", j->device},
                           {"model.precision", j->precision}};
    for (size_t i = 0; rc == KVZ_OK && i < sizeof kv / sizeof kv[0]; i++)
        rc = set(&cfg, kv[i][0], kv[i][1], err);
    rc = rc ? rc : kvz_config_validate(&cfg, err);
    kvz_oracle_options opt = {0};
    opt.overwrite = 1;
    rc = rc ? rc : kvz_oracle_harvest(&cfg, &opt, sum, err);
    kvz_config_free(&cfg);
    return rc;
}

/* ---------- comparisons ---------- */

static void check_same_samples(const char *what, const dataset *a, const dataset *b)
{
    KVZ_CHECK(a->n == b->n && a->n_docs == b->n_docs && a->L == b->L && a->D == b->D &&
                  a->Hkv == b->Hkv,
              "%s: shapes differ: %zu/%zu samples, %zu/%zu documents", what, a->n, b->n,
              a->n_docs, b->n_docs);
    if (a->n != b->n || a->n_docs != b->n_docs)
        return;
    char name[256];
    snprintf(name, sizeof name, "%s token ids", what);
    kvz_test_equal_i32(name, a->token_id, a->n, b->token_id, b->n);
    snprintf(name, sizeof name, "%s positions", what);
    kvz_test_equal_i32(name, a->position, a->n, b->position, b->n);
    snprintf(name, sizeof name, "%s sample documents", what);
    kvz_test_equal_i32(name, a->doc, a->n, b->doc, b->n);
    snprintf(name, sizeof name, "%s documents table counts", what);
    kvz_test_equal_i32(name, a->doc_count, a->n_docs, b->doc_count, b->n_docs);
    int starts = 1;
    for (size_t i = 0; i < a->n_docs; i++)
        starts &= a->doc_start[i] == b->doc_start[i];
    KVZ_CHECK(starts, "%s: documents table sample starts differ", what);
}

static size_t count_nan(const float *v, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += isnan(v[i]) != 0;
    return k;
}

static void check_fp32(const char *what, const dataset *cpu, const dataset *gpu)
{
    size_t nS = gpu->L * gpu->n * gpu->Hkv, nH = gpu->L * gpu->n * gpu->D;
    KVZ_CHECK(count_nan(gpu->scores, nS) == 0 && count_nan(gpu->hidden, nH) == 0,
              "%s: NaN in the cuda results", what);
    char name[256];
    snprintf(name, sizeof name, "%s log-scores (cuda fp32 vs cpu)", what);
    kvz_test_allclose(name, gpu->scores, cpu->scores, nS, 1e-3, 0.0);
    for (size_t l = 0; l < gpu->L; l++) {
        const float *ref = cpu->hidden + l * gpu->n * gpu->D;
        double ss = 0.0;
        for (size_t i = 0; i < gpu->n * gpu->D; i++)
            ss += (double)ref[i] * ref[i];
        double rms = sqrt(ss / (double)(gpu->n * gpu->D + 1));
        snprintf(name, sizeof name, "%s hidden layer %zu (cuda fp32 vs cpu)", what, l);
        kvz_test_allclose(name, gpu->hidden + l * gpu->n * gpu->D, ref, gpu->n * gpu->D,
                          1e-4 * rms, 1e-4);
    }
}

typedef struct ranked {
    double v;
    size_t i;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return x < y ? -1 : x > y;
}

/* Average ranks (ties share the mean of their positions); -inf sorts first. */
static void average_ranks(const float *v, size_t n, double *rank, ranked *tmp)
{
    for (size_t i = 0; i < n; i++)
        tmp[i].v = v[i], tmp[i].i = i;
    qsort(tmp, n, sizeof *tmp, cmp_ranked);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && tmp[b].v == tmp[a].v)
            b++;
        for (size_t k = a; k < b; k++)
            rank[tmp[k].i] = 0.5 * (double)(a + b - 1);
        a = b;
    }
}

static double spearman(const float *x, const float *y, size_t n)
{
    double *rx = malloc(n * sizeof *rx), *ry = malloc(n * sizeof *ry);
    ranked *tmp = malloc(n * sizeof *tmp);
    double r = -2.0;
    if (rx && ry && tmp && n > 1) {
        average_ranks(x, n, rx, tmp);
        average_ranks(y, n, ry, tmp);
        double mean = 0.5 * (double)(n - 1), sxy = 0, sxx = 0, syy = 0;
        for (size_t i = 0; i < n; i++) {
            sxy += (rx[i] - mean) * (ry[i] - mean);
            sxx += (rx[i] - mean) * (rx[i] - mean);
            syy += (ry[i] - mean) * (ry[i] - mean);
        }
        r = sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : (sxx == syy ? 1.0 : 0.0);
    }
    free(rx), free(ry), free(tmp);
    return r;
}

static void check_bf16(const char *what, const dataset *cpu, const dataset *gpu)
{
    size_t per_layer = gpu->n * gpu->Hkv, worst_l = 0;
    KVZ_CHECK(count_nan(gpu->scores, gpu->L * per_layer) == 0, "%s: NaN in bf16 scores", what);
    double worst = 2.0;
    for (size_t l = 0; l < gpu->L; l++) {
        double r = spearman(gpu->scores + l * per_layer, cpu->scores + l * per_layer, per_layer);
        if (r < worst)
            worst = r, worst_l = l;
    }
    printf("%s: bf16 vs cpu log-scores: worst per-layer Spearman %.5f (layer %zu of %zu)\n",
           what, worst, worst_l, gpu->L);
    KVZ_CHECK(worst >= 0.99, "%s: bf16 log-scores rank correlation %.5f < 0.99 at layer %zu",
              what, worst, worst_l);
}

/* ---------- the runs ---------- */

/* KVZ_TEST_GPU_AS_CPU=1 runs the "cuda" jobs on the CPU: a check of this
 * test's own harness and comparisons on machines without a GPU. */
static const char *gpu_device = "cuda";

static void run_model(const char *what, job base)
{
    char out_cpu[4096], out_f32[4096], out_bf16[4096];
    snprintf(out_cpu, sizeof out_cpu, "%s/%s-cpu.h5", kvz_test_tmpdir(), what);
    snprintf(out_f32, sizeof out_f32, "%s/%s-f32.h5", kvz_test_tmpdir(), what);
    snprintf(out_bf16, sizeof out_bf16, "%s/%s-bf16.h5", kvz_test_tmpdir(), what);
    job jc = base, jf = base, jb = base;
    jc.out = out_cpu, jc.device = "cpu", jc.precision = "float32";
    jf.out = out_f32, jf.device = gpu_device, jf.precision = "float32";
    jb.out = out_bf16, jb.device = gpu_device, jb.precision = "bfloat16";
    kvz_error err = {0};
    kvz_oracle_summary sum;
    dataset cpu = {0}, f32 = {0}, bf16 = {0};
    int rc = harvest(&jc, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    rc = rc ? rc : harvest(&jf, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK)
        printf("%s: cuda engine: %s, %s\n", what, sum.device, sum.precision);
    KVZ_CHECK(rc || strcmp(gpu_device, "cuda") || (!strncmp(sum.device, "cuda:", 5) && !strcmp(sum.precision, "float32")),
              "%s: the run reports device '%s', precision '%s'", what, sum.device, sum.precision);
    rc = rc ? rc : harvest(&jb, &sum, &err);
    KVZ_CHECK_OK(rc, err);
    rc = rc ? rc : dataset_load(out_cpu, &cpu, &err);
    rc = rc ? rc : dataset_load(out_f32, &f32, &err);
    rc = rc ? rc : dataset_load(out_bf16, &bf16, &err);
    KVZ_CHECK_OK(rc, err);
    if (rc == KVZ_OK) {
        KVZ_CHECK(cpu.n > 0 && cpu.n_docs >= 2, "%s: %zu samples in %zu documents", what, cpu.n,
                  cpu.n_docs);
        check_same_samples(what, &cpu, &f32);
        check_same_samples(what, &cpu, &bf16);
        if (cpu.n == f32.n && cpu.L == f32.L)
            check_fp32(what, &cpu, &f32);
        if (cpu.n == bf16.n && cpu.L == bf16.L)
            check_bf16(what, &cpu, &bf16);
    }
    dataset_free(&cpu), dataset_free(&f32), dataset_free(&bf16);
}

static const char *const SENTENCES[] = {
    "The river carried small boats past the old mill every morning.",
    "A quiet library kept maps of coastlines that no longer exist.",
    "Engineers measured the bridge twice before the storm arrived.",
    "Her notebook listed seventeen birds seen near the northern lake.",
    "Bread from the corner bakery sold out before nine o'clock.",
    "The committee voted to repaint the station in pale green.",
};

/* docs documents of about `sentences` sentences each, one JSON line each. */
static void write_corpus(const char *path, size_t docs, size_t sentences)
{
    FILE *f = fopen(path, "w");
    KVZ_CHECK(f != NULL, "cannot write %s", path);
    if (!f)
        return;
    for (size_t d = 0; d < docs; d++) {
        fprintf(f, "{\"text\": \"Document %zu.", d);
        for (size_t s = 0; s < sentences; s++)
            fprintf(f, " %s", SENTENCES[(d * 5 + s * 7) % 6]);
        fprintf(f, "\"}\n");
    }
    fclose(f);
}

int main(void)
{
    kvz_error err = {0};
    const char *as_cpu = getenv("KVZ_TEST_GPU_AS_CPU");
    if (as_cpu && !strcmp(as_cpu, "1"))
        gpu_device = "cpu";
    else if (kvz_backend_device_count(KVZ_BACKEND_CUDA, &err) <= 0)
        kvz_test_skip("no CUDA device");
    int emu = emulated();
    printf("device: %s\n", emu ? "emulated" : "real");
    char corpus[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus.jsonl", kvz_test_tmpdir());
    write_corpus(corpus, 3, emu ? 2 : 3); /* ~60-120 tokens each (tiny tokenizers: ~35 a sentence) */
    char tiny_q[4096], tiny_l[4096];
    snprintf(tiny_q, sizeof tiny_q, "%s", kvz_test_fixture("tiny/qwen3_f16"));
    snprintf(tiny_l, sizeof tiny_l, "%s", kvz_test_fixture("tiny/llama3_f32"));
    job tiny = {NULL, corpus, NULL, NULL, NULL, emu ? 12 : 48, 0, 100000, 2};
    tiny.model = tiny_q;
    run_model("tiny-qwen3", tiny);
    tiny.model = tiny_l;
    run_model("tiny-llama3", tiny);
    const char *dflt = getenv("KVZAP_DEFAULT_MODEL"), *src = getenv("KVZ_SOURCE_DIR");
    if (!emu && dflt && src) {
        char sample[4096];
        snprintf(sample, sizeof sample, "%s/data/sample/corpus/prose.jsonl", src);
        job big = {dflt, sample, NULL, NULL, NULL, 128, 750, 1250, 1};
        run_model("smollm2", big);
    } else {
        printf("default model: skipped (%s)\n", emu ? "emulated device" : "no KVZAP_DEFAULT_MODEL");
    }
    return kvz_test_done();
}
