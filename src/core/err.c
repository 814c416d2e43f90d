/*
 * err.c - error text (see err.h).
 */
#include "core/err.h"

#include <string.h>

const char *
kb_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (-err) {
    case KB_ENOTFOUND: return "not found";
    case KB_EEXIST:    return "already exists";
    case KB_ETOOBIG:   return "too large";
    case KB_ECONFLICT: return "version conflict";
    case KB_EPARSE:    return "malformed input";
    case KB_EUNAVAIL:  return "unavailable";
    default:           return strerror(err);
    }
}
