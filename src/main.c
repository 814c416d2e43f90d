/*
 * main.c - the one kiban binary: server, CLI and instance supervisor.
 */
#include "cli/cli.h"

int
main(int argc, char **argv)
{
    return kb_cli_main(argc, argv);
}
