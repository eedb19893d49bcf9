/* oracle_store_resume: bringing "<output>.parts/" back to its last commit.
 * ridge.h5 says how many shards are committed (n_shards); every shard below
 * that must be present (the newest may still carry its ".tmp" name if the run
 * stopped between saving ridge.h5 and the rename: it was closed and fsynced
 * before ridge.h5 was written, so it is renamed into place). Shards at or
 * beyond n_shards and every temporary file are removed: they are redone.
 * Every shard kept is verified against its integrity seal first (one read of
 * the committed data), so a damaged shard is refused by name before libhdf5
 * parses it. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oracle_store_internal.h"

/* "shard-000012.h5" -> 12; -1 for any other name. */
static long shard_index(const char *name)
{
    size_t len = strlen(name);
    if (len != strlen("shard-000000.h5") || strncmp(name, "shard-", 6) != 0 ||
        strcmp(name + len - 3, ".h5") != 0)
        return -1;
    long k = 0;
    for (size_t i = 6; i < len - 3; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        k = k * 10 + (name[i] - '0');
    }
    return k;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Removes shards >= n_shards and temporary files. */
int kvz_ostore_parts_clean(const char *parts, size_t n_shards, kvz_error *err)
{
    DIR *dir = opendir(parts);
    if (!dir)
        return kvz_fail(err, KVZ_EIO, "%s: cannot list: %s", parts, strerror(errno));
    int rc = KVZ_OK;
    struct dirent *e;
    while (rc == KVZ_OK && (e = readdir(dir)) != NULL) {
        long k = shard_index(e->d_name);
        int drop = ends_with(e->d_name, ".tmp") || (k >= 0 && (size_t)k >= n_shards);
        if (!drop)
            continue;
        char *path = kvz_path_join(parts, e->d_name);
        if (!path || unlink(path) != 0)
            rc = kvz_fail(err, KVZ_EIO, "%s: cannot remove: %s", path ? path : parts,
                          strerror(path ? errno : ENOMEM));
        free(path);
    }
    closedir(dir);
    return rc;
}

/* Shard k present (renaming a finished "shard-k.h5.tmp" when k is the newest)
 * and its counts continue where shard k-1 ended. */
static int check_shard(const char *parts, size_t k, size_t n_shards, kvz_ostore_progress *sum,
                       kvz_error *err)
{
    char *path = kvz_ostore_shard_path(parts, k, 0), *tmp = kvz_ostore_shard_path(parts, k, 1);
    kvz_ostore_shard_counts c;
    int rc = KVZ_OK;
    if (!path || !tmp) {
        rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", parts);
    } else if (!kvz_path_exists(path) && k + 1 == n_shards && kvz_path_exists(tmp) &&
               kvz_h5_verify(tmp, 1, NULL) == KVZ_OK &&
               kvz_ostore_shard_counts_read(tmp, &c) == 0 && rename(tmp, path) != 0) {
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
    } else if (!kvz_path_exists(path)) {
        rc = kvz_fail(err, KVZ_EFORMAT,
                      "%s: cannot resume: %s is missing (remove the directory to start over)",
                      parts, path);
    } else if ((rc = kvz_h5_verify(path, 1, err)) != KVZ_OK) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        rc = kvz_fail(err, rc, "%s: cannot resume: %s (remove the directory to start over)",
                      parts, msg);
    } else if (kvz_ostore_shard_counts_read(path, &c) != 0 || c.first_doc != sum->n_docs ||
               c.first_sample != sum->n_samples) {
        rc = kvz_fail(err, KVZ_EFORMAT,
                      "%s: cannot resume: %s is damaged or out of sequence (remove the "
                      "directory to start over)",
                      parts, path);
    } else {
        sum->n_docs += c.n_docs;
        sum->n_samples += c.n_samples;
    }
    free(path);
    free(tmp);
    return rc;
}

int kvz_ostore_parts_recover(const char *parts, const kvz_ostore_progress *p, kvz_error *err)
{
    kvz_ostore_progress sum = {0, 0, 0};
    for (size_t k = 0; k < p->n_shards; k++) {
        int rc = check_shard(parts, k, p->n_shards, &sum, err);
        if (rc != KVZ_OK)
            return rc;
    }
    if (sum.n_docs != p->n_docs || sum.n_samples != p->n_samples)
        return kvz_fail(err, KVZ_EFORMAT,
                        "%s: cannot resume: the shards hold %zu documents / %zu samples but "
                        "ridge.h5 records %zu / %zu (remove the directory to start over)",
                        parts, sum.n_docs, sum.n_samples, p->n_docs, p->n_samples);
    return kvz_ostore_parts_clean(parts, p->n_shards, err);
}

int kvz_ostore_parts_remove(const char *parts, kvz_error *err)
{
    int rc = kvz_ostore_parts_clean(parts, 0, err);
    char *ridge = kvz_path_join(parts, "ridge.h5");
    if (rc == KVZ_OK && (!ridge || (unlink(ridge) != 0 && errno != ENOENT)))
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot remove ridge.h5: %s", parts, strerror(errno));
    free(ridge);
    if (rc == KVZ_OK && rmdir(parts) != 0)
        rc = kvz_fail(err, KVZ_EIO, "%s: the dataset is complete but this directory cannot be "
                      "removed: %s", parts, strerror(errno));
    return rc;
}
