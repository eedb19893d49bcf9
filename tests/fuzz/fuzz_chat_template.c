/* fuzz_chat_template: model/chat_template.h on arbitrary template sources.
 * The input is written twice and loaded the way kvzap loads a checkpoint's
 * template: as chat_template.jinja (template text: family detection) and as
 * tokenizer_config.json (its "chat_template" string, or list of {name,
 * template}). A template that is recognised renders fixed conversations
 * (with and without a system message, generation prompt, thinking off, a
 * date, the oracle's repeat prompt). */
#include <stdlib.h>

#include "fuzz_common.h"
#include "model/chat_template.h"

static void render_fixed(const kvz_chat_template *t)
{
    static const kvz_chat_message A[] = {
        {"system", "You are terse."}, {"user", "  Hi there \n"}, {"assistant", "<think>\nhm\n</think>\n\nHello."},
        {"user", "Again?"}};
    static const kvz_chat_message B[] = {{"user", "caf\xc3\xa9 \xe2\x80\x83"}};
    kvz_chat_options opt[] = {{0, 0, NULL}, {1, 0, NULL}, {1, 1, "01 Jan 2025"}};
    kvz_error err = {0};
    char *out = NULL;
    for (size_t k = 0; k < sizeof opt / sizeof opt[0]; k++) {
        if (kvz_chat_render(t, A, sizeof A / sizeof A[0], &opt[k], &out, &err) == KVZ_OK)
            free(out);
        out = NULL;
        if (kvz_chat_render(t, B, 1, &opt[k], &out, &err) == KVZ_OK)
            free(out);
        out = NULL;
    }
    if (kvz_chat_render_repeat_prompt(t, " The quick brown fox.\n", &out, &err) == KVZ_OK)
        free(out);
}

static void load_and_render(const char *path)
{
    kvz_chat_template *t = NULL;
    kvz_error err = {0};
    if (kvz_chat_template_load(path, NULL, &t, &err) == KVZ_OK) {
        (void)kvz_chat_family_name(kvz_chat_template_family(t));
        (void)kvz_chat_template_text(t);
        (void)kvz_chat_template_source(t);
        render_fixed(t);
    }
    kvz_chat_template_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("chat_template.jinja", path, sizeof path), data, size);
    load_and_render(path);
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("tokenizer_config.json", path, sizeof path), data, size);
    load_and_render(path);
    return 0;
}
