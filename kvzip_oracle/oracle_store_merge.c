/* oracle_store_merge: builds the final dataset from the committed shards.
 * Fixed-size datasets of exactly N samples / M documents, chunked by rows
 * (about 1 MiB per chunk), filled dataset by dataset (layer by layer), shard
 * by shard, in blocks of one chunk's rows (bounded memory; no conversion,
 * the bytes are copied as stored). Written to "<parts>/final.h5.tmp" with
 * complete = 1 as the last attribute, fsynced, then renamed to the output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oracle_store_internal.h"

#define FINAL_CHUNK_BYTES (1u << 20)

typedef struct merge_ctx {
    const char *parts;
    const kvz_ostore_progress *p;
    hid_t out;
} merge_ctx;

/* Copies rows [0, n) of src into dst from row dst0, `block` rows at a time. */
static int copy_rows(hid_t src, hid_t dst, size_t dst0, size_t n, size_t cols, size_t block)
{
    hid_t t = H5Dget_type(src);
    if (t < 0)
        return -1;
    int vlen = H5Tis_variable_str(t) > 0;
    size_t row_bytes = H5Tget_size(t) * (cols ? cols : 1);
    void *buf = malloc((block < n ? block : n) * row_bytes + 1);
    int rc = buf ? 0 : -1;
    for (size_t r = 0; r < n && rc == 0; r += block) {
        size_t k = n - r < block ? n - r : block;
        rc = kvz_h5_dset_read_rows(src, t, r, k, cols, buf);
        if (rc == 0)
            rc = kvz_h5_dset_write_rows(dst, t, dst0 + r, k, cols, buf);
        if (vlen && rc == 0) {
            hsize_t dims = k;
            hid_t ms = H5Screate_simple(1, &dims, NULL);
            H5Dvlen_reclaim(t, ms, H5P_DEFAULT, buf);
            H5Sclose(ms);
        }
    }
    free(buf);
    H5Tclose(t);
    return rc;
}

/* Copies dataset `sp` of shard k into dst. */
static int copy_from_shard(merge_ctx *c, size_t k, const kvz_ostore_dset *sp, hid_t dst,
                           size_t block)
{
    char *path = kvz_ostore_shard_path(c->parts, k, 0);
    hid_t f = path ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    kvz_ostore_shard_counts sc;
    int rc = -1;
    if (f >= 0 && kvz_ostore_shard_counts_read(path, &sc) == 0) {
        hid_t src = H5Dopen2(f, sp->name, H5P_DEFAULT);
        size_t dims[2], n = sp->per_doc ? sc.n_docs : sc.n_samples;
        size_t dst0 = sp->per_doc ? sc.first_doc : sc.first_sample;
        if (src >= 0 && kvz_h5_dset_shape(src, dims) > 0 && dims[0] == n &&
            dims[1] == sp->cols)
            rc = copy_rows(src, dst, dst0, n, sp->cols, block);
        if (src >= 0)
            H5Dclose(src);
    }
    if (f >= 0)
        H5Fclose(f);
    free(path);
    return rc;
}

static int merge_dset(merge_ctx *c, const kvz_ostore_dset *sp)
{
    size_t rows = sp->per_doc ? c->p->n_docs : c->p->n_samples;
    hid_t t = kvz_ostore_kind_type(sp->kind);
    if (t < 0)
        return -1;
    size_t row_bytes = H5Tget_size(t) * (sp->cols ? sp->cols : 1);
    size_t chunk = kvz_h5_chunk_rows(row_bytes, FINAL_CHUNK_BYTES);
    if (chunk > rows)
        chunk = rows ? rows : 1;
    hid_t d = kvz_h5_dset_create(c->out, sp->name, t, rows, sp->cols, 0, chunk);
    H5Tclose(t);
    if (d < 0)
        return -1;
    int rc = 0;
    for (size_t k = 0; k < c->p->n_shards && rc == 0; k++)
        rc = copy_from_shard(c, k, sp, d, chunk);
    if (H5Dclose(d) < 0)
        rc = -1;
    return rc;
}

static int write_root(hid_t f, const kvz_oracle_meta *m, const kvz_ostore_progress *p)
{
    return kvz_ostore_put_format(f, -1) < 0 || kvz_ostore_meta_put(f, m) < 0 ||
                   kvz_h5_attr_put_i64(f, "n_samples", (int64_t)p->n_samples) < 0 ||
                   kvz_h5_attr_put_i64(f, "n_documents", (int64_t)p->n_docs) < 0 ||
                   kvz_h5_attr_put_str(f, "kvzap_version", KVZ_VERSION) < 0 ||
                   kvz_ostore_create_groups(f, m->n_layers) < 0
               ? -1 : 0;
}

static int fill_file(merge_ctx *c, const kvz_oracle_meta *m, kvz_ostore_ridge *ridge)
{
    size_t n_dsets;
    kvz_ostore_dset *specs = kvz_ostore_dsets(m, &n_dsets);
    int rc = specs && write_root(c->out, m, c->p) == 0 ? 0 : -1;
    for (size_t i = 0; specs && i < n_dsets && rc == 0; i++)
        rc = merge_dset(c, &specs[i]);
    free(specs);
    if (rc == 0 && m->ridge_stats)
        rc = kvz_ostore_ridge_write(ridge, c->out);
    if (rc == 0) /* last: marks the file complete */
        rc = kvz_h5_attr_put_i32(c->out, "complete", 1);
    return rc;
}

/* fsync tmp, rename it to output, fsync output's directory. */
static int publish(const char *tmp, const char *output, kvz_error *err)
{
    int e = kvz_fsync_path(tmp);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync: %s", tmp, strerror(e));
    if (rename(tmp, output) != 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot rename into place: %s", output,
                        strerror(errno));
    char *dir = kvz_path_dirname(output);
    e = dir ? kvz_fsync_path(dir) : ENOMEM;
    free(dir);
    if (e)
        return kvz_fail(err, KVZ_EIO, "%s: cannot sync its directory: %s", output, strerror(e));
    return KVZ_OK;
}

int kvz_ostore_merge(const char *parts, const char *output, const kvz_oracle_meta *m,
                     const kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err)
{
    char *tmp = kvz_path_join(parts, "final.h5.tmp");
    if (!tmp)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
    merge_ctx c = {parts, p, kvz_h5_create_file(tmp)};
    int bad = c.out < 0 || fill_file(&c, m, ridge) < 0;
    if (c.out >= 0 && H5Fclose(c.out) < 0)
        bad = 1;
    int rc = bad ? kvz_h5_fail(err, KVZ_EIO, output, "cannot write the merged dataset %s", tmp)
                 : publish(tmp, output, err);
    if (rc != KVZ_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}
