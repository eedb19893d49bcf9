/* cmd_ppl: placeholder, replaced by the forward-pass module. */
#include <stdio.h>

#include "commands.h"

int cmd_ppl(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap ppl: not implemented yet\n");
    return 1;
}
