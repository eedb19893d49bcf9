/* fuzz_chat_render: the fixed chat-template families rendering arbitrary
 * message content. Input: byte 0 = family (bits 0-2, modulo the number of
 * families), add_generation_prompt (bit 3), disable_thinking (bit 4), a
 * date string taken from the first segment (bit 5); byte 1 = the roles of
 * messages 0-3 (2 bits each: system, user, assistant, tool; message i uses
 * the role of i % 4); the rest = message contents separated by NUL bytes (at
 * most 16 messages). Also renders the oracle's repeat prompt of the first
 * message's content and Python-strips it. Invalid UTF-8 must be refused. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/chat_template.h"

#define MAX_MSGS 16

static kvz_chat_template *g_fam[KVZ_CHAT_N_FAMILIES];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int f = 0; f < KVZ_CHAT_N_FAMILIES; f++) {
        kvz_error err = {0};
        if (kvz_chat_template_from_family((kvz_chat_family)f, &g_fam[f], &err) != KVZ_OK)
            abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const ROLES[] = {"system", "user", "assistant", "tool"};
    if (size < 2)
        return 0;
    const kvz_chat_template *t = g_fam[(data[0] & 7) % KVZ_CHAT_N_FAMILIES];
    char *text = kvz_fuzz_strndup(data + 2, size - 2); /* segments end at NULs */
    size_t len = size - 2;
    kvz_chat_message msgs[MAX_MSGS];
    size_t n = 0;
    const char *date = NULL;
    size_t at = 0;
    if (data[0] & 0x20) {
        date = text;
        at = strlen(text) + 1;
    }
    while (n < MAX_MSGS && at <= len) {
        msgs[n].role = ROLES[(data[1] >> (2 * (n % 4))) & 3];
        msgs[n].content = text + at;
        at += strlen(text + at) + 1;
        n++;
    }
    kvz_chat_options opt = {(data[0] & 0x08) != 0, (data[0] & 0x10) != 0, date};
    kvz_error err = {0};
    char *out = NULL;
    if (n > 0 && kvz_chat_render(t, msgs, n, &opt, &out, &err) == KVZ_OK)
        free(out);
    out = NULL;
    const char *whole = date ? text + strlen(text) + (strlen(text) < len) : text;
    if (kvz_chat_render_repeat_prompt(t, whole, &out, &err) == KVZ_OK)
        free(out);
    free(kvz_py_strip(whole));
    free(text);
    return 0;
}
