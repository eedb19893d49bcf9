/* test_config: the YAML run configuration. Defaults; every YAML file under
 * configs/ and tests/fixtures/configs/good loads and survives print -> re-read
 * unchanged; every YAML file in tests/fixtures/configs/bad fails with the
 * message its first line ("# expect: ...") names; --set typing and errors; unreadable,
 * non-UTF-8 and NUL-containing files; docs/configuration.md lists every key;
 * layer lists of empty items (heap overflow, issue 14) and the print/re-read
 * round trip of arbitrary Unicode strings. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/config.h"
#include "common/kvz_file.h"
#include "common/kvz_utf8.h"
#include "kvz_test.h"

/* Prints cfg, re-reads it and checks the result is equal. */
static void check_round_trip(const char *what, const kvz_run_config *cfg)
{
    char *path = kvz_path_join(kvz_test_tmpdir(), "round_trip.yaml");
    FILE *fp = fopen(path, "w");
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_write_yaml(cfg, fp, &err), err);
    fclose(fp);
    kvz_run_config again;
    int rc = kvz_config_load(path, &again, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s: printed config does not re-read: %s", what, err.msg);
    if (rc == KVZ_OK) {
        KVZ_CHECK(kvz_config_equal(cfg, &again), "%s: round trip changed the config", what);
        kvz_config_free(&again);
    }
    free(path);
}

static void check_loads(const char *path)
{
    kvz_run_config cfg;
    kvz_error err = {0};
    int rc = kvz_config_load_full(path, NULL, 0, &cfg, &err);
    KVZ_CHECK(rc == KVZ_OK, "%s does not load: %s", path, err.msg);
    if (rc == KVZ_OK) {
        check_round_trip(path, &cfg);
        kvz_config_free(&cfg);
    }
}

static void check_fails_as_expected(const char *path)
{
    char *text = NULL;
    size_t len;
    kvz_error err = {0};
    if (kvz_file_read_all(path, &text, &len, &err) != KVZ_OK || strncmp(text, "# expect: ", 10)) {
        KVZ_CHECK(0, "%s: cannot read its '# expect: ' line", path);
        free(text);
        return;
    }
    char *expect = text + 10;
    expect[strcspn(expect, "\n")] = '\0';
    kvz_run_config cfg;
    int rc = kvz_config_load_full(path, NULL, 0, &cfg, &err);
    KVZ_CHECK(rc == KVZ_ECONFIG, "%s: rc %d, want KVZ_ECONFIG (%s)", path, rc, err.msg);
    KVZ_CHECK(strstr(err.msg, expect) != NULL, "%s: message '%s' lacks '%s'", path, err.msg,
              expect);
    KVZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0 || strstr(expect, "min_doc_tokens"),
              "%s: message does not start with the file name: %s", path, err.msg);
    if (rc == KVZ_OK)
        kvz_config_free(&cfg);
    free(text);
}

/* Calls fn on every *.yaml under dir (recursively); returns how many. */
static size_t for_each_yaml(const char *dir, void (*fn)(const char *))
{
    DIR *d = opendir(dir);
    KVZ_CHECK(d != NULL, "cannot open directory %s", dir);
    size_t count = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *path = kvz_path_join(dir, e->d_name);
        size_t n = strlen(e->d_name);
        if (kvz_path_is_dir(path))
            count += for_each_yaml(path, fn);
        else if (n > 5 && !strcmp(e->d_name + n - 5, ".yaml"))
            fn(path), count++;
        free(path);
    }
    if (d)
        closedir(d);
    return count;
}

static void check_defaults(void)
{
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_init(&c, &err), err);
    KVZ_CHECK(!c.model.path && !strcmp(c.model.chat_template, "auto") && !c.model.tokenizer &&
                  c.model.threads == 0 && c.model.device == KVZ_DEVICE_AUTO,
              "model defaults");
    KVZ_CHECK(!strcmp(c.oracle.text_field, "text") && !c.oracle.subset_field &&
                  c.oracle.n_tokens == 500 && c.oracle.min_doc_tokens == 750 &&
                  c.oracle.max_doc_tokens == 1250 && c.oracle.train_docs_per_subset == 500 &&
                  c.oracle.test_docs_per_subset == 5 && c.oracle.seed == 0 &&
                  c.oracle.hidden_dtype == KVZ_HIDDEN_FLOAT16 &&
                  c.oracle.scoring == KVZ_SCORING_KVZIP_PLUS && c.oracle.chunk_size == 2048 &&
                  c.oracle.store_hidden == 1 && c.oracle.ridge_stats == 1,
              "oracle defaults");
    KVZ_CHECK(c.train.layers.all && c.train.model == KVZ_SURROGATE_BOTH &&
                  c.train.ridge_alpha == 1.0 && c.train.mlp_hidden == 0 && c.train.lr == 5e-3 &&
                  c.train.beta1 == 0.9 && c.train.beta2 == 0.999 && c.train.eps == 1e-8 &&
                  c.train.weight_decay == 0.01 && c.train.batch_size == 512 &&
                  c.train.epochs == 15 && c.train.grad_clip == 1.0 &&
                  c.train.val_fraction == 0.05 && c.train.seed == 0,
              "train defaults");
    KVZ_CHECK(c.export.format == KVZ_CFG_EXPORT_KVPRESS && c.export.dtype == KVZ_CFG_EXPORT_BFLOAT16 &&
                  !c.export.output,
              "export defaults");
    KVZ_CHECK_OK(kvz_config_validate(&c, &err), err);
    check_round_trip("defaults", &c);
    KVZ_CHECK(kvz_config_require(&c, "oracle.corpus", &err) == KVZ_ECONFIG &&
                  strstr(err.msg, "--set oracle.corpus=") != NULL,
              "require: %s", err.msg);
    kvz_config_free(&c);
}

static void check_good_values(void)
{
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_load(kvz_test_fixture("configs/good/flow_style.yaml"), &c, &err), err);
    KVZ_CHECK(c.oracle.n_tokens == 300 && c.oracle.seed == 7 && c.train.lr == 1e-3 &&
                  !c.train.layers.all && c.train.layers.n == 3 && c.train.layers.ids[2] == 4,
              "flow_style values");
    kvz_config_free(&c);
    KVZ_CHECK_OK(kvz_config_load(kvz_test_fixture("configs/good/tricky_strings.yaml"), &c, &err),
                 err);
    KVZ_CHECK(c.model.tokenizer && !strcmp(c.model.tokenizer, "it's \"quoted\" \\\\ back"),
              "single-quoted string: %s", c.model.tokenizer);
    KVZ_CHECK(c.oracle.corpus &&
                  !strcmp(c.oracle.corpus, "tab\there\nnewline \xC3\xA9\xE2\x80\xA8 \\"),
              "escaped string: %s", c.oracle.corpus);
    KVZ_CHECK(!strcmp(c.oracle.text_field, "123") && c.oracle.subset_field &&
                  !strcmp(c.oracle.subset_field, "null"),
              "quoted scalars stay strings");
    kvz_config_free(&c);
    KVZ_CHECK_OK(kvz_config_load(kvz_test_fixture("configs/good/quoted_numbers.yaml"), &c, &err),
                 err);
    KVZ_CHECK(c.oracle.n_tokens == 300 && c.oracle.store_hidden == 0 && c.train.lr == 0.001,
              "quoted numbers");
    kvz_config_free(&c);
}

static void expect_set(kvz_run_config *c, const char *arg, int want_rc, const char *msg_part)
{
    kvz_error err = {0};
    int rc = kvz_config_set_arg(c, arg, &err);
    KVZ_CHECK(rc == want_rc, "--set %s: rc %d want %d (%s)", arg, rc, want_rc, err.msg);
    if (msg_part)
        KVZ_CHECK(strstr(err.msg, msg_part) != NULL, "--set %s: '%s' lacks '%s'", arg, err.msg,
                  msg_part);
}

static void check_set(void)
{
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_init(&c, &err), err);
    expect_set(&c, "oracle.n_tokens=300", KVZ_OK, NULL);
    expect_set(&c, "train.lr=0.30000000000000004", KVZ_OK, NULL);
    expect_set(&c, "train.ridge_alpha=1e-300", KVZ_OK, NULL);
    expect_set(&c, "train.layers=[0, 5, 2]", KVZ_OK, NULL);
    expect_set(&c, "model.path=/a b/c=d.gguf", KVZ_OK, NULL);
    expect_set(&c, "model.chat_template=qwen3", KVZ_OK, NULL);
    expect_set(&c, "oracle.scoring=chunked", KVZ_OK, NULL);
    expect_set(&c, "oracle.ridge_stats=false", KVZ_OK, NULL);
    expect_set(&c, "oracle.seed=-0", KVZ_OK, NULL);
    KVZ_CHECK(c.oracle.n_tokens == 300 && c.train.lr == 0.30000000000000004 &&
                  c.train.layers.n == 3 && c.train.layers.ids[1] == 5 &&
                  !strcmp(c.model.path, "/a b/c=d.gguf") && c.oracle.scoring == 1 &&
                  c.oracle.ridge_stats == 0,
              "--set values");
    check_round_trip("after --set", &c);
    expect_set(&c, "model.path=", KVZ_OK, NULL);
    KVZ_CHECK(c.model.path == NULL, "empty --set unsets an optional string");
    expect_set(&c, "train.layers=3", KVZ_OK, NULL);
    KVZ_CHECK(c.train.layers.n == 1 && c.train.layers.ids[0] == 3, "single layer");
    expect_set(&c, "train.layers=all", KVZ_OK, NULL);
    KVZ_CHECK(c.train.layers.all && c.train.layers.ids == NULL, "layers all");
    expect_set(&c, "oracle.n_tokens=abc", KVZ_ECONFIG,
               "--set: key 'oracle.n_tokens': expected a non-negative integer, got 'abc'");
    expect_set(&c, "oracle.n_tokens= 5", KVZ_ECONFIG, "got ' 5'");
    expect_set(&c, "oracle.n_token=5", KVZ_ECONFIG, "unknown key 'oracle.n_token' (keys in 'oracle'");
    expect_set(&c, "oracle=5", KVZ_ECONFIG, "'oracle' is a section");
    expect_set(&c, "noequals", KVZ_ECONFIG, "expected KEY=VALUE");
    expect_set(&c, "=5", KVZ_ECONFIG, "expected KEY=VALUE");
    expect_set(&c, "train.lr=nan", KVZ_ECONFIG, "expected a number, got 'nan'");
    expect_set(&c, "train.lr=1e999", KVZ_ECONFIG, "expected a number");
    expect_set(&c, "train.layers=1,,2", KVZ_ECONFIG, "expected a layer index");
    expect_set(&c, "model.device=GPU", KVZ_ECONFIG, "expected one of auto, cpu, cuda, got 'GPU'");
    expect_set(&c, "oracle.text_field=", KVZ_ECONFIG, "must not be empty");
    expect_set(&c, "model.path=caf\xC3", KVZ_ECONFIG, "not valid UTF-8");
    KVZ_CHECK(c.oracle.n_tokens == 300, "failed --set left the value alone");
    kvz_config_free(&c);
    const char *sets[] = {"oracle.min_doc_tokens=10", "oracle.max_doc_tokens=11"};
    KVZ_CHECK(kvz_config_load_full(NULL, sets, 2, &c, &err) == KVZ_ECONFIG &&
                  strstr(err.msg, "leave no document length"),
              "cross-field check: %s", err.msg);
}

/* Finding 1 of issue 14: a layer list of empty items wrote past its item
 * array (heap overflow; ASan reports it, a plain build corrupted the heap).
 * Such a list is an error, from --set and from YAML alike. */
static void check_layers_many_commas(void)
{
    enum { N = 20000 };
    char *arg = malloc(N + 32);
    strcpy(arg, "train.layers=");
    memset(arg + strlen(arg), ',', N);
    arg[13 + N] = '\0';
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_init(&c, &err), err);
    expect_set(&c, arg, KVZ_ECONFIG, "expected a layer index");
    expect_set(&c, "train.layers=[,,,,,,,,,,,,,,,,,,,,]", KVZ_ECONFIG, "expected a layer index");
    kvz_config_free(&c);
    char *path = kvz_path_join(kvz_test_tmpdir(), "commas.yaml");
    FILE *fp = fopen(path, "w");
    fprintf(fp, "train:\n  layers: \"%s\"\n", arg + 13);
    fclose(fp);
    KVZ_CHECK(kvz_config_load(path, &c, &err) == KVZ_ECONFIG &&
                  strstr(err.msg, "expected a layer index"),
              "YAML layers of commas: %s", err.msg);
    free(path);
    free(arg);
}

/* Finding 3 of issue 14: `kvzap config` output must read back for every
 * string, including C0/C1 controls, DEL, NEL/LS/PS, BOM and U+FFFE/U+FFFF.
 * Random strings over all of Unicode (biased to the awkward code points),
 * printed and re-read; the re-read value must be byte-identical. */
static void check_string_round_trip(void)
{
    static const uint32_t awkward[] = {0x01, 0x09, 0x0A, 0x0D, 0x1B, 0x1F, 0x20, 0x22, 0x23,
                                       0x27, 0x3A, 0x5C, 0x7F, 0x80, 0x85, 0x9E, 0x9F, 0xA0,
                                       0xAD, 0x2028, 0x2029, 0xD7FF, 0xE000, 0xFEFF, 0xFFFD,
                                       0xFFFE, 0xFFFF, 0x10000, 0x10FFFF};
    uint64_t state = 0x9E3779B97F4A7C15u;
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_config_init(&c, &err), err);
    char *path = kvz_path_join(kvz_test_tmpdir(), "strings.yaml");
    int failures = 0;
    for (int trial = 0; trial < 400 && failures < 5; trial++) {
        char s[512];
        size_t n = 0, len = 1 + trial % 40;
        for (size_t i = 0; i < len; i++) {
            state = state * 6364136223846793005u + 1442695040888963407u;
            uint32_t r = (uint32_t)(state >> 33), cp;
            if (r % 3 == 0)
                cp = awkward[(r / 3) % (sizeof awkward / sizeof *awkward)];
            else if (r % 3 == 1)
                cp = 1 + (r / 3) % 0x2FF; /* Latin, C0/C1 */
            else
                cp = 1 + (r / 3) % 0x10FFFF;
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFE;
            n += kvz_utf8_encode(cp, s + n);
        }
        s[n] = '\0';
        int rc = kvz_config_set(&c, "oracle.text_field", s, &err);
        KVZ_CHECK(rc == KVZ_OK, "set a random string: %s", err.msg);
        if (rc != KVZ_OK)
            continue;
        FILE *fp = fopen(path, "w");
        KVZ_CHECK_OK(kvz_config_write_yaml(&c, fp, &err), err);
        fclose(fp);
        kvz_run_config again;
        rc = kvz_config_load(path, &again, &err);
        int same = rc == KVZ_OK && !strcmp(again.oracle.text_field, s);
        if (!same) {
            failures++;
            fprintf(stderr, "  string round trip, trial %d, bytes:", trial);
            for (size_t i = 0; i < n; i++)
                fprintf(stderr, " %02X", (unsigned char)s[i]);
            fprintf(stderr, "\n  -> %s\n", rc == KVZ_OK ? "a different value" : err.msg);
        }
        KVZ_CHECK(same, "printed config re-reads to the same string (trial %d)", trial);
        if (rc == KVZ_OK)
            kvz_config_free(&again);
    }
    free(path);
    kvz_config_free(&c);
}

static void write_bytes(const char *path, const char *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    fwrite(bytes, 1, n, fp);
    fclose(fp);
}

static void check_bad_files(void)
{
    kvz_run_config c;
    kvz_error err = {0};
    KVZ_CHECK(kvz_config_load("/nonexistent/run.yaml", &c, &err) == KVZ_EIO &&
                  strstr(err.msg, "/nonexistent/run.yaml"),
              "missing file: %s", err.msg);
    char *path = kvz_path_join(kvz_test_tmpdir(), "bad_utf8.yaml");
    write_bytes(path, "oracle:\n  corpus: caf\xC3\x28\n", 22);
    KVZ_CHECK(kvz_config_load(path, &c, &err) == KVZ_ECONFIG && strstr(err.msg, ":2:") &&
                  strstr(err.msg, "UTF-8"),
              "invalid UTF-8: %s", err.msg);
    write_bytes(path, "oracle:\n  seed: 1\0\n", 19);
    KVZ_CHECK(kvz_config_load(path, &c, &err) == KVZ_ECONFIG && strstr(err.msg, "NUL byte"),
              "NUL byte: %s", err.msg);
    write_bytes(path, "\xFF\xFE" "o\0r\0", 6);
    KVZ_CHECK(kvz_config_load(path, &c, &err) == KVZ_ECONFIG, "UTF-16 file: %s", err.msg);
    free(path);
}

static void check_docs_list_every_key(void)
{
    const char *src = getenv("KVZ_SOURCE_DIR");
    if (!src)
        return;
    char *dir = kvz_path_join(src, "docs");
    char *path = kvz_path_join(dir, "configuration.md");
    char *text = NULL;
    size_t len, n;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_file_read_all(path, &text, &len, &err), err);
    const kvz_config_field *f = kvz_config_fields(&n);
    for (size_t i = 0; text && i < n; i++) {
        char needle[128];
        snprintf(needle, sizeof needle, "`%s`", f[i].key);
        KVZ_CHECK(strstr(text, needle) != NULL, "docs/configuration.md does not document %s",
                  f[i].key);
    }
    free(text);
    free(path);
    free(dir);
}

int main(void)
{
    check_defaults();
    check_good_values();
    check_set();
    check_layers_many_commas();
    check_string_round_trip();
    check_bad_files();
    const char *src = getenv("KVZ_SOURCE_DIR");
    if (src) {
        char *configs = kvz_path_join(src, "configs");
        KVZ_CHECK(for_each_yaml(configs, check_loads) >= 3, "fewer than 3 example configs");
        free(configs);
    }
    char good[4096], bad[4096];
    snprintf(good, sizeof good, "%s", kvz_test_fixture("configs/good"));
    snprintf(bad, sizeof bad, "%s", kvz_test_fixture("configs/bad"));
    KVZ_CHECK(for_each_yaml(good, check_loads) >= 8, "good fixtures missing");
    KVZ_CHECK(for_each_yaml(bad, check_fails_as_expected) >= 30, "bad fixtures missing");
    check_docs_list_every_key();
    return kvz_test_done();
}
