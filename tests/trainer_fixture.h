/* trainer_fixture: reads the tests/fixtures/trainer/<stem>.{json,bin} pairs
 * written by tests/reference/make_trainer_fixtures.py (a JSON "arrays" table
 * of {offset, dtype f32|f64|i32, shape} into a little-endian .bin). Header-only,
 * for tests/test_ridge.c and tests/test_mlp.c. */
#ifndef KVZ_TRAINER_FIXTURE_H
#define KVZ_TRAINER_FIXTURE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"

typedef struct trainer_fixture {
    json_t *meta;
    unsigned char *bin;
    size_t bin_size;
} trainer_fixture;

static inline int trainer_fixture_open(trainer_fixture *fx, const char *stem)
{
    char rel[256];
    memset(fx, 0, sizeof *fx);
    snprintf(rel, sizeof rel, "trainer/%s.json", stem);
    json_error_t jerr;
    fx->meta = json_load_file(kvz_test_fixture(rel), 0, &jerr);
    if (!fx->meta) {
        fprintf(stderr, "%s: %s\n", rel, jerr.text);
        return -1;
    }
    snprintf(rel, sizeof rel, "trainer/%s.bin", stem);
    FILE *f = fopen(kvz_test_fixture(rel), "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", rel);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    fx->bin_size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    fx->bin = malloc(fx->bin_size ? fx->bin_size : 1);
    size_t got = fread(fx->bin, 1, fx->bin_size, f);
    fclose(f);
    return got == fx->bin_size ? 0 : -1;
}

static inline void trainer_fixture_close(trainer_fixture *fx)
{
    json_decref(fx->meta);
    free(fx->bin);
}

static inline size_t trainer_fixture_int(const trainer_fixture *fx, const char *key)
{
    return (size_t)json_integer_value(json_object_get(fx->meta, key));
}

/* Array `name` converted to double (malloc'd; *n = element count); NULL if absent. */
static inline double *trainer_fixture_f64(const trainer_fixture *fx, const char *name, size_t *n)
{
    json_t *a = json_object_get(json_object_get(fx->meta, "arrays"), name);
    if (!a) {
        fprintf(stderr, "fixture array '%s' missing\n", name);
        return NULL;
    }
    size_t count = 1, idx;
    json_t *d;
    json_array_foreach(json_object_get(a, "shape"), idx, d) count *= (size_t)json_integer_value(d);
    size_t off = (size_t)json_integer_value(json_object_get(a, "offset"));
    const char *dt = json_string_value(json_object_get(a, "dtype"));
    size_t esz = strcmp(dt, "f64") == 0 ? 8 : 4;
    if (off + count * esz > fx->bin_size)
        return NULL;
    double *out = malloc((count ? count : 1) * sizeof *out);
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = fx->bin + off + i * esz;
        if (strcmp(dt, "f64") == 0) {
            double v;
            memcpy(&v, p, 8);
            out[i] = v;
        } else if (strcmp(dt, "f32") == 0) {
            float v;
            memcpy(&v, p, 4);
            out[i] = v;
        } else {
            int32_t v;
            memcpy(&v, p, 4);
            out[i] = v;
        }
    }
    if (n)
        *n = count;
    return out;
}

static inline float *trainer_fixture_f32(const trainer_fixture *fx, const char *name, size_t *n)
{
    size_t count;
    double *d = trainer_fixture_f64(fx, name, &count);
    if (!d)
        return NULL;
    float *out = malloc((count ? count : 1) * sizeof *out);
    for (size_t i = 0; i < count; i++)
        out[i] = (float)d[i];
    free(d);
    if (n)
        *n = count;
    return out;
}

static inline size_t *trainer_fixture_sizes(const trainer_fixture *fx, const char *name, size_t *n)
{
    size_t count;
    double *d = trainer_fixture_f64(fx, name, &count);
    if (!d)
        return NULL;
    size_t *out = malloc((count ? count : 1) * sizeof *out);
    for (size_t i = 0; i < count; i++)
        out[i] = (size_t)d[i];
    free(d);
    if (n)
        *n = count;
    return out;
}

/* max_i |got - ref| / max_i |ref|, printing the worst element. */
static inline double trainer_rel_err(const char *what, const double *got, const double *ref, size_t n)
{
    double amax = 0, worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double a = ref[i] < 0 ? -ref[i] : ref[i], d = got[i] - ref[i];
        if (a > amax)
            amax = a;
        if (d < 0)
            d = -d;
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    double rel = amax > 0 ? worst / amax : worst;
    printf("%s: max |diff| / max |ref| = %.3e (worst element %zu: got %.10g ref %.10g)\n", what,
           rel, wi, n ? got[wi] : 0.0, n ? ref[wi] : 0.0);
    return rel;
}

#endif
