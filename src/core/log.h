/*
 * log.h - structured JSON-lines logging on stderr.
 *
 * One line per event: {"time":"…","level":"info","msg":"…", fields…}.
 * Fields are given as a jansson json_pack() object body, so callers write
 *
 *     kb_log(KB_LOG_INFO, "listening", "{s:s, s:i}", "addr", a, "port", p);
 *
 * `fields` may be NULL.  Each line is written with a single write(2), so
 * lines from several threads never interleave.  Safe from any thread.
 */
#ifndef KB_LOG_H
#define KB_LOG_H

typedef enum kb_log_level {
    KB_LOG_DEBUG = 0,
    KB_LOG_INFO,
    KB_LOG_WARN,
    KB_LOG_ERROR
} kb_log_level;

void kb_log_set_level(kb_log_level level);
kb_log_level kb_log_get_level(void);
/* Parse "debug", "info", "warn", "error".  KB_EINVAL on anything else. */
int  kb_log_level_parse(const char *s, kb_log_level *out);
void kb_log(kb_log_level level, const char *msg, const char *fields, ...);

#define kb_log_debug(...) kb_log(KB_LOG_DEBUG, __VA_ARGS__)
#define kb_log_info(...)  kb_log(KB_LOG_INFO, __VA_ARGS__)
#define kb_log_warn(...)  kb_log(KB_LOG_WARN, __VA_ARGS__)
#define kb_log_error(...) kb_log(KB_LOG_ERROR, __VA_ARGS__)

#endif
