/*
 * fuzz_yaml.c - libFuzzer target for the YAML module (src/core/yaml.c).
 *
 * Parses the input as a manifest stream, looks up lines, then emits every
 * document and parses the text again: the round trip must give an equal
 * value (anything else aborts), and nothing may crash or leak.  Seeds in
 * fuzz/corpus/yaml/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
roundtrip(const json_t *v)
{
    kb_buf b = KB_BUF_INIT((size_t)64 << 20);
    kb_yaml_doc **docs = NULL;
    size_t n = 0;
    char err[256];
    int rc;

    if (kb_yaml_emit(v, &b) != 0) {
        kb_buf_free(&b);
        return;                 /* only a too-large output may fail */
    }
    rc = kb_yaml_parse(kb_buf_cstr(&b), b.len, &docs, &n, err, sizeof(err));
    if (rc == KB_ETOOBIG) {     /* expanded aliases can outgrow the input cap */
        kb_buf_free(&b);
        return;
    }
    if (rc != 0 || n != 1 || !json_equal(kb_yaml_doc_root(docs[0]),
                                         (json_t *)v)) {
        fprintf(stderr, "round trip failed (rc %d, %zu docs, %s):\n%s\n", rc,
                n, err, kb_buf_cstr(&b));
        abort();
    }
    kb_yaml_docs_free(docs, n);
    kb_buf_free(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kb_yaml_doc **docs = NULL;
    size_t n = 0;
    char err[256];

    if (kb_yaml_parse((const char *)data, size, &docs, &n, err,
                      sizeof(err)) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        (void)kb_yaml_line(docs[i], "spec.args[1]");
        (void)kb_yaml_line(docs[i], "metadata.name");
        roundtrip(kb_yaml_doc_root(docs[i]));
    }
    kb_yaml_docs_free(docs, n);
    return 0;
}
