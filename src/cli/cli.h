/*
 * cli.h - the `kiban` command line: one table of verbs.
 */
#ifndef KB_CLI_H
#define KB_CLI_H

/* Run the verb named by argv[1]; returns the process exit code. */
int kb_cli_main(int argc, char **argv);

#endif
