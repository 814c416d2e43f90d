/*
 * http_internal.h - helpers shared by server.c and client.c only.
 */
#ifndef KB_HTTP_INTERNAL_H
#define KB_HTTP_INTERNAL_H

/* Set SIGPIPE to ignored if it still has the default action (server.c). */
void kb_http__ignore_sigpipe(void);

#endif
