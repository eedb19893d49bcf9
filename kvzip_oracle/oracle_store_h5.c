/* oracle_store_h5: the HDF5 plumbing of the oracle store: quiet error stack
 * and messages carrying HDF5's reason, float32 -> float16 rounding and the
 * IEEE half type, deterministic file/object property lists (no timestamps,
 * libver earliest..v18, a 512-byte user block, Fletcher-32 on every chunked
 * dataset), scalar attributes, row-blocked chunked datasets, and the
 * integrity seal in the user block (kvz_h5_seal / kvz_h5_verify). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "oracle_store_internal.h"

/* The first HDF5 failure reason seen since the last kvz_h5_quiet (HDF5
 * clears its error stack at every API call, so helpers note it right away). */
static _Thread_local char noted[256];

void kvz_h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    noted[0] = '\0';
}

/* H5Ewalk2 callback: keeps the innermost (first) description. */
static herr_t keep_first_desc(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    if (n == 0 && e->desc)
        snprintf(buf, 256, "%s", e->desc);
    return 0;
}

/* HDF5's innermost reason, shortened to the OS message when it quotes one. */
static void h5_reason(char *buf, size_t size)
{
    char desc[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_first_desc, desc);
    const char *m = strstr(desc, "error message = '");
    if (m) {
        m += strlen("error message = '");
        const char *end = strchr(m, '\'');
        size_t len = end ? (size_t)(end - m) : strlen(m);
        snprintf(buf, size, "%.*s", (int)len, m);
    } else {
        snprintf(buf, size, "%s", desc);
    }
    H5Eclear2(H5E_DEFAULT);
}

int kvz_h5_note(void)
{
    if (!noted[0])
        h5_reason(noted, sizeof noted);
    return -1;
}

int kvz_h5_fail(kvz_error *err, int code, const char *path, const char *fmt, ...)
{
    char what[512], reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (noted[0])
        snprintf(reason, sizeof reason, "%s", noted);
    else
        h5_reason(reason, sizeof reason);
    noted[0] = '\0';
    if (reason[0])
        return kvz_fail(err, code, "%s: %s (%s)", path, what, reason);
    return kvz_fail(err, code, "%s: %s", path, what);
}

uint16_t kvz_f32_to_f16_rne(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf / NaN (quiet bit kept) */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: half subnormal (or zero) */
        if (a < 0x33000000u) /* < 2^-25 */
            return sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t v = a - (112u << 23); /* rebias exponent 127 -> 15 */
    uint32_t h = v >> 13, rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

hid_t kvz_h5_half_type(void)
{
    /* h5py's recipe: shrink IEEE float32 to 1 sign, 5 exponent, 10 mantissa bits. */
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0)
        return -1;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

hid_t kvz_h5_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

hid_t kvz_h5_fapl(void)
{
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    if (p >= 0 && H5Pset_libver_bounds(p, H5F_LIBVER_EARLIEST, H5F_LIBVER_V18) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

hid_t kvz_h5_ocpl(hid_t cls)
{
    hid_t p = H5Pcreate(cls);
    if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

hid_t kvz_h5_create_file(const char *path)
{
    hid_t fapl = kvz_h5_fapl(), fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t f = -1;
    if (fapl >= 0 && fcpl >= 0 && H5Pset_userblock(fcpl, KVZ_H5_USERBLOCK) >= 0)
        f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    if (f < 0)
        kvz_h5_note();
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    return f;
}

/* ---------- the integrity seal (oracle_store_internal.h) ---------- */

enum { SEAL_READ_BLOCK = 8 << 20 };
static const char SEAL_MAGIC[8] = {'K', 'V', 'Z', 'S', 'E', 'A', 'L', '1'};
static const char SEAL_NOTE[] =
    "kvzap integrity seal: bytes 8..15 file size (little-endian), 16..31 XXH3-128 "
    "(canonical) of bytes 512..end; see kvzap docs/oracle-format.md\n";

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* XXH3-128 of fd's bytes from KVZ_H5_USERBLOCK to size, into canon[16].
 * 0, or an errno (EIO also when the file ends early). */
static int hash_body(int fd, uint64_t size, unsigned char canon[16])
{
    XXH3_state_t *st = XXH3_createState();
    unsigned char *buf = malloc(SEAL_READ_BLOCK);
    int e = st && buf ? 0 : ENOMEM;
    if (!e && XXH3_128bits_reset(st) == XXH_ERROR)
        e = ENOMEM;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (uint64_t off = KVZ_H5_USERBLOCK; !e && off < size;) {
        size_t want = size - off < SEAL_READ_BLOCK ? (size_t)(size - off) : SEAL_READ_BLOCK;
        ssize_t got = pread(fd, buf, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            e = got < 0 ? errno : EIO;
        else if (XXH3_128bits_update(st, buf, (size_t)got) == XXH_ERROR)
            e = EIO;
        else
            off += (uint64_t)got;
    }
    if (!e) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        memcpy(canon, c.digest, 16);
    }
    free(buf);
    if (st)
        XXH3_freeState(st);
    return e;
}

int kvz_h5_seal(const char *path, kvz_error *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open to seal: %s", path, strerror(errno));
    struct stat st;
    unsigned char block[KVZ_H5_USERBLOCK] = {0};
    int e = fstat(fd, &st) != 0 ? errno : st.st_size < KVZ_H5_USERBLOCK ? EIO : 0;
    if (!e)
        e = hash_body(fd, (uint64_t)st.st_size, block + 16);
    if (!e) {
        memcpy(block, SEAL_MAGIC, 8);
        put_le64(block + 8, (uint64_t)st.st_size);
        memcpy(block + 32, SEAL_NOTE, sizeof SEAL_NOTE - 1);
        ssize_t w = pwrite(fd, block, sizeof block, 0);
        e = w == (ssize_t)sizeof block ? 0 : w < 0 ? errno : ENOSPC;
    }
    if (close(fd) != 0 && !e)
        e = errno;
    return e ? kvz_fail(err, KVZ_EIO, "%s: cannot write the integrity seal: %s", path,
                        strerror(e))
             : KVZ_OK;
}

int kvz_h5_verify(const char *path, int full, kvz_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvz_fail(err, KVZ_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    unsigned char block[32];
    int rc = KVZ_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = kvz_fail(err, KVZ_EIO, "%s: not a regular file", path);
    } else if (st.st_size < KVZ_H5_USERBLOCK || pread(fd, block, 32, 0) != 32 ||
               memcmp(block, SEAL_MAGIC, 8) != 0) {
        /* the HDF5 signature sits at 0 or after a user block (0, 512, 1024, ...) */
        char head[8] = {0}, hdf5_sig[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
        int is_hdf5 = 0;
        for (off_t at = 0; at <= 4096 && !is_hdf5; at = at ? at * 2 : 512)
            is_hdf5 = pread(fd, head, 8, at) == 8 && !memcmp(head, hdf5_sig, 8);
        rc = is_hdf5 ? kvz_fail(err, KVZ_ENOTFOUND,
                                "%s: no integrity seal (written by kvzap before datasets were "
                                "sealed, or by another program): re-create it, or skip the "
                                "check explicitly (--no-verify) to read it unverified",
                                path)
                     : kvz_fail(err, KVZ_EFORMAT,
                                "%s: not a kvzap dataset (no integrity seal; corrupt, "
                                "truncated or another kind of file)",
                                path);
    } else if (get_le64(block + 8) != (uint64_t)st.st_size) {
        uint64_t want = get_le64(block + 8);
        rc = kvz_fail(err, KVZ_EFORMAT, "%s: %s: %lld bytes, the seal records %llu", path,
                      (uint64_t)st.st_size < want ? "truncated" : "corrupt (bytes appended)",
                      (long long)st.st_size, (unsigned long long)want);
    } else if (full) {
        unsigned char got[16];
        int e = hash_body(fd, (uint64_t)st.st_size, got);
        if (e)
            rc = kvz_fail(err, KVZ_EIO, "%s: cannot read to verify: %s", path, strerror(e));
        else if (memcmp(got, block + 16, 16) != 0)
            rc = kvz_fail(err, KVZ_EFORMAT,
                          "%s: corrupt: its content does not match its integrity seal "
                          "(XXH3-128); the file was damaged after it was written",
                          path);
    }
    close(fd);
    return rc;
}

hid_t kvz_h5_create_group(hid_t loc, const char *name)
{
    hid_t gcpl = kvz_h5_ocpl(H5P_GROUP_CREATE);
    if (gcpl < 0)
        return -1;
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (g < 0)
        kvz_h5_note();
    H5Pclose(gcpl);
    return g;
}

/* ---------- attributes ---------- */

static int attr_put(hid_t obj, const char *name, hid_t type, const void *value)
{
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0)
        return -1;
    if (H5Aexists(obj, name) > 0)
        H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, type, value) >= 0 ? 0 : kvz_h5_note();
    if (a >= 0 && H5Aclose(a) < 0)
        rc = kvz_h5_note();
    H5Sclose(space);
    return rc;
}

int kvz_h5_attr_put_str(hid_t obj, const char *name, const char *value)
{
    hid_t t = kvz_h5_str_type();
    if (t < 0)
        return -1;
    const char *v = value ? value : "";
    int rc = attr_put(obj, name, t, &v);
    H5Tclose(t);
    return rc;
}

int kvz_h5_attr_put_i64(hid_t obj, const char *name, int64_t value)
{
    return attr_put(obj, name, H5T_STD_I64LE, &value) < 0 ? -1 : 0;
}

int kvz_h5_attr_put_i32(hid_t obj, const char *name, int32_t value)
{
    return attr_put(obj, name, H5T_STD_I32LE, &value) < 0 ? -1 : 0;
}

/* Opens a scalar attribute of the given class, or -1. */
static hid_t attr_open(hid_t obj, const char *name, H5T_class_t cls)
{
    if (H5Aexists(obj, name) <= 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int ok = t >= 0 && s >= 0 && H5Tget_class(t) == cls && H5Sget_simple_extent_npoints(s) == 1;
    if (t >= 0)
        H5Tclose(t);
    if (s >= 0)
        H5Sclose(s);
    if (!ok) {
        H5Aclose(a);
        return -1;
    }
    return a;
}

int kvz_h5_attr_get_str(hid_t obj, const char *name, char **out)
{
    *out = NULL;
    hid_t a = attr_open(obj, name, H5T_STRING);
    if (a < 0)
        return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tis_variable_str(ft) > 0) {
        hid_t t = kvz_h5_str_type();
        char *v = NULL;
        if (t >= 0 && H5Aread(a, t, &v) >= 0) {
            *out = strdup(v ? v : "");
            rc = *out ? 0 : KVZ_ENOMEM;
            H5free_memory(v);
        }
        if (t >= 0)
            H5Tclose(t);
    } else { /* fixed-length string */
        size_t n = H5Tget_size(ft);
        char *v = calloc(n + 1, 1);
        if (!v) {
            rc = KVZ_ENOMEM;
        } else if (H5Aread(a, ft, v) >= 0) {
            *out = v;
            rc = 0;
        } else {
            free(v);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int kvz_h5_attr_get_i64(hid_t obj, const char *name, int64_t *out)
{
    hid_t a = attr_open(obj, name, H5T_INTEGER);
    if (a < 0)
        return -1;
    int rc = H5Aread(a, H5T_NATIVE_INT64, out) >= 0 ? 0 : -1;
    H5Aclose(a);
    return rc;
}

/* ---------- datasets ---------- */

size_t kvz_h5_chunk_rows(size_t row_bytes, size_t target_bytes)
{
    size_t r = row_bytes ? target_bytes / row_bytes : target_bytes;
    return r ? r : 1;
}

hid_t kvz_h5_dset_create(hid_t loc, const char *name, hid_t type, size_t rows, size_t cols,
                         int extendable, size_t chunk_rows)
{
    int rank = cols ? 2 : 1;
    hsize_t dims[2] = {rows, cols}, maxd[2] = {extendable ? H5S_UNLIMITED : rows, cols};
    if (!extendable && chunk_rows > rows)
        chunk_rows = rows; /* a fixed dataset's chunk may not exceed it */
    hsize_t chunk[2] = {chunk_rows ? chunk_rows : 1, cols};
    hid_t space = H5Screate_simple(rank, dims, maxd);
    hid_t dcpl = kvz_h5_ocpl(H5P_DATASET_CREATE);
    hid_t d = -1;
    /* An empty fixed dataset stays contiguous (no chunk fits in 0 rows). */
    int chunked = extendable || rows > 0;
    /* Fletcher-32 on every chunked fixed-size dataset (libhdf5 refuses
     * filters on variable-length strings; the seal covers those) */
    int vlen = H5Tis_variable_str(type) > 0;
    if (space >= 0 && dcpl >= 0 &&
        (!chunked || (H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
                      (vlen || H5Pset_fletcher32(dcpl) >= 0))) &&
        (vlen || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0))
        d = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0)
        kvz_h5_note();
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return d;
}

/* Selects rows [row0, row0+n) of d's file space; returns {file, mem} spaces. */
static int select_rows(hid_t d, size_t row0, size_t n, size_t cols, hid_t *fs, hid_t *ms)
{
    int rank = cols ? 2 : 1;
    hsize_t start[2] = {row0, 0}, count[2] = {n, cols};
    *fs = H5Dget_space(d);
    *ms = H5Screate_simple(rank, count, NULL);
    if (*fs < 0 || *ms < 0 ||
        H5Sselect_hyperslab(*fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0) {
        if (*fs >= 0)
            H5Sclose(*fs);
        if (*ms >= 0)
            H5Sclose(*ms);
        return -1;
    }
    return 0;
}

int kvz_h5_dset_write_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols,
                           const void *buf)
{
    if (n == 0)
        return 0;
    hid_t fs, ms;
    if (select_rows(d, row0, n, cols, &fs, &ms) < 0)
        return -1;
    int rc = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf) < 0 ? kvz_h5_note() : 0;
    H5Sclose(fs);
    H5Sclose(ms);
    return rc;
}

int kvz_h5_dset_read_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols, void *buf)
{
    if (n == 0)
        return 0;
    hid_t fs, ms;
    if (select_rows(d, row0, n, cols, &fs, &ms) < 0)
        return -1;
    int rc = H5Dread(d, memtype, ms, fs, H5P_DEFAULT, buf) < 0 ? kvz_h5_note() : 0;
    H5Sclose(fs);
    H5Sclose(ms);
    return rc;
}

int kvz_h5_dset_append_rows(hid_t d, hid_t memtype, size_t row0, size_t n, size_t cols,
                            const void *buf)
{
    hsize_t dims[2] = {row0 + n, cols};
    if (H5Dset_extent(d, dims) < 0)
        return kvz_h5_note();
    return kvz_h5_dset_write_rows(d, memtype, row0, n, cols, buf);
}

int kvz_h5_dset_shape(hid_t d, size_t dims[2])
{
    hid_t s = H5Dget_space(d);
    if (s < 0)
        return -1;
    hsize_t h[2] = {0, 0};
    int rank = H5Sget_simple_extent_ndims(s);
    if (rank < 1 || rank > 2 || H5Sget_simple_extent_dims(s, h, NULL) < 0)
        rank = -1;
    H5Sclose(s);
    dims[0] = (size_t)h[0];
    dims[1] = rank == 2 ? (size_t)h[1] : 0;
    return rank;
}

/* ---------- paths ---------- */

int kvz_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;
    int e = fsync(fd) != 0 ? errno : 0;
    /* Directories on some filesystems refuse fsync; that is not a write error. */
    if (e == EINVAL || e == EBADF)
        e = 0;
    close(fd);
    return e;
}

char *kvz_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}
