/* fuzz_export: what the export targets do with an export path
 * (header-only): kvz_export_check (a report), kvz_export_load, and, for a
 * surrogate that loads, kvz_surrogate_predict on two rows of every layer
 * (what `kvzap score` runs); the loaded shapes must match the report. */
#ifndef KVZ_FUZZ_EXPORT_H
#define KVZ_FUZZ_EXPORT_H

#include <stdio.h>
#include <stdlib.h>

#include "trainer/export.h"
#include "trainer/surrogate.h"

#define KVZ_FUZZ_EXPORT_MAX_DIM (1u << 16)

static void kvz_fuzz_export_read(const char *path)
{
    kvz_export_report rep;
    kvz_error err = {0};
    int checked = kvz_export_check(path, &rep, &err) == KVZ_OK;
    kvz_surrogate *s = NULL;
    int loaded = kvz_export_load(path, &s, &err) == KVZ_OK;
    if (checked != loaded) {
        fprintf(stderr, "fuzz: kvz_export_check %s but kvz_export_load %s (%s)\n",
                checked ? "passes" : "fails", loaded ? "passes" : "fails", err.msg);
        abort();
    }
    if (!loaded)
        return;
    if (s->n_layers != rep.n_layers || s->d_in != rep.d_in || s->d_out != rep.d_out ||
        s->kind != rep.kind) {
        fprintf(stderr, "fuzz: the loaded surrogate's shape differs from the check's report\n");
        abort();
    }
    if (s->d_in <= KVZ_FUZZ_EXPORT_MAX_DIM && s->d_out <= KVZ_FUZZ_EXPORT_MAX_DIM) {
        float *x = calloc(2 * s->d_in + 1, sizeof *x), *y = malloc((2 * s->d_out + 1) * sizeof *y);
        if (!x || !y)
            abort();
        for (size_t k = 0; k < s->d_in; k++)
            x[s->d_in + k] = (float)k / (float)(s->d_in ? s->d_in : 1) - 0.5f;
        for (size_t l = 0; l < s->n_layers; l++)
            kvz_surrogate_predict(s, l, x, 2, y, NULL, &err);
        free(x);
        free(y);
    }
    kvz_surrogate_free(s);
}

#endif
