/* cli_util: small helpers shared by the kvzap subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    return 0;
}

int cli_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "kvzap %s: %s\n", cmd, msg);
    return 1;
}

int cli_usage_error(const char *cmd, const char *msg, const char *usage)
{
    fprintf(stderr, "kvzap %s: %s\n%s", cmd, msg, usage);
    return 2;
}

const char *cli_default_model(void)
{
    static char path[4096];
    const char *env = getenv("KVZAP_DEFAULT_MODEL");
    if (env && *env)
        return env;
    const char *cache = getenv("KVZAP_CACHE");
    if (cache && *cache)
        snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(path, sizeof path, "%s/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
    return path;
}
