/* cmd_template: placeholder, replaced by the module that owns it. */
#include <stdio.h>

#include "commands.h"

int cmd_template(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvzap template: not implemented yet\n");
    return 1;
}
