/* fuzz_config: the YAML run configuration (common/config.h) loaded from
 * arbitrary bytes, with a round-trip oracle: a file that loads is printed
 * (kvz_config_write_yaml, what `kvzap config` shows), the printed text must
 * load again, print identically and give an equal struct (kvz_config_equal);
 * abort() otherwise. The cross-field checks run on every loaded config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "fuzz_common.h"

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: round trip broken: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

/* Prints cfg into a malloc'ed string. */
static char *print_config(const kvz_run_config *cfg, size_t *len)
{
    char *text = NULL;
    FILE *fp = open_memstream(&text, len);
    if (!fp)
        abort();
    kvz_error err = {0};
    int rc = kvz_config_write_yaml(cfg, fp, &err);
    if (fclose(fp) != 0 || rc != KVZ_OK)
        fail("kvz_config_write_yaml failed", err.msg);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[1200];
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("run.yaml", path, sizeof path), data, size);
    kvz_run_config a, b;
    kvz_error err = {0};
    if (kvz_config_load(path, &a, &err) != KVZ_OK)
        return 0; /* a failed load frees the config */
    kvz_error verr = {0};
    (void)kvz_config_validate(&a, &verr);
    size_t len1 = 0, len2 = 0;
    char *t1 = print_config(&a, &len1);
    kvz_fuzz_write_file(kvz_fuzz_tmp_path("printed.yaml", path, sizeof path), t1, len1);
    if (kvz_config_load(path, &b, &err) != KVZ_OK) {
        fprintf(stderr, "%s\n", t1);
        fail("the printed config does not load", err.msg);
    }
    char *t2 = print_config(&b, &len2);
    if (len1 != len2 || memcmp(t1, t2, len1) != 0) {
        fprintf(stderr, "--- printed once:\n%s--- printed after reloading:\n%s", t1, t2);
        fail("the reloaded config prints differently", NULL);
    }
    if (!kvz_config_equal(&a, &b)) {
        fprintf(stderr, "%s\n", t1);
        fail("the reloaded config is not equal to the loaded one", NULL);
    }
    free(t1);
    free(t2);
    kvz_config_free(&a);
    kvz_config_free(&b);
    return 0;
}
