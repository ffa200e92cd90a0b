/*
 * cli.h - the embd executable's subcommands. Each takes argc/argv with argv[0] = the
 * subcommand name, parses its own options with getopt_long, and returns the process exit code:
 * 0 success, 1 failure (message on stderr), 2 usage error.
 */
#ifndef SRV_CLI_H
#define SRV_CLI_H

/* Exit status when a store's file is truncated or rewritten in place while mapped (SIGBUS on
 * its pages): 74, sysexits' EX_IOERR. */
#define CLI_EXIT_STORE_CHANGED     74
#define CLI_EXIT_STORE_CHANGED_STR "74"

int cmd_pack(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_gen(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Parses a non-negative decimal integer no larger than max; returns 0 or -1. */
int cli_parse_u64(const char *s, unsigned long long max, unsigned long long *out);

#endif
