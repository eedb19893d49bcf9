/* score_export: load a KVzap surrogate export and score hidden states with
 * the installed libkvzap (docs/runtime-api.md).
 *
 *   score_export EXPORT [LAYER [ROWS]]
 *
 * EXPORT  a kvpress export directory (config.json + model.safetensors, as
 *         `kvzap export` and `kvzap train` write them under linear/ or mlp/)
 *         or a .gguf export;
 * LAYER   the model layer whose module scores the rows (default 0);
 * ROWS    a text file of hidden states, d_in whitespace-separated numbers per
 *         row ("-": standard input). Without it, 3 synthetic rows are scored.
 *
 * Prints a description of the export on stderr, then one line per row on
 * stdout: the d_out (number of KV heads) predicted log-scores of that token,
 * in head order. Exit status 0, 1 on a library error, 2 on a usage error.
 *
 * Build against an installed tree (PREFIX = the cmake --install prefix):
 *   export PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
 *   cc -std=c11 score_export.c $(pkg-config --cflags kvzap) \
 *      $(pkg-config --static --libs kvzap) -o score_export
 * or with CMake: docs/examples/CMakeLists.txt (find_package(kvzap)). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvzap/common/kvz_error.h>
#include <kvzap/trainer/export.h>
#include <kvzap/trainer/surrogate.h>

static const char *kind_name(int kind)
{
    return kind == KVZ_SURROGATE_KIND_MLP ? "mlp" : "linear";
}

/* Reads every number in f into a growing array; *count is how many. */
static float *read_numbers(FILE *f, size_t *count)
{
    size_t n = 0, cap = 256;
    float *v = malloc(cap * sizeof *v);
    if (!v)
        return NULL;
    float x;
    while (fscanf(f, "%f", &x) == 1) {
        if (n == cap) {
            float *grown = realloc(v, 2 * cap * sizeof *v);
            if (!grown) {
                free(v);
                return NULL;
            }
            v = grown;
            cap *= 2;
        }
        v[n++] = x;
    }
    if (!feof(f)) { /* something that is not a number */
        free(v);
        errno = EINVAL;
        return NULL;
    }
    *count = n;
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: score_export EXPORT [LAYER [ROWS|-]]\n");
        return 2;
    }
    const char *path = argv[1];
    size_t layer = 0;
    if (argc >= 3) {
        char *end;
        errno = 0;
        unsigned long long l = strtoull(argv[2], &end, 10);
        if (errno || end == argv[2] || *end || argv[2][0] == '-') {
            fprintf(stderr, "score_export: LAYER must be a layer index, not '%s'\n", argv[2]);
            return 2;
        }
        layer = (size_t)l;
    }

    /* 1. Load the export. kvz_export_load runs the same checks as
     *    kvz_export_check (config keys, tensor names, shapes, dtypes, finite
     *    values) and converts BF16/F16 tensors to float32; the report is only
     *    needed here to print what the export holds. */
    kvz_error err;
    kvz_error_clear(&err);
    kvz_export_report report;
    if (kvz_export_check(path, &report, &err) != KVZ_OK) {
        fprintf(stderr, "score_export: %s (%s)\n", err.msg, kvz_strerror(err.code));
        return 1;
    }
    kvz_surrogate *s = NULL;
    if (kvz_export_load(path, &s, &err) != KVZ_OK) {
        fprintf(stderr, "score_export: %s (%s)\n", err.msg, kvz_strerror(err.code));
        return 1;
    }
    fprintf(stderr, "%s: %s %s, %zu layers, d_in %zu, d_hidden %zu, d_out %zu\n", path,
            kind_name(s->kind), kvz_export_dtype_name(report.dtype), s->n_layers, s->d_in,
            s->d_hidden, s->d_out);
    /* Thresholds tau the export suggests (kvzap train's metrics): a runtime
     * prunes the KV pairs whose predicted log-score is below tau. */
    for (size_t i = 0; i < report.n_thresholds; i++)
        fprintf(stderr, "%s%g%s", i ? ", " : "suggested thresholds: ", report.thresholds[i],
                i + 1 == report.n_thresholds ? "\n" : "");
    if (layer >= s->n_layers) {
        fprintf(stderr, "score_export: layer %zu out of range (%zu layers)\n", layer,
                s->n_layers);
        kvz_surrogate_free(s);
        return 2;
    }

    /* 2. The hidden states: n rows of d_in floats, row-major. */
    size_t n, count = 0;
    float *x;
    if (argc == 4) {
        FILE *f = strcmp(argv[3], "-") ? fopen(argv[3], "r") : stdin;
        if (!f) {
            fprintf(stderr, "score_export: %s: %s\n", argv[3], strerror(errno));
            kvz_surrogate_free(s);
            return 1;
        }
        x = read_numbers(f, &count);
        if (f != stdin)
            fclose(f);
        if (!x || count == 0 || count % s->d_in) {
            fprintf(stderr, "score_export: %s: expected rows of %zu numbers (read %zu%s)\n",
                    argv[3], s->d_in, count, x ? "" : ", then something else");
            free(x);
            kvz_surrogate_free(s);
            return 1;
        }
        n = count / s->d_in;
    } else {
        n = 3;
        x = malloc(n * s->d_in * sizeof *x);
        if (!x) {
            kvz_surrogate_free(s);
            return 1;
        }
        for (size_t i = 0; i < n * s->d_in; i++)
            x[i] = (float)((int)((i * 37 + 11) % 23) - 11) / 8.0f;
    }

    /* 3. Score: y[n, d_out] = module_layer(x[n, d_in]). scratch NULL: the
     *    MLP's hidden activations are allocated internally. */
    float *y = malloc(n * s->d_out * sizeof *y);
    int rc = y ? kvz_surrogate_predict(s, layer, x, n, y, NULL, &err)
               : kvz_fail(&err, KVZ_ENOMEM, "out of memory");
    if (rc != KVZ_OK) {
        fprintf(stderr, "score_export: %s (%s)\n", err.msg, kvz_strerror(rc));
    } else {
        for (size_t i = 0; i < n; i++)
            for (size_t h = 0; h < s->d_out; h++)
                printf("%.9g%c", y[i * s->d_out + h], h + 1 == s->d_out ? '\n' : ' ');
    }
    free(y);
    free(x);
    kvz_surrogate_free(s);
    return rc == KVZ_OK ? 0 : 1;
}
