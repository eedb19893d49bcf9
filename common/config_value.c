/* config_value: the typed value parsers of the config schema (shared by YAML
 * loading, defaults and --set) and printing a config back as YAML. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


#include "config.h"
#include "kvz_utf8.h"

const char *kvz_config_type_desc(const kvz_config_field *f)
{
    switch (f->type) {
    case KVZ_CFG_STRING: return "a string";
    case KVZ_CFG_INT: return "an integer";
    case KVZ_CFG_SIZE: return "a non-negative integer";
    case KVZ_CFG_DOUBLE: return "a number";
    case KVZ_CFG_BOOL: return "true or false";
    case KVZ_CFG_ENUM: return "one of the listed names";
    case KVZ_CFG_LAYERS: return "'all' or a list of layer indices";
    }
    return "a value";
}

static void *field_ptr(const kvz_config_field *f, kvz_run_config *cfg)
{
    return (char *)cfg + f->offset;
}

static int fail_why(char *why, size_t size, const char *fmt, const char *a, const char *b)
{
    snprintf(why, size, fmt, a, b);
    return KVZ_ECONFIG;
}

/* ---------- scalar parsers ---------- */

static int parse_int64(const char *text, int64_t *out)
{
    const char *p = text;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end || errno == ERANGE)
        return 0;
    *out = (int64_t)v;
    return 1;
}

static int parse_size(const char *text, size_t *out)
{
    const char *p = text[0] == '+' ? text + 1 : text;
    if (*p < '0' || *p > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (*end || errno == ERANGE || v > SIZE_MAX)
        return 0;
    *out = (size_t)v;
    return 1;
}

static int parse_double(const char *text, double *out)
{
    if (!*text || strchr(" \t\n\r", text[0]))
        return 0;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*end || errno == ERANGE || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

static int parse_bool(const char *text, int *out)
{
    static const char *const T[] = {"true", "True", "TRUE"}, *const F[] = {"false", "False", "FALSE"};
    for (int i = 0; i < 3; i++) {
        if (!strcmp(text, T[i]))
            return *out = 1, 1;
        if (!strcmp(text, F[i]))
            return *out = 0, 1;
    }
    return 0;
}

static int valid_utf8(const char *s)
{
    return kvz_utf8_validate(s, strlen(s), NULL, NULL) == KVZ_OK;
}

/* A copy of text; for path fields a leading "~/" becomes $HOME/. */
static char *expand_home(const kvz_config_field *f, const char *text)
{
    const char *home = getenv("HOME");
    if (!(f->bounds & KVZ_CFG_PATH) || strncmp(text, "~/", 2) != 0 || !home || !*home)
        return strdup(text);
    size_t n = strlen(home) + strlen(text);
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s", home, text + 1);
    return out;
}

/* ---------- bounds ---------- */

static int check_bounds(const kvz_config_field *f, double v, const char *text, char *why,
                        size_t size)
{
    unsigned b = f->bounds;
    int low_ok = !(b & KVZ_CFG_MIN) || ((b & KVZ_CFG_MIN_EXCLUSIVE) ? v > f->min : v >= f->min);
    int high_ok = !(b & KVZ_CFG_MAX) || ((b & KVZ_CFG_MAX_EXCLUSIVE) ? v < f->max : v <= f->max);
    if (low_ok && high_ok)
        return 0;
    char range[96];
    if ((b & KVZ_CFG_MIN) && (b & KVZ_CFG_MAX))
        snprintf(range, sizeof range, "in %c%g, %g%c", (b & KVZ_CFG_MIN_EXCLUSIVE) ? '(' : '[',
                 f->min, f->max, (b & KVZ_CFG_MAX_EXCLUSIVE) ? ')' : ']');
    else if (b & KVZ_CFG_MIN)
        snprintf(range, sizeof range, "%s %g", (b & KVZ_CFG_MIN_EXCLUSIVE) ? ">" : ">=", f->min);
    else
        snprintf(range, sizeof range, "%s %g", (b & KVZ_CFG_MAX_EXCLUSIVE) ? "<" : "<=", f->max);
    return fail_why(why, size, "must be %s, got %s", range, text);
}

/* ---------- per-type setters ---------- */

static int set_string(const kvz_config_field *f, kvz_run_config *cfg, const char *text,
                      int null_value, char *why, size_t size)
{
    char **slot = field_ptr(f, cfg);
    int unset = null_value || !*text;
    if (unset && (f->bounds & KVZ_CFG_NOT_NULL))
        return fail_why(why, size, "must not be %s%s", null_value ? "null" : "empty", "");
    if (!unset && !valid_utf8(text))
        return fail_why(why, size, "the value is not valid UTF-8%s%s", "", "");
    if (!unset && f->check && f->check(text, why, size))
        return KVZ_ECONFIG;
    char *copy = unset ? NULL : expand_home(f, text);
    if (!unset && !copy)
        return fail_why(why, size, "out of memory%s%s", "", "");
    free(*slot);
    *slot = copy;
    return KVZ_OK;
}

static int set_enum(const kvz_config_field *f, kvz_run_config *cfg, const char *text, char *why,
                    size_t size)
{
    char names[256] = "";
    for (int i = 0; f->choices[i]; i++) {
        if (!strcmp(text, f->choices[i])) {
            *(int *)field_ptr(f, cfg) = i;
            return KVZ_OK;
        }
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", f->choices[i]);
    }
    return fail_why(why, size, "expected one of %s, got '%s'", names, text);
}

static int set_number(const kvz_config_field *f, kvz_run_config *cfg, const char *text, char *why,
                      size_t size)
{
    void *p = field_ptr(f, cfg);
    int64_t i;
    size_t z;
    double d;
    if (f->type == KVZ_CFG_INT && parse_int64(text, &i)) {
        if (check_bounds(f, (double)i, text, why, size))
            return KVZ_ECONFIG;
        *(int64_t *)p = i;
    } else if (f->type == KVZ_CFG_SIZE && parse_size(text, &z)) {
        if (check_bounds(f, (double)z, text, why, size))
            return KVZ_ECONFIG;
        *(size_t *)p = z;
    } else if (f->type == KVZ_CFG_DOUBLE && parse_double(text, &d)) {
        if (check_bounds(f, d, text, why, size))
            return KVZ_ECONFIG;
        *(double *)p = d;
    } else {
        return fail_why(why, size, "expected %s, got '%s'", kvz_config_type_desc(f), text);
    }
    return KVZ_OK;
}

int kvz_config_parse_layers(const kvz_config_field *f, kvz_run_config *cfg,
                            const char *const *items, size_t n, char *why, size_t size)
{
    if (n == 0)
        return fail_why(why, size, "expected 'all' or a non-empty list of layer indices%s%s", "",
                        "");
    int64_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return fail_why(why, size, "out of memory%s%s", "", "");
    for (size_t i = 0; i < n; i++) {
        int bad = !parse_int64(items[i], &ids[i]) || ids[i] < 0 || ids[i] > 100000;
        for (size_t j = 0; !bad && j < i; j++)
            bad = ids[j] == ids[i] ? 2 : 0;
        if (bad) {
            free(ids);
            return fail_why(why, size,
                            bad == 2 ? "layer %s is listed twice%s"
                                     : "expected a layer index (0..100000), got '%s'%s",
                            items[i], "");
        }
    }
    kvz_layer_list *l = field_ptr(f, cfg);
    free(l->ids);
    *l = (kvz_layer_list){0, n, ids};
    return KVZ_OK;
}

/* "all", "3", "0,1,2" or "[0, 1, 2]". */
static int set_layers_text(const kvz_config_field *f, kvz_run_config *cfg, const char *text,
                           char *why, size_t size)
{
    if (!strcmp(text, "all")) {
        kvz_layer_list *l = field_ptr(f, cfg);
        free(l->ids);
        *l = (kvz_layer_list){1, 0, NULL};
        return KVZ_OK;
    }
    size_t len = strlen(text), n_items = 1;
    for (const char *c = text; (c = strchr(c, ',')); c++)
        n_items++; /* one item per comma-separated field, empty ones included */
    char *buf = malloc(len + 1);
    const char **items = malloc(n_items * sizeof *items);
    if (!buf || !items) {
        free(buf);
        free(items);
        return fail_why(why, size, "out of memory%s%s", "", "");
    }
    memcpy(buf, text, len + 1);
    char *s = buf + strspn(buf, " ");
    size_t end = strlen(s);
    while (end && s[end - 1] == ' ')
        s[--end] = '\0';
    if (s[0] == '[' && end && s[end - 1] == ']') {
        s[end - 1] = '\0';
        s++;
    }
    size_t n = 0;
    for (char *tok = s; *tok || n == 0;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        tok += strspn(tok, " ");
        for (size_t e = strlen(tok); e && tok[e - 1] == ' '; e--)
            tok[e - 1] = '\0';
        if (*tok || comma)
            items[n++] = tok;
        if (!comma)
            break;
        tok = comma + 1;
    }
    int rc = kvz_config_parse_layers(f, cfg, items, n, why, size);
    free(items);
    free(buf);
    return rc;
}

int kvz_config_parse_into(const kvz_config_field *f, kvz_run_config *cfg, const char *text,
                          int null_value, char *why, size_t size)
{
    if (f->type == KVZ_CFG_STRING)
        return set_string(f, cfg, text, null_value, why, size);
    if (null_value)
        return fail_why(why, size, "expected %s, got null%s", kvz_config_type_desc(f), "");
    switch (f->type) {
    case KVZ_CFG_BOOL: {
        int b;
        if (!parse_bool(text, &b))
            return fail_why(why, size, "expected true or false, got '%s'%s", text, "");
        *(int *)field_ptr(f, cfg) = b;
        return KVZ_OK;
    }
    case KVZ_CFG_ENUM: return set_enum(f, cfg, text, why, size);
    case KVZ_CFG_LAYERS: return set_layers_text(f, cfg, text, why, size);
    default: return set_number(f, cfg, text, why, size);
    }
}

/* ---------- printing ---------- */

/* Prints s (valid UTF-8) as a YAML double-quoted scalar that libyaml reads
 * back to the same bytes: every code point outside YAML's printable set
 * (YAML 1.1 5.1: C0 and C1 controls, DEL, U+FEFF, U+FFFE/U+FFFF) and the
 * line breaks YAML folds (NEL, LS, PS) are escaped. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    size_t left = strlen(s);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        long step = kvz_utf8_step(p, left);
        if (step < 0) { /* not UTF-8 (only a non-UTF-8 $HOME can put it here):
                         * cannot round-trip; print the bytes as escapes */
            for (long i = 0; i < -step; i++)
                fprintf(out, "\\x%02X", p[i]);
            p += -step, left -= (size_t)-step;
            continue;
        }
        uint32_t cp;
        size_t len = kvz_utf8_decode(p, &cp);
        if (cp == '"' || cp == '\\')
            fprintf(out, "\\%c", (int)cp);
        else if (cp == '\n')
            fputs("\\n", out);
        else if (cp == '\t')
            fputs("\\t", out);
        else if (cp == 0x85)
            fputs("\\N", out);
        else if (cp == 0x2028 || cp == 0x2029)
            fputs(cp == 0x2028 ? "\\L" : "\\P", out);
        else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
            fprintf(out, "\\x%02X", (unsigned)cp);
        else if (cp == 0xfeff || cp == 0xfffe || cp == 0xffff)
            fprintf(out, "\\u%04X", (unsigned)cp);
        else
            fwrite(p, 1, len, out);
        p += len, left -= len;
    }
    fputc('"', out);
}

/* Shortest text that strtod reads back to exactly v, always with a '.' or 'e'. */
static void print_double(FILE *out, double v)
{
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, out);
    if (!strpbrk(buf, ".eE"))
        fputs(".0", out);
}

static void print_value(FILE *out, const kvz_config_field *f, const kvz_run_config *cfg)
{
    const void *p = (const char *)cfg + f->offset;
    switch (f->type) {
    case KVZ_CFG_STRING:
        if (*(char *const *)p)
            print_quoted(out, *(char *const *)p);
        else
            fputs("null", out);
        break;
    case KVZ_CFG_INT: fprintf(out, "%" PRId64, *(const int64_t *)p); break;
    case KVZ_CFG_SIZE: fprintf(out, "%zu", *(const size_t *)p); break;
    case KVZ_CFG_DOUBLE: print_double(out, *(const double *)p); break;
    case KVZ_CFG_BOOL: fputs(*(const int *)p ? "true" : "false", out); break;
    case KVZ_CFG_ENUM: fputs(f->choices[*(const int *)p], out); break;
    case KVZ_CFG_LAYERS: {
        const kvz_layer_list *l = p;
        if (l->all) {
            fputs("all", out);
            break;
        }
        fputc('[', out);
        for (size_t i = 0; i < l->n; i++)
            fprintf(out, "%s%" PRId64, i ? ", " : "", l->ids[i]);
        fputc(']', out);
        break;
    }
    }
}

/* Number of leading dotted components a and b share. */
static size_t shared_components(const char *a, const char *b)
{
    size_t n = 0;
    for (size_t i = 0;; i++) {
        if (a[i] != b[i])
            return n;
        if (a[i] == '.')
            n++;
        if (!a[i])
            return n;
    }
}

/* Prints the section headers between the previous key and key; returns the depth. */
static size_t print_headers(FILE *out, const char *prev, const char *key)
{
    size_t depth = 0, same = prev ? shared_components(prev, key) : 0;
    const char *c = key;
    for (const char *dot; (dot = strchr(c, '.')); c = dot + 1, depth++)
        if (depth >= same)
            fprintf(out, "%*s%.*s:\n", (int)(2 * depth), "", (int)(dot - c), c);
    return depth;
}

int kvz_config_write_yaml(const kvz_run_config *cfg, FILE *out, kvz_error *err)
{
    size_t n;
    const kvz_config_field *fields = kvz_config_fields(&n);
    fputs("# kvzap run configuration: every key with its effective value\n", out);
    for (size_t i = 0; i < n; i++) {
        const char *key = fields[i].key;
        size_t depth = print_headers(out, i ? fields[i - 1].key : NULL, key);
        const char *leaf = strrchr(key, '.');
        fprintf(out, "%*s%s: ", (int)(2 * depth), "", leaf ? leaf + 1 : key);
        print_value(out, &fields[i], cfg);
        fprintf(out, "  # %s\n", fields[i].doc);
    }
    if (fflush(out) != 0 || ferror(out))
        return kvz_fail(err, KVZ_EIO, "cannot write the configuration: %s", strerror(errno));
    return KVZ_OK;
}
