/* cmd_info: placeholder, replaced by the module that owns it. */
#include <stdio.h>

#include "commands.h"

int cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap info: not implemented yet\n");
    return 1;
}
