/* cmd_gguf: `kvzap gguf [FILE] [--tensors] [--key KEY]` - dumps a GGUF file:
 * version, alignment, every metadata key with its type and value (long
 * strings and arrays abbreviated), a tensor summary, and with --tensors the
 * full tensor table (name, GGML shape, type, data offset, bytes). --key KEY
 * prints one value in full. Reading and validation live in model/gguf.c. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "model/dequant.h"
#include "model/gguf.h"

static const char USAGE[] =
    "usage: kvzap gguf [FILE] [--tensors] [--key KEY]\n"
    "\n"
    "Dumps a GGUF (v2/v3) file after validating it completely: version,\n"
    "alignment, data-section offset, every metadata key with its type and value\n"
    "(strings over 80 bytes and arrays over 8 elements are abbreviated), and a\n"
    "count of tensors per ggml type. FILE defaults to the default model\n"
    "($KVZAP_DEFAULT_MODEL or ~/.cache/kvzap/SmolLM2-135M-Instruct.Q4_1.gguf).\n"
    "\n"
    "options:\n"
    "  --tensors   also list every tensor: index, name, GGML shape (ne[0] first,\n"
    "              i.e. row length first), type, data offset (relative to the\n"
    "              data section) and size in bytes\n"
    "  --key KEY   print only KEY's value, unabbreviated (a string raw, an array\n"
    "              one element per line); exit 1 when KEY is absent\n"
    "  -h, --help  show this help\n";

#define STR_ABBREV 80
#define ARRAY_ABBREV 8

static const char *TYPE_NAMES[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                   "bool", "string", "array", "u64", "i64", "f64"};

static const char *type_name(kvz_gguf_type t)
{
    return (unsigned)t < 13 ? TYPE_NAMES[t] : "?";
}

/* Quoted, escaped string; cut after max bytes (0 = no limit) at a UTF-8 boundary. */
static void print_quoted(const char *s, size_t len, size_t max)
{
    size_t n = len;
    if (max && len > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (n < len)
        printf("... (%zu bytes)", len);
}

/* Prints one scalar value (key's own value when i < 0, else array element i). */
static int print_value(const kvz_gguf *g, const char *key, kvz_gguf_type t, long i,
                       size_t str_max, kvz_error *err)
{
    int rc;
    size_t ix = i < 0 ? 0 : (size_t)i;
    if (t == KVZ_GGUF_STRING) {
        const char *s;
        size_t len;
        rc = i < 0 ? kvz_gguf_get_str(g, key, &s, &len, err)
                   : kvz_gguf_array_str(g, key, ix, &s, &len, err);
        if (rc == KVZ_OK)
            print_quoted(s, len, str_max);
    } else if (t == KVZ_GGUF_BOOL) {
        int b;
        rc = i < 0 ? kvz_gguf_get_bool(g, key, &b, err) : kvz_gguf_array_bool(g, key, ix, &b, err);
        if (rc == KVZ_OK)
            fputs(b ? "true" : "false", stdout);
    } else if (t == KVZ_GGUF_FLOAT32 || t == KVZ_GGUF_FLOAT64) {
        double d;
        rc = i < 0 ? kvz_gguf_get_f64(g, key, &d, err) : kvz_gguf_array_f64(g, key, ix, &d, err);
        if (rc == KVZ_OK)
            printf(t == KVZ_GGUF_FLOAT32 ? "%.9g" : "%.17g", d);
    } else if (t == KVZ_GGUF_UINT8 || t == KVZ_GGUF_UINT16 || t == KVZ_GGUF_UINT32 ||
               t == KVZ_GGUF_UINT64) {
        uint64_t u;
        rc = i < 0 ? kvz_gguf_get_u64(g, key, &u, err) : kvz_gguf_array_u64(g, key, ix, &u, err);
        if (rc == KVZ_OK)
            printf("%" PRIu64, u);
    } else {
        int64_t v;
        rc = i < 0 ? kvz_gguf_get_i64(g, key, &v, err) : kvz_gguf_array_i64(g, key, ix, &v, err);
        if (rc == KVZ_OK)
            printf("%" PRId64, v);
    }
    return rc;
}

/* "array[string, 49152] = [a, b, ...]"; full = one element per line, no cuts. */
static int print_array(const kvz_gguf *g, const char *key, int full, kvz_error *err)
{
    kvz_gguf_type et;
    size_t n;
    int rc = kvz_gguf_get_array(g, key, &et, &n, err);
    if (rc != KVZ_OK)
        return rc;
    if (full) {
        for (size_t i = 0; i < n && rc == KVZ_OK; i++) {
            rc = print_value(g, key, et, (long)i, 0, err);
            putchar('\n');
        }
        return rc;
    }
    printf("array[%s, %zu] = [", type_name(et), n);
    size_t shown = n > ARRAY_ABBREV ? ARRAY_ABBREV : n;
    for (size_t i = 0; i < shown && rc == KVZ_OK; i++) {
        if (i)
            fputs(", ", stdout);
        rc = print_value(g, key, et, (long)i, 40, err);
    }
    printf(n > shown ? ", ... (%zu more)]\n" : "]\n", n - shown);
    return rc;
}

static int print_kv(const kvz_gguf *g, size_t i, kvz_error *err)
{
    const char *key = kvz_gguf_key_name(g, i);
    kvz_gguf_type t = kvz_gguf_kv_type(g, i);
    printf("  %s: ", key);
    if (t == KVZ_GGUF_ARRAY)
        return print_array(g, key, 0, err);
    printf("%s = ", type_name(t));
    int rc = print_value(g, key, t, -1, STR_ABBREV, err);
    putchar('\n');
    return rc;
}

static void print_tensor_summary(const kvz_gguf *g)
{
    size_t count[64] = {0}, other = 0;
    for (size_t i = 0; i < kvz_gguf_n_tensors(g); i++) {
        uint32_t t = kvz_gguf_tensor(g, i)->type;
        if (t < 64)
            count[t]++;
        else
            other++;
    }
    printf("tensors: %zu (", kvz_gguf_n_tensors(g));
    const char *sep = "";
    for (uint32_t t = 0; t < 64; t++)
        if (count[t]) {
            printf("%s%zu %s", sep, count[t], kvz_ggml_type_name(t));
            sep = ", ";
        }
    printf("%s)\n", other ? ", others" : "");
}

static void print_tensor_table(const kvz_gguf *g)
{
    printf("%5s  %-32s %-24s %-6s %12s %12s\n", "index", "name", "shape (ne)", "type", "offset",
           "bytes");
    for (size_t i = 0; i < kvz_gguf_n_tensors(g); i++) {
        const kvz_gguf_tensor_info *t = kvz_gguf_tensor(g, i);
        char shape[96];
        int k = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && k < (int)sizeof shape; d++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%" PRIu64, d ? ", " : "",
                          t->ne[d]);
        if (k < (int)sizeof shape)
            snprintf(shape + k, sizeof shape - (size_t)k, "]");
        printf("%5zu  %-32s %-24s %-6s %12" PRIu64 " %12zu\n", i, t->name, shape,
               kvz_ggml_type_name(t->type), kvz_gguf_tensor_offset(g, t), t->nbytes);
    }
}

static int dump(const kvz_gguf *g, int tensors, kvz_error *err)
{
    printf("file: %s\nversion: %u\nalignment: %zu\ndata offset: %" PRIu64 "\n",
           kvz_gguf_path(g), kvz_gguf_version(g), kvz_gguf_alignment(g),
           kvz_gguf_data_offset(g));
    printf("metadata: %zu keys\n", kvz_gguf_n_kv(g));
    for (size_t i = 0; i < kvz_gguf_n_kv(g); i++) {
        int rc = print_kv(g, i, err);
        if (rc != KVZ_OK)
            return rc;
    }
    print_tensor_summary(g);
    if (tensors)
        print_tensor_table(g);
    return KVZ_OK;
}

static int dump_key(const kvz_gguf *g, const char *key, kvz_error *err)
{
    long i = kvz_gguf_find_key(g, key);
    if (i < 0)
        return kvz_fail(err, KVZ_ENOTFOUND, "%s: metadata key '%s' not found", kvz_gguf_path(g),
                        key);
    kvz_gguf_type t = kvz_gguf_kv_type(g, (size_t)i);
    if (t == KVZ_GGUF_ARRAY)
        return print_array(g, key, 1, err);
    if (t == KVZ_GGUF_STRING) {
        const char *s;
        size_t len;
        int rc = kvz_gguf_get_str(g, key, &s, &len, err);
        if (rc == KVZ_OK) {
            fwrite(s, 1, len, stdout);
            putchar('\n');
        }
        return rc;
    }
    int rc = print_value(g, key, t, -1, 0, err);
    putchar('\n');
    return rc;
}

int cmd_gguf(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(USAGE, stdout);
        return 0;
    }
    const char *file = NULL, *key = NULL;
    int tensors = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tensors"))
            tensors = 1;
        else if (!strcmp(argv[i], "--key") && i + 1 < argc)
            key = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return cli_usage_error("gguf", "unknown or incomplete option", USAGE);
        else if (file)
            return cli_usage_error("gguf", "more than one FILE given", USAGE);
        else
            file = argv[i];
    }
    if (!file)
        file = cli_default_model();
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    int rc = kvz_gguf_open(file, &g, &err);
    if (rc == KVZ_OK)
        rc = key ? dump_key(g, key, &err) : dump(g, tensors, &err);
    kvz_gguf_close(g);
    fflush(stdout);
    return rc == KVZ_OK ? 0 : cli_error("gguf", err.msg);
}
