/*
 * server.h - `kiban server`: every plane in one process.
 */
#ifndef KB_SERVER_H
#define KB_SERVER_H

/* Entry point of `kiban server [flags]`; returns the process exit code. */
int kb_server_main(int argc, char **argv);

#endif
