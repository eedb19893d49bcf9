/* cmd_devices: `kvzap devices` lists the CUDA devices this build can use. */
#include <stdio.h>

#include "commands.h"
#include "ops/backend.h"

static const char USAGE[] = "usage: kvzap devices\n\n"
                            "Lists CUDA devices (name, compute capability, memory).\n"
                            "Exits 0 with 'no CUDA devices' when there are none.\n";

int cmd_devices(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (argc > 1)
        return cli_usage_error("devices", "takes no arguments", USAGE);
    kvz_error err = {0};
    int n = kvz_backend_device_count(KVZ_BACKEND_CUDA, &err);
    printf("CUDA backend compiled: %s\n", kvz_backend_compiled(KVZ_BACKEND_CUDA) ? "yes" : "no");
    if (n == 0) {
        printf("no CUDA devices%s%s\n", err.msg[0] ? ": " : "", err.msg);
        return 0;
    }
    for (int d = 0; d < n; d++) {
        kvz_device_info info;
        if (kvz_backend_device_info(KVZ_BACKEND_CUDA, d, &info, &err) != KVZ_OK)
            return cli_error("devices", err.msg);
        printf("cuda:%d  %s  sm_%d%d  %.1f GiB  %d SMs\n", d, info.name, info.major, info.minor,
               (double)info.total_memory / (1024.0 * 1024.0 * 1024.0), info.multiprocessors);
    }
    return 0;
}
