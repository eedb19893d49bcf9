/* oracle_store_parts: the commit record "<output>.parts/ridge.h5": the run's
 * parameters (every kvz_oracle_meta field), how many documents, samples and
 * shards are committed, and (ridge_stats) the float64 ridge sums over exactly
 * those documents. Written as "ridge.h5.tmp", fsynced, renamed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oracle_store_internal.h"

#define PROGRESS_KIND "kvzap-oracle-parts"

static int write_progress(hid_t f, const kvz_oracle_meta *m, const kvz_ostore_progress *p,
                          kvz_ostore_ridge *ridge)
{
    if (kvz_h5_attr_put_str(f, "kind", PROGRESS_KIND) < 0 || kvz_ostore_meta_put(f, m) < 0 ||
        kvz_h5_attr_put_i64(f, "n_docs", (int64_t)p->n_docs) < 0 ||
        kvz_h5_attr_put_i64(f, "n_samples", (int64_t)p->n_samples) < 0 ||
        kvz_h5_attr_put_i64(f, "n_shards", (int64_t)p->n_shards) < 0)
        return -1;
    return ridge && m->ridge_stats ? kvz_ostore_ridge_write(ridge, f) : 0;
}

int kvz_ostore_progress_save(const char *parts, const kvz_oracle_meta *m,
                             const kvz_ostore_progress *p, kvz_ostore_ridge *ridge,
                             kvz_error *err)
{
    char *path = kvz_path_join(parts, "ridge.h5"), *tmp = kvz_path_join(parts, "ridge.h5.tmp");
    int rc = KVZ_OK;
    if (!path || !tmp) {
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
        goto done;
    }
    hid_t f = kvz_h5_create_file(tmp);
    int bad = f < 0 || write_progress(f, m, p, ridge) < 0;
    if (f >= 0 && H5Fclose(f) < 0)
        bad = kvz_h5_note();
    if (bad) {
        rc = kvz_h5_fail(err, KVZ_EIO, tmp, "cannot write the ridge sums / progress record");
        unlink(tmp);
        goto done;
    }
    if ((rc = kvz_h5_seal(tmp, err)) != KVZ_OK) {
        unlink(tmp);
        goto done;
    }
    int e = kvz_fsync_path(tmp);
    if (e || rename(tmp, path) != 0) {
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot commit: %s", path, strerror(e ? e : errno));
        unlink(tmp);
        goto done;
    }
    if ((e = kvz_fsync_path(parts)) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot sync: %s", parts, strerror(e));
done:
    free(path);
    free(tmp);
    return rc;
}

static int read_counts(hid_t f, kvz_ostore_progress *p)
{
    int64_t v[3];
    if (kvz_h5_attr_get_i64(f, "n_docs", &v[0]) < 0 ||
        kvz_h5_attr_get_i64(f, "n_samples", &v[1]) < 0 ||
        kvz_h5_attr_get_i64(f, "n_shards", &v[2]) < 0 || v[0] < 0 || v[1] < 0 || v[2] < 0)
        return -1;
    *p = (kvz_ostore_progress){(size_t)v[0], (size_t)v[1], (size_t)v[2]};
    return 0;
}

static int check_record(hid_t f, const char *parts, const kvz_oracle_meta *m,
                        kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err)
{
    char *kind = NULL, why[512];
    int got = kvz_h5_attr_get_str(f, "kind", &kind);
    int ok = got == 0 && !strcmp(kind, PROGRESS_KIND);
    free(kind);
    if (got == KVZ_ENOMEM)
        return kvz_fail(err, KVZ_ENOMEM, "%s/ridge.h5: out of memory reading attribute 'kind'",
                        parts);
    if (!ok || read_counts(f, p) < 0)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s/ridge.h5: not a kvzap-oracle progress record (remove %s to start over)",
                        parts, parts);
    int diff = kvz_ostore_meta_diff(f, m, why, sizeof why);
    if (diff == KVZ_ENOMEM)
        return kvz_fail(err, KVZ_ENOMEM, "%s/ridge.h5: %s", parts, why);
    if (diff)
        return kvz_fail(err, KVZ_EINVAL, "%s: cannot resume: %s", parts, why);
    if (ridge && m->ridge_stats && kvz_ostore_ridge_read(ridge, f) < 0)
        return kvz_fail(err, KVZ_EFORMAT, "%s/ridge.h5: ridge sums missing or mis-shaped", parts);
    return KVZ_OK;
}

int kvz_ostore_progress_load(const char *parts, const kvz_oracle_meta *m,
                             kvz_ostore_progress *p, kvz_ostore_ridge *ridge, kvz_error *err)
{
    char *path = kvz_path_join(parts, "ridge.h5");
    if (!path)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
    if (!kvz_path_exists(path)) {
        free(path);
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: no ridge.h5", parts);
    }
    int rc = kvz_h5_verify(path, 1, err);
    if (rc) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        free(path);
        return kvz_fail(err, rc, "%s (remove %s to start over)", msg, parts);
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    rc = f < 0 ? kvz_h5_fail(err, KVZ_EFORMAT, path, "cannot read the progress record")
               : check_record(f, parts, m, p, ridge, err);
    if (f >= 0)
        H5Fclose(f);
    free(path);
    return rc;
}
