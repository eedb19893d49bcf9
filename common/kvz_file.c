/* kvz_file: mmap, whole-file reads and atomic writes (see kvz_file.h). */
#define _GNU_SOURCE
#include "kvz_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int kvz_file_map(const char *path, kvz_mapped_file *out, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kvz_fail(err, KVZ_EIO, "%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kvz_fail(err, KVZ_EIO, "%s: cannot mmap: %s", path, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    out->path = strdup(path);
    if (!out->path) {
        kvz_file_unmap(out);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    return KVZ_OK;
}

void kvz_file_unmap(kvz_mapped_file *f)
{
    if (f->data)
        munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

int kvz_file_read_all(const char *path, char **out, size_t *len, kvz_error *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    int rd_err = ferror(fp);
    fclose(fp);
    if (!buf)
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    if (rd_err) {
        free(buf);
        return kvz_fail(err, KVZ_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return KVZ_OK;
}

int kvz_atomic_open(const char *path, kvz_atomic_file *out, kvz_error *err)
{
    memset(out, 0, sizeof *out);
    size_t n = strlen(path) + 32;
    out->path = strdup(path);
    out->tmp_path = malloc(n);
    if (!out->path || !out->tmp_path) {
        kvz_atomic_abort(out);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    snprintf(out->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    out->fp = fopen(out->tmp_path, "wb");
    if (!out->fp) {
        int e = errno;
        kvz_atomic_abort(out);
        return kvz_fail(err, KVZ_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return KVZ_OK;
}

int kvz_atomic_commit(kvz_atomic_file *f, kvz_error *err)
{
    int bad = fflush(f->fp) != 0 || ferror(f->fp);
    int e = errno;
    if (!bad && fsync(fileno(f->fp)) != 0) {
        bad = 1;
        e = errno;
    }
    if (fclose(f->fp) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    f->fp = NULL;
    if (bad) {
        int rc = kvz_fail(err, KVZ_EIO, "%s: write failed: %s", f->path, strerror(e));
        kvz_atomic_abort(f);
        return rc;
    }
    if (rename(f->tmp_path, f->path) != 0) {
        e = errno;
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot rename into place: %s", f->path, strerror(e));
        kvz_atomic_abort(f);
        return rc;
    }
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
    return KVZ_OK;
}

void kvz_atomic_abort(kvz_atomic_file *f)
{
    if (f->fp)
        fclose(f->fp);
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

char *kvz_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int kvz_path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int kvz_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
