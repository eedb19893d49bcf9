/* cli_run_config: shared --config/--set/--threads/--quiet handling (see the header). */
#include "cli_run_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_forward.h"
#include "commands.h"

int cli_run_args_init(const char *cmd, int argc, cli_run_args *a)
{
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    a->owned = calloc((size_t)argc + 1, sizeof *a->owned);
    return a->sets && a->owned ? 0 : cli_error(cmd, "out of memory");
}

void cli_run_args_free(cli_run_args *a)
{
    for (size_t i = 0; a->owned && i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->sets);
    a->sets = NULL;
    a->owned = NULL;
}

void cli_print_flags(const cli_flag *flags)
{
    for (const cli_flag *f = flags; f && f->flag; f++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", f->flag, f->arg ? " " : "", f->arg ? f->arg : "");
        if (f->value)
            printf("  %-22s --set %s=%s\n", left, f->key, f->value);
        else
            printf("  %-22s --set %s=%s\n", left, f->key, f->arg);
    }
}

/* argv[*i] as one of a->flags: 0 consumed, 2 usage error, -1 not a flag. */
static int flag_option(const char *cmd, const char *usage, int argc, char **argv, int *i,
                       cli_run_args *a)
{
    const char *arg = argv[*i];
    for (const cli_flag *f = a->flags; f && f->flag; f++) {
        size_t n = strlen(f->flag);
        const char *value = NULL;
        if (strncmp(arg, f->flag, n) != 0 || (arg[n] && (arg[n] != '=' || f->value)))
            continue;
        if (f->value)
            value = f->value;
        else if (arg[n] == '=')
            value = arg + n + 1;
        else if (*i + 1 < argc)
            value = argv[++*i];
        else
            return cli_usage_error(cmd, "option needs a value", usage);
        size_t len = strlen(f->key) + strlen(value) + 2;
        char *kv = malloc(len);
        if (!kv)
            return cli_error(cmd, "out of memory");
        snprintf(kv, len, "%s=%s", f->key, value);
        a->owned[a->n_owned++] = kv;
        a->sets[a->n_sets++] = kv;
        return 0;
    }
    return -1;
}

int cli_run_option(const char *cmd, const char *usage, int argc, char **argv, int *i,
                   cli_run_args *a)
{
    const char *arg = argv[*i];
    int has_value = *i + 1 < argc;
    int rc = flag_option(cmd, usage, argc, argv, i, a);
    if (rc >= 0)
        return rc;
    if (!strcmp(arg, "--quiet") || !strcmp(arg, "-q"))
        a->quiet = 1;
    else if (!strncmp(arg, "--set=", 6))
        a->sets[a->n_sets++] = arg + 6;
    else if (strcmp(arg, "--config") && strcmp(arg, "--set") && strcmp(arg, "--threads"))
        return -1;
    else if (!has_value)
        return cli_usage_error(cmd, "option needs a value", usage);
    else if (!strcmp(arg, "--config"))
        a->config = argv[++*i];
    else if (!strcmp(arg, "--set"))
        a->sets[a->n_sets++] = argv[++*i];
    else
        return cli_parse_threads(cmd, argv[++*i], &a->threads);
    return 0;
}

int cli_run_config_load(const char *cmd, const cli_run_args *a, int with_default_model,
                        const char *const *required, kvz_run_config *cfg)
{
    kvz_error err = {0};
    int rc = kvz_config_init(cfg, &err);
    if (rc == KVZ_OK && with_default_model && !cfg->model.path)
        rc = kvz_config_set(cfg, "model.path", cli_default_model(), &err);
    rc = rc ? rc : a->config ? kvz_config_apply_file(cfg, a->config, &err) : KVZ_OK;
    for (size_t i = 0; rc == KVZ_OK && i < a->n_sets; i++)
        rc = kvz_config_set_arg(cfg, a->sets[i], &err);
    if (rc == KVZ_OK && a->threads > 0) {
        char text[32];
        snprintf(text, sizeof text, "%d", a->threads);
        rc = kvz_config_set(cfg, "model.threads", text, &err);
    }
    rc = rc ? rc : kvz_config_validate(cfg, &err);
    for (size_t k = 0; rc == KVZ_OK && required && required[k]; k++)
        rc = kvz_config_require(cfg, required[k], &err);
    if (rc) {
        kvz_config_free(cfg); /* safe after a failed init: it leaves cfg zeroed */
        return cli_error(cmd, err.msg);
    }
    return 0;
}
