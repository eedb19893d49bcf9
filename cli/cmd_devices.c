/* cmd_devices: `kvzap devices` lists the CUDA devices this build can use. */
#include <stdio.h>

#include "commands.h"
#include "kernels/kvz_cuda.h"

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
    int n = kvz_cuda_device_count(&err);
    printf("CUDA backend compiled: %s\n", kvz_cuda_compiled() ? "yes" : "no");
    if (n == 0) {
        printf("no CUDA devices%s%s\n", err.msg[0] ? ": " : "", err.msg);
        return 0;
    }
    for (int d = 0; d < n; d++) {
        kvz_cuda_device_info info;
        if (kvz_cuda_device_info_get(d, &info, &err) != KVZ_OK)
            return cli_error("devices", err.msg);
        printf("cuda:%d  %s  sm_%d%d  %.1f GiB  %d SMs\n", d, info.name, info.major, info.minor,
               (double)info.total_memory / (1024.0 * 1024.0 * 1024.0), info.multiprocessors);
    }
    return 0;
}
