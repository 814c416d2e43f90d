/*
 * testutil.h - small helpers shared by the cmocka unit tests.
 * Include after <cmocka.h>.
 */
#ifndef KB_TESTUTIL_H
#define KB_TESTUTIL_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* JSON from text written with single quotes (readable in C strings);
 * fails the test on bad JSON.  New reference. */
static inline json_t *
J(const char *text)
{
    char *t = strdup(text);
    json_error_t e;
    json_t *v;

    assert_non_null(t);
    for (char *q = t; *q != '\0'; q++)
        if (*q == '\'')
            *q = '"';
    v = json_loads(t, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (v == NULL)
        fail_msg("bad test JSON (%s): %s", e.text, t);
    free(t);
    return v;
}

#endif
