/*
 * yaml.h - YAML (1.1, via libyaml) to JSON, with line numbers; JSON to YAML.
 *
 * Manifests, OpenAPI documents and config files are YAML or JSON.  The
 * loader turns each document of a stream into a jansson value and remembers
 * the line of every node by its dotted path ("spec.args[1]",
 * "spec.env.FOO"), so errors can point at file:line.  Plain scalars are
 * typed by the YAML 1.2 core schema (null, true/false, integers, floats);
 * quoted scalars are always strings.  Anchors/aliases are resolved (with a
 * hard cap on expansion), duplicate keys are an error, and documents are
 * bounded in size and depth.
 */
#ifndef KB_YAML_H
#define KB_YAML_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"

typedef struct kb_yaml_doc kb_yaml_doc;

/*
 * Parse a stream of one or more documents ("---" separated).  Empty
 * documents are skipped.  On success returns 0, *docs (an array of *ndocs
 * documents, free with kb_yaml_docs_free).  On error returns KB_EPARSE
 * (or KB_ETOOBIG / KB_ENOMEM) and writes "LINE:COL: reason" into err.
 */
int  kb_yaml_parse(const char *text, size_t len, kb_yaml_doc ***docs,
                   size_t *ndocs, char *err, size_t errlen);
/* The document's value (borrowed). */
json_t *kb_yaml_doc_root(const kb_yaml_doc *doc);
/* The line (1-based) where the document starts. */
int  kb_yaml_doc_line(const kb_yaml_doc *doc);
/* Line (1-based) of the node at dotted path, or of its nearest existing
 * ancestor; 0 if nothing is known. */
int  kb_yaml_line(const kb_yaml_doc *doc, const char *path);
void kb_yaml_docs_free(kb_yaml_doc **docs, size_t ndocs);

/* Convenience: a file holding exactly one document (JSON is YAML). New
 * reference in *out; errors as kb_yaml_parse, err prefixed with path. */
int  kb_yaml_load_file(const char *path, json_t **out, char *err,
                       size_t errlen);
/* Append the YAML text of a JSON value (block style, keys in order). */
int  kb_yaml_emit(const json_t *v, kb_buf *out);

#endif
