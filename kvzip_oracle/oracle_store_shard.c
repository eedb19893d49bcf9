/* oracle_store_shard: one shard file of "<output>.parts/": extendable
 * datasets (the final layout) appended one document at a time under
 * "shard-NNNNNN.h5.tmp", closed and fsynced, then renamed to
 * "shard-NNNNNN.h5". Root attributes: format, format_version, complete = 0,
 * first_doc, first_sample, and at close n_docs, n_samples. Hidden states are
 * rounded to float16 here when the run stores float16. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/kvz_utf8.h"
#include "oracle_store_internal.h"

/* Shard chunks: about 256 KiB but at most 1024 rows, so small shards of
 * narrow datasets (log-scores, sample columns) do not allocate whole
 * 256 KiB chunks for a few hundred rows; and at most the rows a shard can
 * hold (docs_per_shard * n_tokens) when that is known. */
#define SHARD_CHUNK_BYTES (256u << 10)
#define SHARD_CHUNK_MAX_ROWS 1024u

char *kvz_ostore_shard_path(const char *parts, size_t k, int tmp)
{
    char name[64];
    snprintf(name, sizeof name, "shard-%06zu.h5%s", k, tmp ? ".tmp" : "");
    return kvz_path_join(parts, name);
}

static size_t kind_bytes(int kind)
{
    switch (kind) {
    case KVZ_COL_STR:
        return sizeof(char *);
    case KVZ_COL_U8:
        return 1;
    case KVZ_COL_F16:
        return 2;
    case KVZ_COL_I64:
        return 8;
    default:
        return 4;
    }
}

static int create_dsets(kvz_ostore_shard *s, size_t rows_hint)
{
    for (size_t i = 0; i < s->n_dsets; i++) {
        const kvz_ostore_dset *sp = &s->specs[i];
        size_t row_bytes = kind_bytes(sp->kind) * (sp->cols ? sp->cols : 1);
        size_t chunk = sp->per_doc ? 64 : kvz_h5_chunk_rows(row_bytes, SHARD_CHUNK_BYTES);
        if (chunk > SHARD_CHUNK_MAX_ROWS)
            chunk = SHARD_CHUNK_MAX_ROWS;
        if (!sp->per_doc && rows_hint && chunk > rows_hint)
            chunk = rows_hint;
        hid_t t = kvz_ostore_kind_type(sp->kind);
        if (t < 0)
            return -1;
        s->dsets[i] = kvz_h5_dset_create(s->file, sp->name, t, 0, sp->cols, 1, chunk);
        H5Tclose(t);
        if (s->dsets[i] < 0)
            return -1;
    }
    return 0;
}

static void shard_free(kvz_ostore_shard *s)
{
    for (size_t i = 0; s->dsets && i < s->n_dsets; i++)
        if (s->dsets[i] >= 0)
            H5Dclose(s->dsets[i]);
    if (s->file >= 0)
        H5Fclose(s->file);
    free(s->dsets);
    free(s->specs);
    free(s->path);
    free(s->tmp_path);
    free(s->buf);
    memset(s, 0, sizeof *s);
    s->file = -1;
}

int kvz_ostore_shard_begin(kvz_ostore_shard *s, const char *parts, size_t k,
                           const kvz_oracle_meta *m, size_t first_doc, size_t first_sample,
                           size_t rows_hint, kvz_error *err)
{
    memset(s, 0, sizeof *s);
    s->file = -1;
    s->meta = m;
    s->first_doc = first_doc;
    s->first_sample = first_sample;
    s->path = kvz_ostore_shard_path(parts, k, 0);
    s->tmp_path = kvz_ostore_shard_path(parts, k, 1);
    s->specs = kvz_ostore_dsets(m, &s->n_dsets);
    s->dsets = s->specs ? malloc(s->n_dsets * sizeof *s->dsets) : NULL;
    if (!s->path || !s->tmp_path || !s->dsets) {
        shard_free(s);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
    }
    for (size_t i = 0; i < s->n_dsets; i++)
        s->dsets[i] = -1;
    s->file = kvz_h5_create_file(s->tmp_path);
    if (s->file < 0 || kvz_ostore_put_format(s->file, 0) < 0 ||
        kvz_h5_attr_put_str(s->file, "kind", "kvzap-oracle-shard") < 0 ||
        kvz_h5_attr_put_i64(s->file, "first_doc", (int64_t)first_doc) < 0 ||
        kvz_h5_attr_put_i64(s->file, "first_sample", (int64_t)first_sample) < 0 ||
        kvz_ostore_create_groups(s->file, m->n_layers) < 0 || create_dsets(s, rows_hint) < 0) {
        int rc = kvz_h5_fail(err, KVZ_EIO, s->tmp_path, "cannot create shard");
        kvz_ostore_shard_abort(s);
        return rc;
    }
    return KVZ_OK;
}

static void *shard_buf(kvz_ostore_shard *s, size_t bytes)
{
    if (bytes > s->buf_bytes) {
        void *b = realloc(s->buf, bytes);
        if (!b)
            return NULL;
        s->buf = b;
        s->buf_bytes = bytes;
    }
    return s->buf;
}

/* samples/doc_index and samples/split: constant per document. */
static int append_sample_consts(kvz_ostore_shard *s, size_t n, int32_t doc, uint8_t split)
{
    int32_t *v = shard_buf(s, n * sizeof(int32_t));
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++)
        v[i] = doc;
    if (kvz_h5_dset_append_rows(s->dsets[1], H5T_NATIVE_INT32, s->n_samples, n, 0, v) < 0)
        return -1;
    memset(v, split, n);
    return kvz_h5_dset_append_rows(s->dsets[3], H5T_NATIVE_UINT8, s->n_samples, n, 0, v);
}

static int append_samples(kvz_ostore_shard *s, const kvz_oracle_doc_record *rec,
                          const kvz_oracle_doc_samples *d)
{
    size_t r = s->n_samples, n = d->n;
    if (kvz_h5_dset_append_rows(s->dsets[0], H5T_NATIVE_INT32, r, n, 0, d->token_id) < 0 ||
        kvz_h5_dset_append_rows(s->dsets[2], H5T_NATIVE_INT32, r, n, 0, d->position) < 0)
        return -1;
    return append_sample_consts(s, n, (int32_t)(s->first_doc + s->n_docs), (uint8_t)rec->split);
}

static int append_doc_row(kvz_ostore_shard *s, const kvz_oracle_doc_record *rec, size_t n)
{
    hid_t str = kvz_h5_str_type();
    if (str < 0)
        return -1;
    /* file names are bytes: stored as valid UTF-8, reversibly escaped */
    const char *raw_src = rec->source ? rec->source : "", *raw_sub = rec->subset ? rec->subset : "";
    char *src = kvz_utf8_escape_bytes(raw_src, strlen(raw_src));
    char *sub = kvz_utf8_escape_bytes(raw_sub, strlen(raw_sub));
    if (!src || !sub) {
        free(src);
        free(sub);
        H5Tclose(str);
        return -1;
    }
    uint8_t split = (uint8_t)rec->split;
    int32_t ints[8] = {(int32_t)rec->n_text_tokens, (int32_t)rec->n_prompt_tokens,
                       (int32_t)rec->context_start, (int32_t)rec->context_end,
                       (int32_t)rec->repeat_start,  (int32_t)rec->repeat_end, (int32_t)n, 0};
    int64_t start = (int64_t)(s->first_sample + s->n_samples);
    size_t row = s->n_docs;
    int rc = kvz_h5_dset_append_rows(s->dsets[4], str, row, 1, 0, &src) < 0 ||
             kvz_h5_dset_append_rows(s->dsets[5], str, row, 1, 0, &sub) < 0 ||
             kvz_h5_dset_append_rows(s->dsets[6], H5T_NATIVE_UINT8, row, 1, 0, &split) < 0
             ? -1 : 0;
    for (size_t c = 0; c < 7 && rc == 0; c++)
        rc = kvz_h5_dset_append_rows(s->dsets[7 + c], H5T_NATIVE_INT32, row, 1, 0, &ints[c]);
    if (rc == 0)
        rc = kvz_h5_dset_append_rows(s->dsets[14], H5T_NATIVE_INT64, row, 1, 0, &start);
    H5Tclose(str);
    free(src);
    free(sub);
    return rc;
}

static int append_layers(kvz_ostore_shard *s, const kvz_oracle_doc_samples *d)
{
    const kvz_oracle_meta *m = s->meta;
    size_t n = d->n, D = m->d_model, H = m->n_kv_heads, r = s->n_samples;
    for (size_t l = 0; l < m->n_layers; l++) {
        if (m->store_hidden) {
            hid_t dset = s->dsets[kvz_ostore_hidden_index(m, l)];
            const float *x = d->hidden + l * n * D;
            if (s->specs[kvz_ostore_hidden_index(m, l)].kind == KVZ_COL_F16) {
                uint16_t *h = shard_buf(s, n * D * sizeof(uint16_t));
                if (!h)
                    return -1;
                for (size_t i = 0; i < n * D; i++)
                    h[i] = kvz_f32_to_f16_rne(x[i]);
                hid_t half = kvz_h5_half_type();
                int rc = half < 0 ? -1 : kvz_h5_dset_append_rows(dset, half, r, n, D, h);
                if (half >= 0)
                    H5Tclose(half);
                if (rc < 0)
                    return -1;
            } else if (kvz_h5_dset_append_rows(dset, H5T_NATIVE_FLOAT, r, n, D, x) < 0) {
                return -1;
            }
        }
        if (kvz_h5_dset_append_rows(s->dsets[kvz_ostore_scores_index(m, l)], H5T_NATIVE_FLOAT, r,
                                    n, H, d->log_scores + l * n * H) < 0)
            return -1;
    }
    return 0;
}

int kvz_ostore_shard_append(kvz_ostore_shard *s, const kvz_oracle_doc_record *rec,
                            const kvz_oracle_doc_samples *d, kvz_error *err)
{
    if (append_samples(s, rec, d) < 0 || append_doc_row(s, rec, d->n) < 0 ||
        append_layers(s, d) < 0)
        return kvz_h5_fail(err, KVZ_EIO, s->tmp_path, "cannot write document %zu",
                           s->first_doc + s->n_docs);
    s->n_docs++;
    s->n_samples += d->n;
    return KVZ_OK;
}

int kvz_ostore_shard_close_tmp(kvz_ostore_shard *s, kvz_error *err)
{
    int bad = kvz_h5_attr_put_i64(s->file, "n_docs", (int64_t)s->n_docs) < 0 ||
              kvz_h5_attr_put_i64(s->file, "n_samples", (int64_t)s->n_samples) < 0;
    for (size_t i = 0; i < s->n_dsets; i++) {
        if (H5Dclose(s->dsets[i]) < 0)
            bad = kvz_h5_note();
        s->dsets[i] = -1;
    }
    if (H5Fclose(s->file) < 0)
        bad = kvz_h5_note();
    s->file = -1;
    if (bad)
        return kvz_h5_fail(err, KVZ_EIO, s->tmp_path, "cannot write shard");
    int rc = kvz_h5_seal(s->tmp_path, err);
    if (rc)
        return rc;
    int e = kvz_fsync_path(s->tmp_path);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync: %s", s->tmp_path, strerror(e));
    return KVZ_OK;
}

int kvz_ostore_shard_publish(kvz_ostore_shard *s, kvz_error *err)
{
    if (rename(s->tmp_path, s->path) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot rename into place: %s", s->path,
                        strerror(errno));
    char *dir = kvz_path_dirname(s->path);
    int e = dir ? kvz_fsync_path(dir) : ENOMEM;
    free(dir);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync its directory: %s", s->path, strerror(e));
    shard_free(s);
    return KVZ_OK;
}

void kvz_ostore_shard_abort(kvz_ostore_shard *s)
{
    char *tmp = s->tmp_path ? strdup(s->tmp_path) : NULL;
    shard_free(s);
    if (tmp)
        unlink(tmp);
    free(tmp);
}

int kvz_ostore_shard_counts_read(const char *path, kvz_ostore_shard_counts *c)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return -1;
    int64_t v[4];
    int rc = kvz_h5_attr_get_i64(f, "first_doc", &v[0]) < 0 ||
             kvz_h5_attr_get_i64(f, "n_docs", &v[1]) < 0 ||
             kvz_h5_attr_get_i64(f, "first_sample", &v[2]) < 0 ||
             kvz_h5_attr_get_i64(f, "n_samples", &v[3]) < 0 || v[0] < 0 || v[1] < 0 ||
             v[2] < 0 || v[3] < 0
             ? -1 : 0;
    H5Fclose(f);
    if (rc == 0)
        *c = (kvz_ostore_shard_counts){(size_t)v[0], (size_t)v[1], (size_t)v[2], (size_t)v[3]};
    return rc;
}

void kvz_ostore_shard_release(kvz_ostore_shard *s)
{
    shard_free(s);
}
