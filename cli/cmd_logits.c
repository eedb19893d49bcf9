/* cmd_logits: placeholder, replaced by the forward-pass module. */
#include <stdio.h>

#include "commands.h"

int cmd_logits(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap logits: not implemented yet\n");
    return 1;
}
