/* tokenizer_internal: the private data of the tokenizer and the functions its
 * files (tokenizer*.c) share. Not part of the public API. */
#ifndef KVZ_TOKENIZER_INTERNAL_H
#define KVZ_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"
#include "../common/kvz_utf8.h"

/* ---- growable arrays and small helpers ---- */
typedef struct tok_range {
    size_t start, end; /* bytes, [start, end) */
} tok_range;

typedef struct tok_ranges {
    tok_range *v;
    size_t n, cap;
} tok_ranges;

int tok_ranges_push(tok_ranges *r, size_t start, size_t end);
void tok_ranges_free(tok_ranges *r);

/* ---- text: UTF-8, byte-level alphabet, NFC with alignments ---- */
/* Decodes one code point of valid UTF-8 at s (returns its byte length). */
/* GPT-2 byte <-> unicode alphabet. */
uint32_t tok_byte_to_cp(unsigned char b);
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not in the alphabet */
/* Appends the byte-level spelling of bytes[0..n) to buf (NUL-terminated,
 * needs 2n+1 bytes). Returns its length. */
size_t tok_bytes_to_bytelevel(const unsigned char *bytes, size_t n, char *buf);
/* Rust char::is_whitespace (Unicode White_Space). */
int tok_is_white_space(uint32_t cp);
/* Rust char::is_numeric (general category Nd, Nl, No). */
int tok_is_numeric(uint32_t cp);
/* Rust regex \w (Unicode word character). */
int tok_is_word_char(uint32_t cp);

/* A normalized piece of text: bytes plus, per byte, the original byte span it
 * came from (absolute offsets in the original text). */
typedef struct tok_normalized {
    char *text;
    size_t len;
    uint32_t *align; /* [2*len]: start, end per byte */
} tok_normalized;

/* NFC-normalizes text[start..end) of the original with HF's alignment rules. */
int tok_nfc(const char *text, size_t start, size_t end, tok_normalized *out);
void tok_normalized_free(tok_normalized *n);

/* Appends the UTF-8 of bytes with invalid sequences replaced by U+FFFD the
 * way Rust's String::from_utf8_lossy does. out needs 3*n+1 bytes. */
size_t tok_utf8_lossy(const unsigned char *bytes, size_t n, char *out);

/* ---- pre-tokenizer steps ---- */
typedef enum tok_pre_kind {
    TOK_PRE_SPLIT,     /* regex, behaviour Isolated */
    TOK_PRE_DIGITS,    /* numeric characters, individually or contiguous */
    TOK_PRE_BYTELEVEL  /* the byte-level step; with use_regex, the GPT-2 split */
} tok_pre_kind;

typedef struct tok_pre_step {
    tok_pre_kind kind;
    pcre2_code *re;     /* SPLIT, BYTELEVEL with use_regex; else NULL */
    int individual;     /* DIGITS */
} tok_pre_step;

#define TOK_MAX_PRE_STEPS 8

/* Compiles an HF (Oniguruma-syntax) regex for PCRE2 with UTF+UCP, rewriting
 * \s and \S to Oniguruma's Unicode whitespace set. what names it in errors. */
int tok_regex_compile(const char *pattern, size_t len, int literal, const char *what,
                      pcre2_code **out, kvz_error *err);
extern const char TOK_GPT2_REGEX[];
extern const char TOK_LLAMA3_REGEX[];
extern const char TOK_QWEN2_REGEX[];

/* Splits each range of r (bytes of text) by the step; result replaces r. */
int tok_pre_apply(const tok_pre_step *step, const char *text, tok_ranges *r, kvz_error *err);

/* ---- vocabulary and merges ---- */
typedef struct tok_strmap { /* string -> id, open addressing */
    uint32_t *slots;        /* id + 1, 0 = empty */
    size_t mask;
} tok_strmap;

typedef struct tok_merge_slot {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank, merged;
} tok_merge_slot;

typedef struct tok_merges {
    tok_merge_slot *slots;
    size_t mask, n;
} tok_merges;

/* ---- added tokens ---- */
typedef struct tok_added {
    char *content;     /* as HF stores it */
    size_t len;
    char *match;       /* what is searched: content, or NFC(content) when
                          normalized and the tokenizer normalizes */
    size_t match_len;
    int32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} tok_added;

typedef struct tok_added_set { /* tokens matched in one pass, by first byte */
    const tok_added **by_first[256]; /* per first byte: longest first */
    size_t n_first[256];
    size_t n;
} tok_added_set;

/* One match (or a gap when id < 0) of the added-token scan over a string. */
typedef struct tok_split {
    size_t start, end;
    int32_t id;
} tok_split;

/* ---- the tokenizer ---- */
struct kvz_tokenizer {
    char *source;      /* path, for messages */
    char *pre_name;    /* "llama3", "qwen2", "smollm", "gpt2", "custom" */
    char describe[256];

    /* ids */
    size_t n_ids;      /* max id + 1 over vocabulary and added tokens */
    size_t cap_ids;
    char **token;      /* [n_ids] model vocabulary string, NULL = none */
    size_t *token_len; /* [n_ids] */
    int32_t *added_of; /* [n_ids] index into added[] or -1 */
    size_t n_vocab;    /* model vocabulary entries */
    tok_strmap vocab;  /* model vocabulary: string -> id */
    int32_t byte_id[256];

    tok_merges merges;
    int ignore_merges;
    int32_t unk_id;    /* -1 when none */

    tok_added *added;
    size_t n_added, cap_added;
    tok_added_set raw_set;  /* normalized == false */
    tok_added_set norm_set; /* normalized == true (content normalized) */

    int nfc;
    tok_pre_step pre[TOK_MAX_PRE_STEPS];
    size_t n_pre;

    /* post-processing */
    int trim_offsets, trim_add_prefix_space;
    int32_t *prefix_ids, *suffix_ids; /* added by add_special */
    size_t n_prefix, n_suffix;
    int32_t bos_id, eos_id;

    size_t max_token_bytes; /* longest vocabulary string or added-token match, >= 4
                               (kvz_tokenize_count's lower bound) */
};

/* Construction helpers (tokenizer.c). */
kvz_tokenizer *tok_new(const char *source);
/* Sets the model-vocabulary string of id (grows the tables). */
int tok_set_token(kvz_tokenizer *t, int32_t id, const char *s, size_t len, kvz_error *err);
/* Builds the string -> id map over all vocabulary tokens (a later id wins
 * over an earlier one with the same string). */
int tok_vocab_build(kvz_tokenizer *t, kvz_error *err);
int32_t tok_vocab_find(const kvz_tokenizer *t, const char *s, size_t len);
int tok_add_added(kvz_tokenizer *t, const tok_added *a, kvz_error *err);
/* After vocab, merges, added tokens and pipeline are set: byte ids, added
 * sets, description. */
int tok_finish(kvz_tokenizer *t, kvz_error *err);

/* BPE (tokenizer_bpe.c). */
int tok_merges_init(tok_merges *m, size_t expected);
void tok_merges_free(tok_merges *m);
/* Later duplicates replace earlier ones (as HF's HashMap collect does). */
int tok_merges_put(tok_merges *m, int32_t left, int32_t right, int32_t rank, int32_t merged);
const tok_merge_slot *tok_merges_get(const tok_merges *m, int32_t left, int32_t right);
/* BPE of one pre-token (raw bytes): appends ids and per-token byte lengths. */
typedef struct tok_bpe_out {
    int32_t *ids;
    uint32_t *lens;
    size_t n, cap;
} tok_bpe_out;
typedef struct tok_bpe_scratch tok_bpe_scratch;
tok_bpe_scratch *tok_bpe_scratch_new(void);
void tok_bpe_scratch_free(tok_bpe_scratch *s);
int tok_bpe_word(const kvz_tokenizer *t, const unsigned char *word, size_t n, tok_bpe_scratch *s,
                 tok_bpe_out *out);

/* Added-token scan (tokenizer_added.c): splits s[0..n) into gaps and
 * matches. */
int tok_added_set_build(tok_added_set *set, const tok_added *added, size_t n_added, int normalized,
                        kvz_error *err);
void tok_added_set_free(tok_added_set *set);
int tok_added_find(const tok_added_set *set, const char *s, size_t n, tok_split **out, size_t *n_out);

/* Loaders. */
int tok_load_json(const char *json_path, const char *config_path, kvz_tokenizer **out, kvz_error *err);
int tok_load_gguf(const kvz_gguf *g, kvz_tokenizer **out, kvz_error *err);

#endif
