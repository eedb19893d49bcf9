/* fuzz_oracle_dataset: the oracle dataset reader (kvzip_oracle/oracle_store.h)
 * on an arbitrary .h5 file, as `kvzap train` reads it by default: opened
 * with the integrity check (the seal over the whole file, checked before
 * libhdf5 parses anything), then the info, every sample column, the document table, every layer's
 * hidden states and log-scores in two row blocks, and the ridge sums. Reads
 * are skipped when the attributes ask for more memory than a fuzzer should
 * give (a small file can declare huge, unallocated datasets). */
#include <stdlib.h>

#include "fuzz_common.h"
#include "kvzip_oracle/oracle_store.h"

#define MAX_ROWS (1u << 16)
#define MAX_DIM 4096u
#define MAX_LAYERS 256u
#define MAX_FLOATS (1u << 22)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void read_all(kvz_oracle_file *f)
{
    const kvz_oracle_file_info *in = kvz_oracle_file_get_info(f);
    size_t N = in->n_samples, M = in->n_documents, D = in->d_model, H = in->n_kv_heads;
    kvz_error err = {0};
    if (N <= MAX_ROWS) {
        int32_t *tok = xmalloc(N * sizeof *tok), *doc = xmalloc(N * sizeof *doc),
                *pos = xmalloc(N * sizeof *pos);
        uint8_t *split = xmalloc(N);
        kvz_oracle_file_read_samples(f, 0, N, tok, doc, pos, split, &err);
        kvz_oracle_file_read_samples(f, N, 1, tok, NULL, NULL, NULL, &err); /* out of range */
        free(tok);
        free(doc);
        free(pos);
        free(split);
    }
    if (M <= MAX_ROWS) {
        uint8_t *split = xmalloc(M);
        int64_t *start = xmalloc(M * sizeof *start);
        int32_t *count = xmalloc(M * sizeof *count);
        kvz_oracle_file_read_doc_table(f, split, start, count, &err);
        free(split);
        free(start);
        free(count);
    }
    if (N > MAX_ROWS || D > MAX_DIM || H > MAX_DIM || in->n_layers > MAX_LAYERS ||
        (N / 2 + 1) * (D > H ? D : H) > MAX_FLOATS || D * D > MAX_FLOATS)
        return;
    size_t half = N / 2;
    float *buf = xmalloc((N - half + 1) * (D > H ? D : H) * sizeof *buf);
    for (size_t l = 0; l < in->n_layers; l++) {
        if (in->store_hidden) {
            kvz_oracle_file_read_hidden(f, l, 0, half, buf, &err);
            kvz_oracle_file_read_hidden(f, l, half, N - half, buf, &err);
        }
        kvz_oracle_file_read_scores(f, l, 0, half, buf, &err);
        kvz_oracle_file_read_scores(f, l, half, N - half, buf, &err);
    }
    kvz_oracle_file_read_scores(f, in->n_layers, 0, 1, buf, &err); /* no such layer */
    free(buf);
    double *xtx = xmalloc(D * D * sizeof *xtx), *xty = xmalloc(D * H * sizeof *xty),
           *xs = xmalloc(D * sizeof *xs), *ys = xmalloc(H * sizeof *ys),
           *yq = xmalloc(H * sizeof *yq);
    int64_t count = 0;
    for (size_t l = 0; l < in->n_layers; l++)
        kvz_oracle_file_read_ridge(f, l, xtx, xty, xs, ys, yq, &count, &err);
    free(xtx);
    free(xty);
    free(xs);
    free(ys);
    free(yq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("dataset.h5", path, sizeof path), data, size);
    kvz_oracle_file *f = NULL;
    kvz_error err = {0};
    /* Only the verified open: with --no-verify (train.verify_dataset: false)
     * the file is trusted and reaches libhdf5 1.10.8, whose parser crashes
     * and hangs on damaged files (tests/fuzz/regressions/oracle_dataset/
     * README.md lists the inputs that showed it); docs/oracle-format.md says
     * so. */
    int rc = kvz_oracle_file_open_ex(path, 1, &f, &err);
    if (rc == KVZ_OK)
        read_all(f);
    kvz_oracle_file_close(f);
    return 0;
}
