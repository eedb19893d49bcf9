/* test_forward_parity_fixture: reads the forward-pass reference fixtures of
 * tests/reference/make_forward_fixtures.py (tests/fixtures/forward/<m>.json
 * index + <m>.bin raw little-endian f32/i32 arrays) and compares tensors by
 * relative norm ||got - ref|| / ||ref||. Header-only (static) because each
 * tests/test_*.c is its own executable. */
#ifndef TEST_FORWARD_PARITY_FIXTURE_H
#define TEST_FORWARD_PARITY_FIXTURE_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvz_file.h"
#include "kvz_test.h"

typedef struct fwd_fixture {
    json_t *index; /* the whole JSON document */
    char *data;    /* the .bin contents */
    size_t size;
} fwd_fixture;

typedef struct fwd_array {
    const void *data; /* NULL when absent */
    size_t shape[4], n_dims, numel;
} fwd_array;

/* The whole file (kvz_file_read_all), or NULL. */
static inline char *fwd_read_all(const char *path, size_t *size)
{
    char *buf = NULL;
    return kvz_file_read_all(path, &buf, size, NULL) == KVZ_OK ? buf : NULL;
}

/* Loads tests/fixtures/<dir>/<model>.{json,bin} (the same layout in every
 * area); 0 on success (failure recorded). fwd_fixture_load: dir "forward". */
static inline int fwd_fixture_load_from(const char *dir, const char *model, fwd_fixture *fx)
{
    char rel[256];
    json_error_t jerr;
    memset(fx, 0, sizeof *fx);
    snprintf(rel, sizeof rel, "%s/%s.json", dir, model);
    fx->index = json_load_file(kvz_test_fixture(rel), 0, &jerr);
    KVZ_CHECK(fx->index != NULL, "%s: %s", rel, jerr.text);
    snprintf(rel, sizeof rel, "%s/%s.bin", dir, model);
    fx->data = fwd_read_all(kvz_test_fixture(rel), &fx->size);
    KVZ_CHECK(fx->data != NULL, "cannot read %s", rel);
    return fx->index && fx->data ? 0 : -1;
}

static inline int fwd_fixture_load(const char *model, fwd_fixture *fx)
{
    return fwd_fixture_load_from("forward", model, fx);
}

static inline void fwd_fixture_free(fwd_fixture *fx)
{
    json_decref(fx->index);
    free(fx->data);
}

/* The array "<prefix>.<key>" (data NULL when the index lacks it). */
static inline fwd_array fwd_get(const fwd_fixture *fx, const char *prefix, const char *key)
{
    fwd_array a = {0};
    char name[128];
    snprintf(name, sizeof name, "%s.%s", prefix, key);
    json_t *e = json_object_get(json_object_get(fx->index, "arrays"), name);
    if (!e)
        return a;
    size_t off = (size_t)json_integer_value(json_object_get(e, "offset"));
    json_t *shape = json_object_get(e, "shape");
    a.n_dims = json_array_size(shape);
    a.numel = 1;
    for (size_t i = 0; i < a.n_dims && i < 4; i++) {
        a.shape[i] = (size_t)json_integer_value(json_array_get(shape, i));
        a.numel *= a.shape[i];
    }
    KVZ_CHECK(off + 4 * a.numel <= fx->size, "%s: [%zu, +%zu) beyond the .bin", name, off, 4 * a.numel);
    if (off + 4 * a.numel <= fx->size)
        a.data = fx->data + off;
    return a;
}

static inline size_t fwd_meta_size(const fwd_fixture *fx, const char *key)
{
    return (size_t)json_integer_value(json_object_get(fx->index, key));
}

/* ||got - ref|| / ||ref|| in double. */
static inline double fwd_rel_norm(const float *got, const float *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0.0)
        return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* Checks rel-norm <= tol; on failure prints the worst elements. Updates *worst. */
static inline void fwd_check_rel(const char *what, const float *got, const float *ref, size_t n, double tol,
                          double *worst)
{
    double r = fwd_rel_norm(got, ref, n);
    if (!(r <= *worst))
        *worst = r;
    KVZ_CHECK(r <= tol, "%s: ||delta||/||ref|| = %.3g > %.1g", what, r, tol);
    if (!(r <= tol))
        kvz_test_allclose(what, got, ref, n, 0.0, 0.0); /* prints the worst elements */
}

#endif
