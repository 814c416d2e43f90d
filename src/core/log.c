/*
 * log.c - structured JSON-lines logging (see log.h).
 */
#include "core/log.h"
#include "core/err.h"
#include "core/time.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic int log_level = KB_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void
kb_log_set_level(kb_log_level level)
{
    atomic_store(&log_level, (int)level);
}

kb_log_level
kb_log_get_level(void)
{
    return (kb_log_level)atomic_load(&log_level);
}

int
kb_log_level_parse(const char *s, kb_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (kb_log_level)i;
            return 0;
        }
    }
    return KB_EINVAL;
}

void
kb_log(kb_log_level level, const char *msg, const char *fields, ...)
{
    char ts[KB_RFC3339_LEN];
    json_t *line, *extra = NULL;
    json_error_t jerr;
    char *text;
    va_list ap;

    if ((int)level < atomic_load(&log_level))
        return;

    kb_time_rfc3339(ts, sizeof(ts), kb_time_unix_ns(), 3);
    line = json_pack("{s:s, s:s, s:s}", "time", ts,
                     "level", level_names[level], "msg", msg);
    if (line == NULL)
        return;
    if (fields != NULL) {
        va_start(ap, fields);
        extra = json_vpack_ex(&jerr, 0, fields, ap);
        va_end(ap);
        if (extra != NULL)
            json_object_update(line, extra);
        else
            json_object_set_new(line, "log_error", json_string(jerr.text));
        json_decref(extra);
    }
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;

    size_t n = strlen(text);
    text[n] = '\n';                 /* json_dumps leaves room: we own the NUL */
    ssize_t w = write(STDERR_FILENO, text, n + 1);
    (void)w;
    free(text);
}
