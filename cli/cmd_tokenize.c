/* cmd_tokenize: placeholder, replaced by the module that owns it. */
#include <stdio.h>

#include "commands.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap tokenize: not implemented yet\n");
    return 1;
}
