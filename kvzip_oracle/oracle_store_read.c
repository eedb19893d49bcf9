/* oracle_store_read: the reading side of oracle_store.h (kvz_oracle_file_*):
 * open checks (HDF5 readable, format name, version, complete == 1, every
 * dataset present with the shape the attributes imply), then row-range reads
 * of samples, the document table, per-layer hidden states (float16 widened to
 * float32 in place) and log-scores, and the ridge sums. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/config.h"
#include "../common/kvz_file.h"
#include "../model/dequant.h"
#include "oracle_store_internal.h"

struct kvz_oracle_file {
    char *path;
    hid_t f;
    kvz_oracle_meta meta;
    char *meta_strs[KVZ_OSTORE_META_N_STRS];
    kvz_oracle_file_info info;
    int version; /* format_version */
};

void kvz_oracle_file_close(kvz_oracle_file *f)
{
    if (!f)
        return;
    if (f->f >= 0)
        H5Fclose(f->f);
    kvz_ostore_meta_free_strs(f->meta_strs);
    free(f->path);
    free(f);
}

static int check_format(kvz_oracle_file *f, kvz_error *err)
{
    char *fmt = NULL;
    int got = kvz_h5_attr_get_str(f->f, "format", &fmt);
    int ok = got == 0 && !strcmp(fmt, KVZ_ORACLE_FORMAT);
    free(fmt);
    if (got == KVZ_ENOMEM)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory reading attribute 'format'", f->path);
    if (!ok)
        return kvz_fail(err, KVZ_EFORMAT, "%s: not a kvzap-oracle dataset", f->path);
    int64_t version = -1, complete = 0;
    if (kvz_h5_attr_get_i64(f->f, "format_version", &version) < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: no format_version attribute", f->path);
    /* version 1 = version 2 without the seal and Fletcher-32 (read unverified only) */
    if (version != KVZ_ORACLE_FORMAT_VERSION && version != 1)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: format version %lld, this kvzap reads versions 1 and %d", f->path,
                        (long long)version, KVZ_ORACLE_FORMAT_VERSION);
    f->version = (int)version;
    if (kvz_h5_attr_get_i64(f->f, "complete", &complete) < 0 || complete != 1)
        return kvz_fail(err, KVZ_EFORMAT, "%s: incomplete (the run did not finish; resume it)",
                        f->path);
    return KVZ_OK;
}

static int load_info(kvz_oracle_file *f, kvz_error *err)
{
    char why[256];
    int64_t n_samples, n_docs;
    int rc = kvz_ostore_meta_get(f->f, &f->meta, f->meta_strs, why, sizeof why);
    if (rc < 0)
        return kvz_fail(err, rc == KVZ_ENOMEM ? KVZ_ENOMEM : KVZ_EFORMAT, "%s: %s", f->path, why);
    if (kvz_h5_attr_get_i64(f->f, "n_samples", &n_samples) < 0 || n_samples < 0 ||
        kvz_h5_attr_get_i64(f->f, "n_documents", &n_docs) < 0 || n_docs < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: n_samples / n_documents missing or invalid",
                        f->path);
    const kvz_oracle_meta *m = &f->meta;
    if (!m->n_layers || !m->d_model || !m->n_kv_heads)
        return kvz_fail(err, KVZ_EFORMAT, "%s: n_layers, d_model and n_kv_heads must be > 0",
                        f->path);
    f->info = (kvz_oracle_file_info){
        .format_version = f->version, .n_layers = m->n_layers,
        .d_model = m->d_model, .n_kv_heads = m->n_kv_heads, .n_samples = (size_t)n_samples,
        .n_documents = (size_t)n_docs, .store_hidden = m->store_hidden,
        .ridge_stats = m->ridge_stats, .hidden_dtype = m->hidden_dtype, .scoring = m->scoring,
        .seed = m->seed, .model_path = m->model_path,
        .model_architecture = m->model_architecture, .model_config_json = m->model_config_json,
        .tokenizer = m->tokenizer, .chat_template = m->chat_template,
        .model_sha256 = m->model_sha256 ? m->model_sha256 : ""};
    return KVZ_OK;
}

/* Dataset `sp` exists with the expected shape and element size. */
static int check_dset(kvz_oracle_file *f, const kvz_ostore_dset *sp, kvz_error *err)
{
    size_t rows = sp->per_doc ? f->info.n_documents : f->info.n_samples, dims[2];
    hid_t d = H5Lexists(f->f, sp->name, H5P_DEFAULT) > 0 ? H5Dopen2(f->f, sp->name, H5P_DEFAULT)
                                                        : -1;
    if (d < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s: dataset /%s is missing", f->path, sp->name);
    int rank = kvz_h5_dset_shape(d, dims);
    hid_t t = H5Dget_type(d), want = kvz_ostore_kind_type(sp->kind);
    int type_ok = t >= 0 && want >= 0 && H5Tget_class(t) == H5Tget_class(want) &&
                  (sp->kind == KVZ_COL_STR || H5Tget_size(t) == H5Tget_size(want));
    if (t >= 0)
        H5Tclose(t);
    if (want >= 0)
        H5Tclose(want);
    H5Dclose(d);
    if (rank != (sp->cols ? 2 : 1) || dims[0] != rows || dims[1] != sp->cols)
        return kvz_fail(err, KVZ_EFORMAT, "%s: dataset /%s has shape [%zu, %zu], expected [%zu, %zu]",
                        f->path, sp->name, dims[0], dims[1], rows, sp->cols);
    if (!type_ok)
        return kvz_fail(err, KVZ_EFORMAT, "%s: dataset /%s has an unexpected element type",
                        f->path, sp->name);
    return KVZ_OK;
}

static int check_layout(kvz_oracle_file *f, kvz_error *err)
{
    size_t n;
    kvz_ostore_dset *specs = kvz_ostore_dsets(&f->meta, &n);
    if (!specs)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", f->path);
    int rc = KVZ_OK;
    for (size_t i = 0; i < n && rc == KVZ_OK; i++)
        rc = check_dset(f, &specs[i], err);
    free(specs);
    const kvz_oracle_meta *m = &f->meta;
    for (size_t l = 0; rc == KVZ_OK && m->ridge_stats && l < m->n_layers; l++)
        if (kvz_ostore_ridge_read_layer(f->f, l, m->d_model, m->n_kv_heads, NULL, NULL, NULL,
                                        NULL, NULL, NULL) < 0)
            rc = kvz_fail(err, KVZ_EFORMAT, "%s: /ridge/%zu is missing or incomplete", f->path,
                          l);
    return rc;
}

int kvz_oracle_file_open(const char *path, kvz_oracle_file **out, kvz_error *err)
{
    return kvz_oracle_file_open_ex(path, 1, out, err);
}

int kvz_oracle_file_open_ex(const char *path, int verify, kvz_oracle_file **out,
                            kvz_error *err)
{
    kvz_h5_quiet();
    *out = NULL;
    if (access(path, R_OK) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path,
                        kvz_path_exists(path) ? "permission denied" : "no such file");
    /* before libhdf5 sees a byte: the seal, the size and (verify) the hash */
    int sealed = kvz_h5_verify(path, verify, err);
    if (sealed != KVZ_OK && (verify || sealed != KVZ_ENOTFOUND))
        return sealed == KVZ_ENOTFOUND ? KVZ_EFORMAT : sealed;
    kvz_oracle_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    f->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int rc = f->f < 0 ? kvz_h5_fail(err, KVZ_EFORMAT, path,
                                    "not a readable HDF5 file (truncated or corrupt?)")
                      : check_format(f, err);
    if (rc == KVZ_OK)
        rc = load_info(f, err);
    if (rc == KVZ_OK)
        rc = check_layout(f, err);
    if (rc != KVZ_OK) {
        kvz_oracle_file_close(f);
        return rc;
    }
    *out = f;
    return KVZ_OK;
}

const kvz_oracle_file_info *kvz_oracle_file_get_info(const kvz_oracle_file *f)
{
    return &f->info;
}

/* ---------- reads ---------- */

static int read_rows(kvz_oracle_file *f, const char *name, hid_t memtype, size_t row0, size_t n,
                     size_t cols, void *out, kvz_error *err)
{
    hid_t d = H5Dopen2(f->f, name, H5P_DEFAULT);
    int rc = d < 0 ? -1 : kvz_h5_dset_read_rows(d, memtype, row0, n, cols, out);
    if (d >= 0)
        H5Dclose(d);
    if (rc < 0)
        return kvz_h5_fail(err, KVZ_EIO, f->path, "cannot read /%s rows %zu..%zu", name, row0,
                           row0 + n);
    return KVZ_OK;
}

static int check_rows(kvz_oracle_file *f, size_t layer, size_t row0, size_t n, kvz_error *err)
{
    if (layer >= f->info.n_layers)
        return kvz_fail(err, KVZ_EINVAL, "%s: layer %zu out of range (%zu layers)", f->path,
                        layer, f->info.n_layers);
    if (row0 > f->info.n_samples || n > f->info.n_samples - row0)
        return kvz_fail(err, KVZ_EINVAL, "%s: rows %zu..%zu out of range (%zu samples)", f->path,
                        row0, row0 + n, f->info.n_samples);
    return KVZ_OK;
}

int kvz_oracle_file_read_hidden(kvz_oracle_file *f, size_t layer, size_t row0, size_t n,
                                float *out, kvz_error *err)
{
    kvz_h5_quiet();
    int rc = check_rows(f, layer, row0, n, err);
    if (rc != KVZ_OK)
        return rc;
    if (!f->info.store_hidden)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: the dataset stores no hidden states", f->path);
    char name[48];
    snprintf(name, sizeof name, "layers/%zu/hidden", layer);
    size_t D = f->info.d_model, count = n * D;
    if (f->info.hidden_dtype != KVZ_HIDDEN_FLOAT16)
        return read_rows(f, name, H5T_NATIVE_FLOAT, row0, n, D, out, err);
    /* float16 into the upper half of out, widened front to back in place. */
    uint16_t *h = (uint16_t *)out + count;
    hid_t half = kvz_h5_half_type();
    rc = half < 0 ? kvz_fail(err, KVZ_ENOMEM, "%s: cannot create the half type", f->path)
                  : read_rows(f, name, half, row0, n, D, h, err);
    if (half >= 0)
        H5Tclose(half);
    for (size_t i = 0; rc == KVZ_OK && i < count; i++)
        out[i] = kvz_f16_to_f32(h[i]);
    return rc;
}

int kvz_oracle_file_read_scores(kvz_oracle_file *f, size_t layer, size_t row0, size_t n,
                                float *out, kvz_error *err)
{
    kvz_h5_quiet();
    int rc = check_rows(f, layer, row0, n, err);
    if (rc != KVZ_OK)
        return rc;
    char name[48];
    snprintf(name, sizeof name, "layers/%zu/log_scores", layer);
    return read_rows(f, name, H5T_NATIVE_FLOAT, row0, n, f->info.n_kv_heads, out, err);
}

int kvz_oracle_file_read_samples(kvz_oracle_file *f, size_t row0, size_t n, int32_t *token_id,
                                 int32_t *doc_index, int32_t *position, uint8_t *split,
                                 kvz_error *err)
{
    kvz_h5_quiet();
    int rc = check_rows(f, 0, row0, n, err);
    if (rc == KVZ_OK && token_id)
        rc = read_rows(f, "samples/token_id", H5T_NATIVE_INT32, row0, n, 0, token_id, err);
    if (rc == KVZ_OK && doc_index)
        rc = read_rows(f, "samples/doc_index", H5T_NATIVE_INT32, row0, n, 0, doc_index, err);
    if (rc == KVZ_OK && position)
        rc = read_rows(f, "samples/position", H5T_NATIVE_INT32, row0, n, 0, position, err);
    if (rc == KVZ_OK && split)
        rc = read_rows(f, "samples/split", H5T_NATIVE_UINT8, row0, n, 0, split, err);
    return rc;
}

int kvz_oracle_file_read_doc_table(kvz_oracle_file *f, uint8_t *split, int64_t *sample_start,
                                   int32_t *n_samples, kvz_error *err)
{
    kvz_h5_quiet();
    size_t M = f->info.n_documents;
    int rc = KVZ_OK;
    if (split)
        rc = read_rows(f, "documents/split", H5T_NATIVE_UINT8, 0, M, 0, split, err);
    if (rc == KVZ_OK && sample_start)
        rc = read_rows(f, "documents/sample_start", H5T_NATIVE_INT64, 0, M, 0, sample_start, err);
    if (rc == KVZ_OK && n_samples)
        rc = read_rows(f, "documents/n_samples", H5T_NATIVE_INT32, 0, M, 0, n_samples, err);
    return rc;
}

int kvz_oracle_file_read_ridge(kvz_oracle_file *f, size_t layer, double *xtx, double *xty,
                               double *x_sum, double *y_sum, double *y_sq_sum, int64_t *count,
                               kvz_error *err)
{
    kvz_h5_quiet();
    if (!f->info.ridge_stats)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: the dataset has no ridge statistics", f->path);
    if (layer >= f->info.n_layers)
        return kvz_fail(err, KVZ_EINVAL, "%s: layer %zu out of range (%zu layers)", f->path,
                        layer, f->info.n_layers);
    if (kvz_ostore_ridge_read_layer(f->f, layer, f->info.d_model, f->info.n_kv_heads, xtx, xty,
                                    x_sum, y_sum, y_sq_sum, count) < 0)
        return kvz_h5_fail(err, KVZ_EIO, f->path, "cannot read /ridge/%zu", layer);
    return KVZ_OK;
}
