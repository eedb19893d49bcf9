/* kvz_file: mmap, whole-file reads and atomic writes (see kvz_file.h). */
#define _GNU_SOURCE
#include "kvz_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
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
    kvz_clean_stale_temps(path);
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

/* ---------- output directories and stale temporaries ---------- */

int kvz_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? 0 : -1;
    int bad = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *child = kvz_path_join(path, e->d_name);
        bad |= !child || kvz_remove_tree(child) != 0;
        free(child);
    }
    if (d)
        closedir(d);
    else
        bad = 1;
    return rmdir(path) == 0 && !bad ? 0 : -1;
}

/* path without trailing slashes (but "/" stays "/"), malloc'ed. */
static char *strip_slashes(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, path, n);
        s[n] = '\0';
    }
    return s;
}

/* If name is "<base>.tmp.<pid>" or "<base>.old.<pid>", the pid; else 0. */
static long temp_owner(const char *name, const char *base)
{
    size_t b = strlen(base);
    if (strncmp(name, base, b) != 0 ||
        (strncmp(name + b, ".tmp.", 5) != 0 && strncmp(name + b, ".old.", 5) != 0))
        return 0;
    const char *digits = name + b + 5;
    char *end;
    errno = 0;
    long pid = strtol(digits, &end, 10);
    if (end == digits || *end || errno || pid <= 0 || digits[0] == '+' || digits[0] == '-')
        return 0;
    return pid;
}

static int process_gone(long pid)
{
    if (pid == (long)getpid())
        return 1; /* an earlier process of ours had this pid */
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int kvz_clean_stale_temps(const char *path)
{
    char *full = strip_slashes(path);
    if (!full)
        return 0;
    char *slash = strrchr(full, '/');
    const char *base = slash ? slash + 1 : full;
    char *dir = slash ? (slash == full ? strdup("/") : strndup(full, (size_t)(slash - full)))
                      : strdup(".");
    int removed = 0;
    DIR *d = dir && *base ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long pid = temp_owner(e->d_name, base);
        if (!pid || !process_gone(pid))
            continue;
        char *victim = kvz_path_join(dir, e->d_name);
        if (victim && kvz_remove_tree(victim) == 0)
            removed++;
        free(victim);
    }
    if (d)
        closedir(d);
    free(dir);
    free(full);
    return removed;
}

void kvz_outdir_abort(kvz_outdir *d)
{
    if (d->tmp_path)
        (void)kvz_remove_tree(d->tmp_path);
    free(d->path);
    free(d->tmp_path);
    memset(d, 0, sizeof *d);
}

int kvz_outdir_begin(const char *path, kvz_outdir *d, kvz_error *err)
{
    memset(d, 0, sizeof *d);
    d->path = strip_slashes(path);
    size_t n = d->path ? strlen(d->path) + 32 : 0;
    d->tmp_path = d->path ? malloc(n) : NULL;
    if (!d->tmp_path) {
        kvz_outdir_abort(d);
        return kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", path);
    }
    snprintf(d->tmp_path, n, "%s.tmp.%ld", d->path, (long)getpid());
    kvz_clean_stale_temps(d->path);
    if (mkdir(d->tmp_path, 0777) != 0) {
        int e = errno;
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot create the temporary directory %s: %s",
                          d->path, d->tmp_path, strerror(e));
        free(d->path);
        free(d->tmp_path);
        memset(d, 0, sizeof *d);
        return rc;
    }
    return KVZ_OK;
}

/* fsync of a directory and, recursively, of the directories under it (the
 * files were fsynced by whoever wrote them). */
static int fsync_dirs(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int bad = fsync(fd) != 0 && errno != EINVAL;
    DIR *d = fdopendir(fd);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_type != DT_DIR || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *child = kvz_path_join(path, e->d_name);
        bad |= !child || fsync_dirs(child) != 0;
        free(child);
    }
    if (d)
        closedir(d);
    else
        close(fd);
    return bad ? -1 : 0;
}

static void fsync_parent(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return;
    char *slash = strrchr(dir, '/');
    const char *p = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int kvz_outdir_commit(kvz_outdir *d, kvz_error *err)
{
    if (fsync_dirs(d->tmp_path) != 0) {
        int rc = kvz_fail(err, KVZ_EIO, "%s: cannot sync %s: %s", d->path, d->tmp_path,
                          strerror(errno));
        kvz_outdir_abort(d);
        return rc;
    }
    struct stat st;
    int rc = KVZ_OK;
    if (lstat(d->path, &st) != 0) {
        if (rename(d->tmp_path, d->path) != 0)
            rc = kvz_fail(err, KVZ_EIO, "%s: cannot rename %s into place: %s", d->path,
                          d->tmp_path, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        rc = kvz_fail(err, KVZ_EIO, "%s: exists and is not a directory; not replacing it",
                      d->path);
    } else if (renameat2(AT_FDCWD, d->tmp_path, AT_FDCWD, d->path, RENAME_EXCHANGE) == 0) {
        /* d->tmp_path now holds the old tree; abort below removes it */
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        rc = kvz_fail(err, KVZ_EIO, "%s: cannot replace it with %s: %s", d->path, d->tmp_path,
                      strerror(errno));
    } else {
        size_t n = strlen(d->path) + 32;
        char *old = malloc(n);
        if (!old) {
            rc = kvz_fail(err, KVZ_ENOMEM, "%s: out of memory", d->path);
        } else {
            snprintf(old, n, "%s.old.%ld", d->path, (long)getpid());
            (void)kvz_remove_tree(old);
            if (rename(d->path, old) != 0) {
                rc = kvz_fail(err, KVZ_EIO, "%s: cannot move the old one aside: %s", d->path,
                              strerror(errno));
            } else if (rename(d->tmp_path, d->path) != 0) {
                rc = kvz_fail(err, KVZ_EIO, "%s: cannot rename %s into place: %s", d->path,
                              d->tmp_path, strerror(errno));
                (void)rename(old, d->path);
            } else {
                (void)kvz_remove_tree(old);
            }
            free(old);
        }
    }
    if (rc == KVZ_OK)
        fsync_parent(d->path);
    kvz_outdir_abort(d); /* removes the temporary: the old tree, or ours after a failure */
    return rc;
}
