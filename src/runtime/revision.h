/*
 * revision.h - the server-managed fields of a Service document: revisions,
 * the revision counter, traffic targets and tags.  Pure JSON logic, no I/O:
 * the API calls it on every create, update, :updateTraffic and revision
 * delete, and the result is what it stores and the runtime runs.
 *
 * Errors: KB_EINVAL (the client's input is wrong: INVALID_ARGUMENT),
 * KB_EPRECOND (the state does not allow it: FAILED_PRECONDITION),
 * KB_ENOTFOUND (no such revision), KB_ENOMEM; the message, naming the
 * field, is in err.  On error the document may be half changed: callers
 * work on a copy.
 */
#ifndef KB_RUNTIME_REVISION_H
#define KB_RUNTIME_REVISION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KB_RT_DEFAULT_HISTORY 20     /* revisionHistoryLimit */

/* The options of one create or update (query parameters). */
typedef struct kb_rt_deploy_opts {
    bool        no_traffic;     /* the new revision gets no traffic */
    const char *tag;            /* NULL/"": none; else this tag moves to the
                                   new (or, without one, the newest)
                                   revision */
    int64_t     now_ns;         /* createTime of a new revision; 0: now */
    const char *suffix;         /* the name's 3 characters; NULL: random */
} kb_rt_deploy_opts;

/*
 * Turn a checked Service document (kb_runtime_validate) into what is
 * stored: `revisions` and `revisionCounter` come from old_doc (NULL on
 * create: none), whatever doc held; a new revision named
 * SERVICE-NNNNN-xxx is appended when doc's template differs from the
 * newest revision's; `traffic` is doc's, else old_doc's, else all to the
 * latest revision; then the options, normalisation (one entry per target
 * with a percent, extra tags as percent-0 entries, untagged percent-0
 * entries dropped), the check that every revisionName exists, and
 * retention (revisionHistoryLimit).  doc is changed in place.
 * KB_EPRECOND: noTraffic on create.
 */
int  kb_rt_deploy(json_t *doc, const json_t *old_doc, const char *service,
                  const kb_rt_deploy_opts *o, char *err, size_t errlen);

/*
 * Change doc's traffic by an :updateTraffic request (gcloud's flags as
 * JSON: toRevisions, toTags, toLatest, setTags, updateTags, removeTags,
 * clearTags).  Tags change first; then toLatest, or the given percents
 * with the remainder spread over the other current targets in proportion
 * to their percents.  Run kb_rt_deploy (no options) afterwards to
 * normalise and check.  KB_EINVAL for a bad request.
 */
int  kb_rt_update_traffic(json_t *doc, const json_t *req, char *err,
                          size_t errlen);

/*
 * Drop revision `rev` from doc.  KB_ENOTFOUND if doc has none by that
 * name; KB_EPRECOND if it is the newest, or a traffic entry gives it a
 * percent or a tag.
 */
int  kb_rt_revision_delete(json_t *doc, const char *rev, char *err,
                           size_t errlen);

/* The revision object named rev in doc's `revisions`; NULL if none
 * (borrowed). */
const json_t *kb_rt_revision_find(const json_t *doc, const char *rev);

/*
 * The API view of one revision of doc (rev: an element of its
 * `revisions`): {"name": "projects/P/services/S/revisions/R", "revision",
 * "service", "createTime", "template", "traffic": {"percent", "tags",
 * "latest"}}.  New reference; NULL when out of memory.
 */
json_t *kb_rt_revision_view(const json_t *doc, const json_t *rev,
                            const char *project, const char *service);

/* A duration as text ("500ms", "30s", "5m", "1h", or digits: seconds)
 * into milliseconds, at most 24 h.  (template.c) */
bool kb_rt_duration_ms(const char *s, uint64_t *ms);
/* Is tag a valid traffic tag (RFC 1035 label, at most 46 characters, no
 * "---")?  (template.c) */
bool kb_rt_tag_valid(const char *tag);
/* Check a `traffic` value's shape: targets, percents summing to 100,
 * unique tags.  KB_EINVAL with "traffic[i].field: reason".  (template.c) */
int  kb_rt_traffic_check(const json_t *traffic, char *err, size_t errlen);

#endif
