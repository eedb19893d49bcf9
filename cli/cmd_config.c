/* cmd_config: placeholder, replaced by the module that owns it. */
#include <stdio.h>

#include "commands.h"

int cmd_config(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap config: not implemented yet\n");
    return 1;
}
