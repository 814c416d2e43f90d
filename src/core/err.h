/*
 * err.h - kiban's one error convention.
 *
 * Functions that act return int: 0 on success, a negative errno value on
 * failure (as libuv does).  The KB_E* names below are the errno values the
 * project gives a meaning to; anything else is passed through as -errno.
 */
#ifndef KB_ERR_H
#define KB_ERR_H

#include <errno.h>

#define KB_OK          0
#define KB_ENOMEM      (-ENOMEM)      /* allocation failed */
#define KB_EINVAL      (-EINVAL)      /* bad argument or bad input */
#define KB_ENOTFOUND   (-ENOENT)      /* no such resource */
#define KB_EEXIST      (-EEXIST)      /* resource already exists */
#define KB_ETOOBIG     (-E2BIG)       /* a hard maximum was reached */
#define KB_ECONFLICT   (-ESTALE)      /* version / etag mismatch */
#define KB_EPARSE      (-EPROTO)      /* malformed input */
#define KB_EAGAIN      (-EAGAIN)      /* incomplete; call again with more */
#define KB_ETIMEDOUT   (-ETIMEDOUT)
#define KB_ECANCELED   (-ECANCELED)
#define KB_EBUSY       (-EBUSY)
#define KB_EUNAVAIL    (-EHOSTUNREACH) /* nothing available to serve it */
#define KB_EPRECOND    (-EPERM)       /* a precondition of the call does not
                                        hold (FAILED_PRECONDITION) */

/* Text for an error code (positive or negative).  Never NULL. */
const char *kb_strerror(int err);

#endif
