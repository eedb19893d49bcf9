/* cmd_config: `kvzap config` validates a YAML run configuration (with --set
 * overrides) and prints the full effective configuration as YAML. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "commands.h"

static const char USAGE[] = "usage: kvzap config [FILE] [--set KEY=VALUE]...\n";

static const char HELP[] =
    "\nLoads FILE (YAML; omit it for the defaults), applies each --set override with\n"
    "the same typed parsing, checks the result and prints every key with its\n"
    "effective value as YAML (which reads back to the same configuration).\n\n"
    "  --set KEY=VALUE   e.g. --set oracle.n_tokens=300 --set train.layers=0,1,2\n"
    "                    (strings verbatim; an empty value unsets an optional string)\n\n"
    "Keys, types and defaults: docs/configuration.md.\n";

int cmd_config(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("%s%s", USAGE, HELP);
        return 0;
    }
    const char *path = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    size_t n_sets = 0;
    if (!sets)
        return cli_error("config", "out of memory");
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (!strcmp(argv[i], "--set") && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (!strncmp(argv[i], "--set=", 6))
            sets[n_sets++] = argv[i] + 6;
        else if (!strcmp(argv[i], "--set"))
            rc = cli_usage_error("config", "--set needs KEY=VALUE", USAGE);
        else if (argv[i][0] == '-' || path)
            rc = cli_usage_error("config", "unexpected argument", USAGE);
        else
            path = argv[i];
        if (rc) {
            free(sets);
            return rc;
        }
    }
    kvz_run_config cfg;
    kvz_error err = {0};
    int rc = kvz_config_load_full(path, sets, n_sets, &cfg, &err);
    free(sets);
    if (rc)
        return cli_error("config", err.msg);
    rc = kvz_config_write_yaml(&cfg, stdout, &err);
    kvz_config_free(&cfg);
    return rc ? cli_error("config", err.msg) : 0;
}
