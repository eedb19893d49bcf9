/* cmd_export: `kvzap export`: turn the surrogates `kvzap train` wrote into
 * the layout kvpress loads (config.json + model.safetensors, BF16 by
 * default) or a GGUF file, with provenance and suggested thresholds; and
 * `kvzap export --check PATH`, which re-reads an export and verifies it. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../common/kvz_file.h"
#include "../model/kvz_json.h"
#include "../trainer/export.h"
#include "cli_run_config.h"
#include "commands.h"

static const char USAGE[] =
    "usage: kvzap export [--input T] [--output E] [--format kvpress|gguf] [--kind linear|mlp]\n"
    "                    [--dtype bfloat16|float16|float32] [--config FILE]\n"
    "                    [--set KEY=VALUE]... [--overwrite] [--allow-partial]\n"
    "       kvzap export --check PATH\n";

/* Shorthands of config keys (docs/configuration.md "Command-line flags"). */
static const cli_flag FLAGS[] = {
    {"--input", "train.output", NULL, "T"},
    {"--output", "export.output", NULL, "E"},
    {"--format", "export.format", NULL, "F"},
    {"--kind", "export.model", NULL, "K"},
    {"--dtype", "export.dtype", NULL, "DT"},
    {NULL, NULL, NULL, NULL},
};

static const char HELP_HEAD[] =
    "\nReads <train.output>/<export.model> (written by kvzap train) and writes\n"
    "export.output in export.format (kvpress: a directory with config.json and\n"
    "model.safetensors, as kvpress's KVzapModel.from_pretrained loads it; gguf: one\n"
    "file) and export.dtype (bfloat16 by default). config.json / GGUF metadata carry\n"
    "the source model, the dataset, the held-out R^2 per layer and the thresholds tau\n"
    "that prune 1/2, 2/3 and 3/4 of the held-out KV pairs. Written atomically.\n\n"
    "Flags (each is the --set it names; flags and --set apply in command-line\n"
    "order after --config, and the last one given for a key wins):\n";

static const char HELP[] =
    "\nOther options:\n"
    "  --config FILE     YAML run configuration (train.output, export.*)\n"
    "  --set KEY=VALUE   e.g. --set export.format=gguf --set export.output=s.gguf\n"
    "  --overwrite       replace an existing export\n"
    "  --allow-partial   export even if some layers were not trained (zero weights)\n"
    "  --check PATH      verify an export (names, shapes, dtypes, config keys); prints\n"
    "                    a summary, exit 1 with the first problem\n";

typedef struct export_args {
    cli_run_args run; /* --config, --set (and --threads, --quiet) and FLAGS */
    const char *check;
    int overwrite, allow_partial;
} export_args;

static int parse_args(int argc, char **argv, export_args *a)
{
    for (int i = 1; i < argc; i++) {
        int rc = cli_run_option("export", USAGE, argc, argv, &i, &a->run);
        if (rc > 0)
            return rc;
        if (rc == 0)
            continue;
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(arg, "--overwrite"))
            a->overwrite = 1;
        else if (!strcmp(arg, "--allow-partial"))
            a->allow_partial = 1;
        else if (!strcmp(arg, "--check") && has_value)
            a->check = argv[++i];
        else
            return cli_usage_error("export", has_value || arg[0] != '-' ? "unexpected argument"
                                                                        : "option needs a value",
                                   USAGE);
    }
    return 0;
}

/* Verifies the export at path and prints its one-line summary. */
static int check_and_print(const char *path, kvz_error *err)
{
    kvz_export_report r;
    int rc = kvz_export_check(path, &r, err);
    if (rc)
        return rc;
    printf("%s: ok: %s %s export, %s, %zu layers, input %zu, hidden %zu, output %zu, "
           "%zu tensors, %zu parameters",
           path, r.format == KVZ_EXPORT_GGUF ? "GGUF" : "kvpress",
           r.kind == KVZ_SURROGATE_KIND_MLP ? "MLP" : "Linear", kvz_export_dtype_name(r.dtype),
           r.n_layers, r.d_in, r.d_hidden, r.d_out, r.n_tensors, r.n_params);
    if (r.target_arch[0])
        printf(", for %s", r.target_arch);
    for (size_t i = 0; i < r.n_thresholds; i++)
        printf("%s%g", i ? ", " : "; suggested tau: ", r.thresholds[i]);
    printf("\n");
    return KVZ_OK;
}

static int run_check(const char *path)
{
    kvz_error err = {0};
    return check_and_print(path, &err) ? cli_error("export", err.msg) : 0;
}

/* Provenance from <train.output>/metrics.json and compression.csv. */
typedef struct provenance {
    json_t *metrics;   /* metrics.json */
    char *summary;     /* {"r2": [...per layer...], "layers": [...]} */
    double tau[3];
    size_t n_tau, n_layers_trained;
} provenance;

/* tau of the first grid point where the model prunes >= target. A missing
 * compression.csv means no thresholds; one that cannot be read is an error
 * (1, message printed), never silently an export without them. */
static int read_thresholds(const char *train_dir, const char *model, provenance *p)
{
    char *path = kvz_path_join(train_dir, "compression.csv");
    if (!path)
        return cli_error("export", "out of memory");
    errno = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        int rc = e == ENOENT ? 0 : 1;
        if (rc)
            fprintf(stderr, "kvzap export: %s: %s\n", path, strerror(e));
        free(path);
        return rc;
    }
    const double targets[3] = {0.5, 2.0 / 3.0, 0.75};
    double found[3] = {NAN, NAN, NAN};
    char line[256], name[64];
    double tau, frac;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%63[^,],%lf,%lf", name, &tau, &frac) == 3 && !strcmp(name, model))
            for (int k = 0; k < 3; k++)
                if (isnan(found[k]) && frac >= targets[k])
                    found[k] = tau;
    int e = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (e) {
        fprintf(stderr, "kvzap export: %s: cannot read: %s\n", path, strerror(e));
        free(path);
        return 1;
    }
    free(path);
    for (int k = 0; k < 3; k++)
        if (!isnan(found[k]))
            p->tau[p->n_tau++] = found[k];
    return 0;
}

static int read_provenance(const char *train_dir, const char *model, provenance *p)
{
    char *path = kvz_path_join(train_dir, "metrics.json");
    if (!path)
        return cli_error("export", "out of memory");
    json_error_t je;
    /* a failed allocation inside jansson may also leave a mangled value
     * behind a successful load (model/kvz_json.h) */
    kvz_json_begin();
    p->metrics = json_load_file(path, 0, &je);
    if (kvz_json_failed() || (!p->metrics && json_error_code(&je) == json_error_out_of_memory)) {
        json_decref(p->metrics);
        p->metrics = NULL;
        fprintf(stderr, "kvzap export: %s: out of memory\n", path);
        free(path);
        return 1;
    }
    if (!p->metrics) {
        fprintf(stderr, "kvzap export: %s: %s (was kvzap train run to the end?)\n", path, je.text);
        free(path);
        return 1;
    }
    free(path);
    json_t *layers = json_object_get(p->metrics, "layers"), *r2 = json_array(), *ids = json_array();
    int bad = !r2 || !ids;
    kvz_json_begin();
    size_t i;
    json_t *lo;
    json_array_foreach(layers, i, lo)
    {
        if (bad)
            break;
        json_t *r = json_object_get(json_object_get(lo, model), "r2");
        bad = json_array_append(ids, json_object_get(lo, "layer")) ||
              json_array_append(r2, r ? r : json_null());
    }
    p->n_layers_trained = json_array_size(layers);
    /* "o" steals ids and r2, also when the pack fails */
    json_t *s = bad ? NULL : json_pack("{s:o, s:o}", "trained_layers", ids, "r2", r2);
    if (bad) {
        json_decref(ids);
        json_decref(r2);
    }
    p->summary = s ? json_dumps(s, JSON_COMPACT) : NULL;
    json_decref(s);
    if (!p->summary || kvz_json_failed())
        return cli_error("export", "out of memory");
    return read_thresholds(train_dir, model, p);
}

static int load_config(const export_args *a, kvz_run_config *cfg)
{
    kvz_error err = {0};
    int rc = kvz_config_load_full(a->run.config, a->run.sets, a->run.n_sets, cfg, &err);
    rc = rc ? rc : kvz_config_require(cfg, "train.output", &err);
    rc = rc ? rc : kvz_config_require(cfg, "export.output", &err);
    if (rc)
        kvz_config_free(cfg); /* idempotent: load_full already freed it on its own failures */
    return rc ? cli_error("export", err.msg) : 0;
}

static int run_export(const export_args *a)
{
    kvz_run_config cfg;
    if (load_config(a, &cfg))
        return 1;
    const char *model = cfg.export.model == KVZ_EXPORT_MODEL_LINEAR ? "linear" : "mlp";
    char *src = kvz_path_join(cfg.train.output, model);
    provenance prov = {0};
    kvz_surrogate *s = NULL;
    kvz_error err = {0};
    int rc = src ? read_provenance(cfg.train.output, model, &prov)
                 : cli_error("export", "out of memory");
    if (rc == 0 && kvz_export_load(src, &s, &err))
        rc = cli_error("export", err.msg);
    if (rc == 0 && s && prov.n_layers_trained < s->n_layers && !a->allow_partial) {
        fprintf(stderr,
                "kvzap export: %s: only %zu of %zu layers were trained; kvpress needs every "
                "layer (train all, or pass --allow-partial to export zeros for the rest)\n",
                cfg.train.output, prov.n_layers_trained, s->n_layers);
        rc = 1;
    }
    if (rc == 0) {
        json_t *m = prov.metrics;
        kvz_export_info info = {json_string_value(json_object_get(m, "model")),
                                json_string_value(json_object_get(m, "architecture")),
                                json_string_value(json_object_get(m, "dataset")), prov.summary,
                                prov.tau, prov.n_tau,
                                json_string_value(json_object_get(m, "model_sha256"))};
        kvz_export_options o = kvz_export_default_options();
        o.format = (kvz_export_format)cfg.export.format;
        o.dtype = (kvz_export_dtype)cfg.export.dtype;
        o.overwrite = a->overwrite;
        o.info = &info;
        if (kvz_export_write(s, cfg.export.output, &o, &err)) {
            rc = cli_error("export", err.msg);
        } else if (check_and_print(cfg.export.output, &err)) {
            /* an export that cannot be verified (out of memory, or a bug)
             * must not stay behind looking complete */
            kvz_remove_tree(cfg.export.output);
            fprintf(stderr, "kvzap export: %s: written, but the check failed, removed it: %s\n",
                    cfg.export.output, err.msg);
            rc = 1;
        }
    }
    kvz_surrogate_free(s);
    json_decref(prov.metrics);
    free(prov.summary);
    free(src);
    kvz_config_free(&cfg);
    return rc;
}

int cmd_export(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP_HEAD);
        cli_print_flags(FLAGS);
        printf("%s", HELP);
        return 0;
    }
    export_args a = {0};
    int rc = cli_run_args_init("export", argc, &a.run);
    a.run.flags = FLAGS;
    rc = rc ? rc : parse_args(argc, argv, &a);
    if (rc == 0)
        rc = a.check ? run_check(a.check) : run_export(&a);
    cli_run_args_free(&a.run);
    return rc;
}
