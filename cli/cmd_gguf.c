/* cmd_gguf: placeholder, replaced by the module that owns it. */
#include <stdio.h>

#include "commands.h"

int cmd_gguf(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap gguf: not implemented yet\n");
    return 1;
}
