/* kvz_test_gpu: guarded device arrays and the seeded fill of kvz_test_gpu.h. */
#include "kvz_test_gpu.h"

#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"

kvz_backend *kvz_test_cuda(void)
{
    static kvz_backend *be;
    static int tried;
    if (!tried) {
        tried = 1;
        kvz_backend_options o = {KVZ_BACKEND_CUDA, 0, 0};
        kvz_error err = {0};
        if (kvz_backend_open(&o, &be, &err) != KVZ_OK)
            be = NULL;
    }
    return be;
}

void kvz_test_fill_guard(float *v, size_t n)
{
    const uint32_t bits = KVZ_GUARD_BITS;
    for (size_t i = 0; i < n; i++)
        memcpy(&v[i], &bits, sizeof bits);
}

int kvz_test_guard_intact(const float *v, size_t n)
{
    const uint32_t bits = KVZ_GUARD_BITS;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&v[i], &bits, sizeof bits) != 0)
            return 0;
    return 1;
}

int kvz_guarded_create(kvz_guarded *g, const float *host, size_t n)
{
    kvz_error err = {0};
    size_t total = n + 2 * KVZ_GUARD;
    float *tmp = malloc(total * sizeof *tmp);
    memset(g, 0, sizeof *g);
    KVZ_CHECK(tmp != NULL, "out of memory");
    if (!tmp)
        return KVZ_ENOMEM;
    kvz_test_fill_guard(tmp, total);
    if (host)
        memcpy(tmp + KVZ_GUARD, host, n * sizeof *host);
    kvz_backend *be = kvz_test_cuda();
    int rc = be ? kvz_backend_alloc(be, KVZ_F32, total, "a guarded test array", &g->buf, &err)
                : kvz_fail(&err, KVZ_EUNSUPPORTED, "no cuda backend");
    g->base = kvz_buf_f32(g->buf);
    if (rc == KVZ_OK)
        rc = kvz_backend_upload(be, g->base, tmp, total * sizeof *tmp, &err);
    KVZ_CHECK_OK(rc, err);
    free(tmp);
    g->data = g->base ? g->base + KVZ_GUARD : NULL;
    g->n = n;
    return rc;
}

/* The whole allocation (guards included) into a new host buffer, guards checked. */
static float *download_checked(const kvz_guarded *g, const char *what)
{
    kvz_error err = {0};
    size_t total = g->n + 2 * KVZ_GUARD;
    float *tmp = g->base ? malloc(total * sizeof *tmp) : NULL;
    KVZ_CHECK(tmp != NULL, "%s: no device array or out of memory", what);
    if (!tmp)
        return NULL;
    int rc = kvz_backend_download(kvz_test_cuda(), tmp, g->base, total * sizeof *tmp, &err);
    KVZ_CHECK_OK(rc, err);
    KVZ_CHECK(kvz_test_guard_intact(tmp, KVZ_GUARD), "%s: front guard overwritten", what);
    KVZ_CHECK(kvz_test_guard_intact(tmp + KVZ_GUARD + g->n, KVZ_GUARD),
              "%s: back guard overwritten", what);
    return tmp;
}

void kvz_guarded_fetch(const kvz_guarded *g, float *host, const char *what)
{
    float *tmp = download_checked(g, what);
    if (tmp)
        memcpy(host, tmp + KVZ_GUARD, g->n * sizeof *host);
    free(tmp);
}

void kvz_guarded_check_free(kvz_guarded *g, const float *host, const char *what)
{
    float *tmp = download_checked(g, what);
    if (tmp)
        KVZ_CHECK(memcmp(tmp + KVZ_GUARD, host, g->n * sizeof *host) == 0, "%s: input modified",
                  what);
    free(tmp);
    kvz_guarded_free(g);
}

void kvz_guarded_free(kvz_guarded *g)
{
    if (g->buf.data)
        kvz_backend_free(kvz_test_cuda(), &g->buf);
    memset(g, 0, sizeof *g);
}

void kvz_test_random_fill(uint64_t *state, float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        *state ^= *state << 13, *state ^= *state >> 7, *state ^= *state << 17;
        v[i] = scale * (2.0f * (float)(*state >> 40) / (float)(1u << 24) - 1.0f);
    }
}
