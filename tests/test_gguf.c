/* test_gguf: the GGUF reader against the reference fixture
 * tests/fixtures/gguf/all_types.gguf (written by gguf-py, see
 * tests/reference/make_gguf_fixtures.py): header facts, every metadata value
 * (compared exactly: integers as decimal strings, floats as bit patterns,
 * strings byte for byte), typed-getter conversions and errors, and the tensor
 * table (names, GGML shapes, types, offsets, sizes). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvz_test.h"
#include "model/dequant.h"
#include "model/gguf.h"

static const char *TYPE_NAMES[] = {"uint8", "int8",   "uint16", "int16", "uint32",
                                   "int32", "float32", "bool",  "string", "array",
                                   "uint64", "int64",  "float64"};

static int type_from_name(const char *s)
{
    for (int i = 0; i < 13; i++)
        if (!strcmp(TYPE_NAMES[i], s))
            return i;
    return -1;
}

static int is_unsigned(int t)
{
    return t == KVZ_GGUF_UINT8 || t == KVZ_GGUF_UINT16 || t == KVZ_GGUF_UINT32 ||
           t == KVZ_GGUF_UINT64;
}

static int is_signed(int t)
{
    return t == KVZ_GGUF_INT8 || t == KVZ_GGUF_INT16 || t == KVZ_GGUF_INT32 ||
           t == KVZ_GGUF_INT64;
}

/* Compares one value (scalar or array element i; i < 0 = scalar). */
static void check_value(kvz_gguf *g, const char *key, int type, long i, json_t *want)
{
    kvz_error err = {0};
    int rc;
    if (is_unsigned(type)) {
        uint64_t got = 0;
        rc = i < 0 ? kvz_gguf_get_u64(g, key, &got, &err)
                   : kvz_gguf_array_u64(g, key, (size_t)i, &got, &err);
        KVZ_CHECK_OK(rc, err);
        uint64_t ref = strtoull(json_string_value(want), NULL, 10);
        KVZ_CHECK(got == ref, "%s[%ld]: %" PRIu64 " != %" PRIu64, key, i, got, ref);
    } else if (is_signed(type)) {
        int64_t got = 0;
        rc = i < 0 ? kvz_gguf_get_i64(g, key, &got, &err)
                   : kvz_gguf_array_i64(g, key, (size_t)i, &got, &err);
        KVZ_CHECK_OK(rc, err);
        int64_t ref = strtoll(json_string_value(want), NULL, 10);
        KVZ_CHECK(got == ref, "%s[%ld]: %" PRId64 " != %" PRId64, key, i, got, ref);
    } else if (type == KVZ_GGUF_FLOAT32 || type == KVZ_GGUF_FLOAT64) {
        double got = 0;
        rc = i < 0 ? kvz_gguf_get_f64(g, key, &got, &err)
                   : kvz_gguf_array_f64(g, key, (size_t)i, &got, &err);
        KVZ_CHECK_OK(rc, err);
        uint64_t ref = strtoull(json_string_value(want), NULL, 16), bits;
        if (type == KVZ_GGUF_FLOAT32) {
            float f = (float)got;
            uint32_t b32;
            memcpy(&b32, &f, 4);
            bits = b32;
        } else {
            memcpy(&bits, &got, 8);
        }
        KVZ_CHECK(bits == ref, "%s[%ld]: bits 0x%" PRIx64 " != 0x%" PRIx64, key, i, bits, ref);
    } else if (type == KVZ_GGUF_BOOL) {
        int got = -1;
        rc = i < 0 ? kvz_gguf_get_bool(g, key, &got, &err)
                   : kvz_gguf_array_bool(g, key, (size_t)i, &got, &err);
        KVZ_CHECK_OK(rc, err);
        KVZ_CHECK(got == json_is_true(want), "%s[%ld]: bool %d", key, i, got);
    } else if (type == KVZ_GGUF_STRING) {
        const char *s = NULL;
        size_t len = 0;
        rc = i < 0 ? kvz_gguf_get_str(g, key, &s, &len, &err)
                   : kvz_gguf_array_str(g, key, (size_t)i, &s, &len, &err);
        KVZ_CHECK_OK(rc, err);
        size_t rlen = json_string_length(want);
        KVZ_CHECK(len == rlen && (len == 0 || !memcmp(s, json_string_value(want), len)),
                  "%s[%ld]: string mismatch (%zu vs %zu bytes)", key, i, len, rlen);
    } else {
        KVZ_CHECK(0, "%s: unexpected type %d", key, type);
    }
}

static void check_metadata(kvz_gguf *g, json_t *meta)
{
    const char *key;
    json_t *entry;
    KVZ_CHECK(kvz_gguf_n_kv(g) == json_object_size(meta), "n_kv %zu", kvz_gguf_n_kv(g));
    json_object_foreach(meta, key, entry) {
        long idx = kvz_gguf_find_key(g, key);
        KVZ_CHECK(idx >= 0, "key %s missing", key);
        if (idx < 0)
            continue;
        KVZ_CHECK(!strcmp(kvz_gguf_key_name(g, (size_t)idx), key), "key name %s", key);
        int type = type_from_name(json_string_value(json_object_get(entry, "type")));
        KVZ_CHECK((int)kvz_gguf_kv_type(g, (size_t)idx) == type, "%s: type %d != %d", key,
                  (int)kvz_gguf_kv_type(g, (size_t)idx), type);
        if (type != KVZ_GGUF_ARRAY) {
            check_value(g, key, type, -1, json_object_get(entry, "value"));
            continue;
        }
        int et = type_from_name(json_string_value(json_object_get(entry, "elem_type")));
        json_t *vals = json_object_get(entry, "values");
        kvz_gguf_type got_et;
        size_t count = 0;
        kvz_error err = {0};
        KVZ_CHECK_OK(kvz_gguf_get_array(g, key, &got_et, &count, &err), err);
        KVZ_CHECK((int)got_et == et && count == json_array_size(vals), "%s: array %d/%zu", key,
                  (int)got_et, count);
        for (size_t i = 0; i < count && i < json_array_size(vals); i++)
            check_value(g, key, et, (long)i, json_array_get(vals, i));
    }
}

static void check_getter_errors(kvz_gguf *g)
{
    kvz_error err = {0};
    uint64_t u;
    int64_t i;
    double f;
    const char *s;
    size_t len;
    KVZ_CHECK(kvz_gguf_get_u64(g, "no.such.key", &u, &err) == KVZ_ENOTFOUND, "absent key");
    KVZ_CHECK(strstr(err.msg, "all_types.gguf") && strstr(err.msg, "no.such.key"), "%s", err.msg);
    KVZ_CHECK(kvz_gguf_get_u64(g, "test.i8", &u, &err) == KVZ_EFORMAT, "negative -> u64");
    KVZ_CHECK(kvz_gguf_get_i64(g, "test.u64", &i, &err) == KVZ_EFORMAT, "u64 max -> i64");
    KVZ_CHECK(kvz_gguf_get_i64(g, "test.u32", &i, &err) == KVZ_OK && i == 4294967295LL, "u32");
    KVZ_CHECK(kvz_gguf_get_u64(g, "test.f32", &u, &err) == KVZ_EFORMAT, "float -> u64");
    KVZ_CHECK(kvz_gguf_get_f64(g, "test.i32", &f, &err) == KVZ_OK && f == -2147483648.0, "i->f");
    KVZ_CHECK(kvz_gguf_get_str(g, "test.u8", &s, &len, &err) == KVZ_EFORMAT, "u8 -> str");
    KVZ_CHECK(strstr(err.msg, "test.u8") != NULL, "%s", err.msg);
    KVZ_CHECK(kvz_gguf_get_u64(g, "arr.u8", &u, &err) == KVZ_EFORMAT, "array -> u64");
    KVZ_CHECK(kvz_gguf_array_str(g, "arr.string", 5, &s, &len, &err) == KVZ_EINVAL, "index");
    KVZ_CHECK(kvz_gguf_array_i64(g, "arr.string", 0, &i, &err) == KVZ_EFORMAT, "str as int");
    KVZ_CHECK(kvz_gguf_array_i64(g, "arr.u64", 1, &i, &err) == KVZ_EFORMAT, "u64max as i64");
    KVZ_CHECK(kvz_gguf_array_i64(g, "arr.f32", 0, &i, &err) == KVZ_EFORMAT, "float as int");
    KVZ_CHECK(kvz_gguf_get_array(g, "test.string", NULL, NULL, &err) == KVZ_EFORMAT, "scalar");
}

static void check_tensors(kvz_gguf *g, json_t *tensors)
{
    KVZ_CHECK(kvz_gguf_n_tensors(g) == json_array_size(tensors), "n_tensors %zu",
              kvz_gguf_n_tensors(g));
    size_t k;
    json_t *jt;
    json_array_foreach(tensors, k, jt) {
        const char *name = json_string_value(json_object_get(jt, "name"));
        const kvz_gguf_tensor_info *t = kvz_gguf_find_tensor(g, name);
        KVZ_CHECK(t != NULL && t == kvz_gguf_tensor(g, k), "tensor %s at %zu", name, k);
        if (!t)
            continue;
        json_t *ne = json_object_get(jt, "ne");
        KVZ_CHECK(t->n_dims == json_array_size(ne), "%s: n_dims %u", name, t->n_dims);
        for (uint32_t d = 0; d < 4; d++) {
            uint64_t want = d < json_array_size(ne) ? (uint64_t)json_integer_value(json_array_get(ne, d)) : 1;
            KVZ_CHECK(t->ne[d] == want, "%s: ne[%u] %" PRIu64 " != %" PRIu64, name, d, t->ne[d],
                      want);
        }
        KVZ_CHECK(t->type == (uint32_t)json_integer_value(json_object_get(jt, "type_id")),
                  "%s: type %u", name, t->type);
        KVZ_CHECK(!strcmp(kvz_ggml_type_name(t->type),
                          json_string_value(json_object_get(jt, "type"))), "%s: type name", name);
        KVZ_CHECK(t->numel == (uint64_t)json_integer_value(json_object_get(jt, "numel")),
                  "%s: numel", name);
        KVZ_CHECK(t->nbytes == (size_t)json_integer_value(json_object_get(jt, "nbytes")),
                  "%s: nbytes %zu", name, t->nbytes);
        uint64_t off = (uint64_t)json_integer_value(json_object_get(jt, "offset"));
        KVZ_CHECK(kvz_gguf_tensor_offset(g, t) == off, "%s: offset", name);
    }
    KVZ_CHECK(kvz_gguf_find_tensor(g, "nope") == NULL, "absent tensor");
    KVZ_CHECK(kvz_gguf_tensor(g, kvz_gguf_n_tensors(g)) == NULL, "index past end");
}

static void check_unsupported_tensor(kvz_gguf *g)
{
    const kvz_gguf_tensor_info *t = kvz_gguf_find_tensor(g, "q5_k.unsupported");
    KVZ_CHECK(t != NULL, "q5_k tensor present");
    if (!t)
        return;
    float *out = malloc(t->numel * sizeof *out);
    kvz_error err = {0};
    KVZ_CHECK(kvz_gguf_tensor_to_f32(g, t, out, &err) == KVZ_EUNSUPPORTED, "Q5_K unsupported");
    KVZ_CHECK(strstr(err.msg, "q5_k.unsupported") && strstr(err.msg, "Q5_K"), "%s", err.msg);
    free(out);
}

int main(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(kvz_test_fixture("gguf/all_types.json"), 0, &jerr);
    KVZ_CHECK(doc != NULL, "all_types.json: %s", jerr.text);
    if (!doc)
        return kvz_test_done();
    kvz_gguf *g = NULL;
    kvz_error err = {0};
    KVZ_CHECK_OK(kvz_gguf_open(kvz_test_fixture("gguf/all_types.gguf"), &g, &err), err);
    if (g) {
        KVZ_CHECK(kvz_gguf_version(g) == 3, "version");
        KVZ_CHECK(kvz_gguf_alignment(g) == 64, "alignment %zu", kvz_gguf_alignment(g));
        KVZ_CHECK(kvz_gguf_data_offset(g) ==
                      (uint64_t)json_integer_value(json_object_get(doc, "data_offset")),
                  "data offset %" PRIu64, kvz_gguf_data_offset(g));
        KVZ_CHECK(strstr(kvz_gguf_path(g), "all_types.gguf") != NULL, "path");
        check_metadata(g, json_object_get(doc, "metadata"));
        check_getter_errors(g);
        check_tensors(g, json_object_get(doc, "tensors"));
        check_unsupported_tensor(g);
        kvz_gguf_close(g);
    }
    json_decref(doc);
    return kvz_test_done();
}
