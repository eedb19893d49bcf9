/* test_chat_template: the C renderers against transformers' apply_chat_template.
 * For every family fixture (tests/fixtures/templates/<family>.json, written by
 * tests/reference/make_template_fixtures.py from the REAL template text):
 * detection on that text gives the family, and every case renders to exactly
 * the expected string (the first differing byte is shown on failure). Also
 * checks kvz_py_isspace / kvz_py_strip against Python's str semantics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kvz_test.h"
#include "model/chat_template.h"

static const char *FAMILIES[] = {"chatml-smollm2", "qwen2", "qwen3", "llama3", "llama3.1"};

static json_t *load_fixture(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "templates/%s", name);
    json_error_t jerr;
    json_t *root = json_load_file(kvz_test_fixture(rel), 0, &jerr);
    KVZ_CHECK(root != NULL, "cannot load fixture %s: %s", rel, jerr.text);
    return root;
}

/* Prints where got and want first differ, with a little context. */
static void show_first_difference(const char *what, const char *got, const char *want)
{
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "  %s: first difference at byte %zu (got %zu bytes, want %zu)\n", what, i,
            strlen(got), strlen(want));
    fprintf(stderr, "    got : ...%.80s\n    want: ...%.80s\n", got + from, want + from);
}

static void check_rendered(const char *what, int rc, const kvz_error *err, const char *got,
                           const char *want)
{
    KVZ_CHECK(rc == KVZ_OK, "%s: render failed: %s", what, err->msg);
    if (rc != KVZ_OK)
        return;
    int same = !strcmp(got, want);
    KVZ_CHECK(same, "%s: rendered text differs from transformers", what);
    if (!same)
        show_first_difference(what, got, want);
}

static int render_messages_case(const kvz_chat_template *t, json_t *c, char **out,
                                kvz_error *err)
{
    json_t *msgs = json_object_get(c, "messages");
    size_t n = json_array_size(msgs);
    kvz_chat_message *m = calloc(n ? n : 1, sizeof *m);
    for (size_t i = 0; i < n; i++) {
        m[i].role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        m[i].content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
    }
    kvz_chat_options opt = {0};
    opt.add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt"));
    opt.disable_thinking = json_is_false(json_object_get(c, "enable_thinking"));
    opt.date_string = json_string_value(json_object_get(c, "date_string"));
    int rc = kvz_chat_render(t, m, n, &opt, out, err);
    free(m);
    return rc;
}

static void check_case(const kvz_chat_template *t, const char *family, json_t *c)
{
    char what[256];
    snprintf(what, sizeof what, "%s/%s", family, json_string_value(json_object_get(c, "name")));
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *want = json_string_value(json_object_get(c, "expected"));
    char *got = NULL;
    kvz_error err = {0};
    int rc;
    if (!strcmp(kind, "repeat"))
        rc = kvz_chat_render_repeat_prompt(t, json_string_value(json_object_get(c, "text")), &got,
                                           &err);
    else
        rc = render_messages_case(t, c, &got, &err);
    check_rendered(what, rc, &err, got, want);
    free(got);
}

static void check_family(const char *family)
{
    char name[64];
    snprintf(name, sizeof name, "%s.json", family);
    json_t *root = load_fixture(name);
    if (!root)
        return;
    const char *text = json_string_value(json_object_get(root, "template"));
    kvz_chat_family f;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_chat_template_detect(text, &f, &err), err);
    KVZ_CHECK(!strcmp(kvz_chat_family_name(f), family), "%s: detected as %s", family,
              kvz_chat_family_name(f));
    kvz_chat_template *t = NULL;
    KVZ_CHECK_OK(kvz_chat_template_from_text(text, name, &t, &err), err);
    json_t *cases = json_object_get(root, "cases");
    KVZ_CHECK(json_array_size(cases) >= 20, "%s: only %zu cases", family, json_array_size(cases));
    for (size_t i = 0; t && i < json_array_size(cases); i++)
        check_case(t, family, json_array_get(cases, i));
    kvz_chat_template_free(t);
    json_decref(root);
}

static void check_python_whitespace(void)
{
    json_t *root = load_fixture("python_whitespace.json");
    if (!root)
        return;
    json_t *ws = json_object_get(root, "isspace");
    size_t k = 0, mismatches = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        int want = k < json_array_size(ws) && json_integer_value(json_array_get(ws, k)) == cp;
        if (want)
            k++;
        if (kvz_py_isspace(cp) != want && mismatches++ < 10)
            fprintf(stderr, "  U+%04X: isspace %d, Python says %d\n", cp, !want, want);
    }
    KVZ_CHECK(mismatches == 0, "%zu code points disagree with Python's str.isspace()", mismatches);
    json_t *strips = json_object_get(root, "strip");
    for (size_t i = 0; i < json_array_size(strips); i++) {
        json_t *s = json_array_get(strips, i);
        char *got = kvz_py_strip(json_string_value(json_object_get(s, "input")));
        const char *want = json_string_value(json_object_get(s, "expected"));
        KVZ_CHECK(got && !strcmp(got, want), "strip case %zu: got '%s' want '%s'", i,
                  got ? got : "(null)", want);
        free(got);
    }
    json_decref(root);
}

int main(void)
{
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
        check_family(FAMILIES[i]);
    check_python_whitespace();
    return kvz_test_done();
}
