/* fuzz_common: see fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kvz_file.h"

#ifndef KVZ_FUZZ_FIXTURES
#define KVZ_FUZZ_FIXTURES "tests/fixtures"
#endif

static char g_tmpdir[1024];

static void remove_tmpdir(void)
{
    if (g_tmpdir[0])
        kvz_remove_tree(g_tmpdir);
}

const char *kvz_fuzz_tmpdir(void)
{
    if (g_tmpdir[0])
        return g_tmpdir;
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    int n = snprintf(g_tmpdir, sizeof g_tmpdir, "%s/kvzfuzz.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof g_tmpdir || !mkdtemp(g_tmpdir)) {
        fprintf(stderr, "fuzz: cannot create a temporary directory under %s\n", base);
        abort();
    }
    atexit(remove_tmpdir);
    return g_tmpdir;
}

const char *kvz_fuzz_tmp_path(const char *name, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%s", kvz_fuzz_tmpdir(), name);
    if (n < 0 || (size_t)n >= cap)
        abort();
    return buf;
}

void kvz_fuzz_write_file(const char *path, const void *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

const char *kvz_fuzz_fixture_path(const char *rel, char *buf, size_t cap)
{
    const char *dir = getenv("KVZ_FIXTURES");
    if (!dir || !*dir)
        dir = KVZ_FUZZ_FIXTURES;
    int n = snprintf(buf, cap, "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= cap)
        abort();
    return buf;
}

void kvz_fuzz_copy_fixture(const char *rel, const char *path)
{
    char src[2048];
    char *text = NULL;
    size_t len = 0;
    kvz_error err = {0};
    if (kvz_file_read_all(kvz_fuzz_fixture_path(rel, src, sizeof src), &text, &len, &err)) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    kvz_fuzz_write_file(path, text, len);
    free(text);
}

char *kvz_fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

uint32_t kvz_fuzz_le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
