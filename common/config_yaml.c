/* config_yaml: applies a YAML file onto a kvz_run_config (libyaml document
 * API). Walks mappings along the schema's sections, rejects unknown keys,
 * duplicate keys, wrong node kinds and bad values with FILE:LINE:COL
 * messages, and reports malformed YAML / invalid UTF-8 where libyaml found it. */
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config.h"
#include "kvz_file.h"

typedef struct yaml_ctx {
    const char *path;
    const char *text; /* the file, for offset -> line:col */
    size_t len;
    yaml_document_t *doc;
    kvz_run_config *cfg;
    kvz_error *err;
} yaml_ctx;

static int fail_at(yaml_ctx *c, yaml_mark_t m, const char *fmt, const char *a, const char *b)
{
    char what[900];
    snprintf(what, sizeof what, fmt, a, b);
    return kvz_fail(c->err, KVZ_ECONFIG, "%s:%zu:%zu: %s", c->path, m.line + 1, m.column + 1,
                    what);
}

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

static const char *scalar_text(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

/* A plain (unquoted) scalar spelling YAML's null. */
static int is_plain_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

static int apply_mapping(yaml_ctx *c, yaml_node_t *map, const char *prefix);

static int apply_list(yaml_ctx *c, const kvz_config_field *f, yaml_node_t *seq)
{
    yaml_node_item_t *it = seq->data.sequence.items.start;
    size_t n = (size_t)(seq->data.sequence.items.top - it);
    const char **items = malloc((n ? n : 1) * sizeof *items);
    if (!items)
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory", c->path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(c->doc, it[i]);
        if (item->type != YAML_SCALAR_NODE || is_plain_null(item)) {
            free(items);
            return fail_at(c, item->start_mark, "key '%s': list items must be integers, got %s",
                           f->key, is_plain_null(item) ? "null" : node_kind(item));
        }
        items[i] = scalar_text(item);
    }
    char why[700];
    int rc = kvz_config_parse_layers(f, c->cfg, items, n, why, sizeof why);
    free(items);
    return rc ? fail_at(c, seq->start_mark, "key '%s': %s", f->key, why) : KVZ_OK;
}

static int apply_value(yaml_ctx *c, const kvz_config_field *f, yaml_node_t *v)
{
    if (v->type == YAML_SEQUENCE_NODE && f->type == KVZ_CFG_LAYERS)
        return apply_list(c, f, v);
    if (v->type != YAML_SCALAR_NODE) {
        char expected[256];
        snprintf(expected, sizeof expected, "expected %s, got %s", kvz_config_type_desc(f),
                 node_kind(v));
        return fail_at(c, v->start_mark, "key '%s': %s", f->key, expected);
    }
    char why[700];
    if (kvz_config_parse_into(f, c->cfg, scalar_text(v), is_plain_null(v), why, sizeof why))
        return fail_at(c, v->start_mark, "key '%s': %s", f->key, why);
    return KVZ_OK;
}

static int apply_section(yaml_ctx *c, const char *key, yaml_node_t *v)
{
    if (is_plain_null(v))
        return KVZ_OK; /* "oracle:" with nothing under it */
    if (v->type != YAML_MAPPING_NODE)
        return fail_at(c, v->start_mark, "'%s' is a section: expected a mapping of its keys, got %s",
                       key, node_kind(v));
    return apply_mapping(c, v, key);
}

/* Rejects a key that already appeared earlier in the same mapping. */
static int check_duplicate(yaml_ctx *c, yaml_node_pair_t *first, yaml_node_pair_t *pair,
                           const char *full)
{
    const char *k = scalar_text(yaml_document_get_node(c->doc, pair->key));
    for (yaml_node_pair_t *p = first; p < pair; p++) {
        yaml_node_t *other = yaml_document_get_node(c->doc, p->key);
        if (other->type == YAML_SCALAR_NODE && !strcmp(scalar_text(other), k)) {
            char where[64];
            snprintf(where, sizeof where, "%zu:%zu", other->start_mark.line + 1,
                     other->start_mark.column + 1);
            return fail_at(c, yaml_document_get_node(c->doc, pair->key)->start_mark,
                           "duplicate key '%s' (first given at line:col %s)", full, where);
        }
    }
    return KVZ_OK;
}

static int apply_pair(yaml_ctx *c, yaml_node_pair_t *first, yaml_node_pair_t *pair,
                      const char *prefix)
{
    yaml_node_t *k = yaml_document_get_node(c->doc, pair->key);
    yaml_node_t *v = yaml_document_get_node(c->doc, pair->value);
    if (k->type != YAML_SCALAR_NODE)
        return fail_at(c, k->start_mark, "keys must be plain names, got %s%s", node_kind(k), "");
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", scalar_text(k));
    int rc = check_duplicate(c, first, pair, full);
    if (rc)
        return rc;
    const kvz_config_field *f = kvz_config_find_field(full);
    if (f)
        return apply_value(c, f, v);
    if (kvz_config_is_section(full))
        return apply_section(c, full, v);
    char msg[900];
    kvz_config_unknown_key_message(full, msg, sizeof msg);
    return fail_at(c, k->start_mark, "%s%s", msg, "");
}

static int apply_mapping(yaml_ctx *c, yaml_node_t *map, const char *prefix)
{
    yaml_node_pair_t *first = map->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = first; p < map->data.mapping.pairs.top; p++) {
        int rc = apply_pair(c, first, p, prefix);
        if (rc)
            return rc;
    }
    return KVZ_OK;
}

/* ---------- parser errors ---------- */

/* 1-based line:col of a byte offset (libyaml reader errors give only offsets). */
static void offset_to_line_col(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

static int parser_failure(yaml_ctx *c, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) {
        size_t line, col;
        offset_to_line_col(c->text, c->len, p->problem_offset, &line, &col);
        return kvz_fail(c->err, KVZ_ECONFIG, "%s:%zu:%zu: invalid UTF-8 / encoding: %s (byte %zu)",
                        c->path, line, col, problem, p->problem_offset);
    }
    if (p->error == YAML_MEMORY_ERROR)
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: out of memory parsing YAML", c->path);
    if (p->context)
        return kvz_fail(c->err, KVZ_ECONFIG, "%s:%zu:%zu: malformed YAML: %s (%s at %zu:%zu)",
                        c->path, p->problem_mark.line + 1, p->problem_mark.column + 1, problem,
                        p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    return kvz_fail(c->err, KVZ_ECONFIG, "%s:%zu:%zu: malformed YAML: %s", c->path,
                    p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
}

/* Applies the root node of the (single) document. */
static int apply_root(yaml_ctx *c)
{
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    if (!root || is_plain_null(root))
        return KVZ_OK; /* empty file: all defaults */
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(c, root->start_mark,
                       "expected a mapping of sections (model, oracle, train, export) at the top "
                       "level, got %s%s",
                       node_kind(root), "");
    return apply_mapping(c, root, "");
}

/* Fails when the stream holds a second document. */
static int check_single_document(yaml_ctx *c, yaml_parser_t *parser)
{
    yaml_document_t extra;
    if (!yaml_parser_load(parser, &extra))
        return parser_failure(c, parser);
    yaml_node_t *root = yaml_document_get_root_node(&extra);
    int rc = KVZ_OK;
    if (root)
        rc = kvz_fail(c->err, KVZ_ECONFIG, "%s:%zu:%zu: expected one YAML document, found another",
                      c->path, root->start_mark.line + 1, root->start_mark.column + 1);
    yaml_document_delete(&extra);
    return rc;
}

static int apply_text(yaml_ctx *c)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return kvz_fail(c->err, KVZ_ENOMEM, "%s: cannot initialise the YAML parser", c->path);
    yaml_parser_set_input_string(&parser, (const unsigned char *)c->text, c->len);
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = parser_failure(c, &parser);
    } else {
        c->doc = &doc;
        rc = apply_root(c);
        if (rc == KVZ_OK)
            rc = check_single_document(c, &parser);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int kvz_config_apply_file(kvz_run_config *cfg, const char *path, kvz_error *err)
{
    char *text = NULL;
    size_t len = 0;
    if (kvz_path_is_dir(path))
        return kvz_fail(err, KVZ_EIO, "%s: is a directory, expected a YAML file", path);
    int rc = kvz_file_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    yaml_ctx c = {path, text, len, NULL, cfg, err};
    if (memchr(text, '\0', len)) {
        size_t line, col, off = (size_t)((char *)memchr(text, '\0', len) - text);
        offset_to_line_col(text, len, off, &line, &col);
        rc = kvz_fail(err, KVZ_ECONFIG, "%s:%zu:%zu: NUL byte in a YAML file", path, line, col);
    } else {
        rc = apply_text(&c);
    }
    free(text);
    return rc;
}
