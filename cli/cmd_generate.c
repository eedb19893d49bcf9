/* cmd_generate: placeholder, replaced by the forward-pass module. */
#include <stdio.h>

#include "commands.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap generate: not implemented yet\n");
    return 1;
}
