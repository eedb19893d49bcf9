/* cli_forward: helpers shared by the forward-pass commands (generate, ppl,
 * logits): option parsing for --threads and id lists, opening a model with
 * its forward pass and tokenizer, timing and peak RSS. */
#ifndef KVZ_CLI_FORWARD_H
#define KVZ_CLI_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/config.h"
#include "../model/checkpoint.h"
#include "../model/forward.h"
#include "../model/tokenizer.h"
#include "../trainer/prune.h"

/* Where the forward runs: --device auto|cpu|cuda (auto: cuda when a device
 * is visible, else cpu) and --precision bfloat16|float32 (cuda only; the cpu
 * pass is always float32), with the defaults of `kvzap oracle`. */
typedef struct cli_device {
    int device;    /* KVZ_DEVICE_* */
    int precision; /* KVZ_PRECISION_* */
} cli_device;
#define CLI_DEVICE_DEFAULT {KVZ_DEVICE_AUTO, KVZ_PRECISION_BFLOAT16}
/* The two lines --help prints for them. */
extern const char CLI_DEVICE_HELP[];
/* 1 when opt is --device or --precision. */
int cli_is_device_flag(const char *opt);
/* Parses one of them; prints the error and returns 2 on nonsense. */
int cli_parse_device_flag(const char *cmd, const char *opt, const char *value, cli_device *d);

typedef struct cli_model {
    kvz_checkpoint *ck;
    kvz_forward *fwd;
    kvz_tokenizer *tok; /* NULL unless asked for */
} cli_model;

/* Parses a thread count (1..4096); prints the error and returns 2 on nonsense. */
int cli_parse_threads(const char *cmd, const char *text, int *out);
/* Parses a positive size ("--window 512"); prints the error and returns 2. */
int cli_parse_size(const char *cmd, const char *opt, const char *text, size_t *out);
/* "1,2,3" (commas and/or spaces) -> malloc'ed ids; prints the error, returns 2. */
int cli_parse_ids(const char *cmd, const char *text, int32_t **ids, size_t *n);
/* Opens path (checkpoint + forward on dev (NULL: the defaults) with
 * n_threads and max_tokens, tokenizer when want_tokenizer). Prints "kvzap
 * <cmd>: <msg>" and returns 1 on failure. */
int cli_model_open(const char *cmd, const char *path, const cli_device *dev, int n_threads,
                   size_t max_tokens, int want_tokenizer, cli_model *m);
void cli_model_close(cli_model *m);

/* Pruning the KV cache while running (trainer/prune.h) on a ragged
 * per-head cache: --prune kvzap --surrogate PATH --tau T (KVzap's threshold,
 * kvpress DMSPress semantics) or --ratio R (ratio/budget modes), the
 * baselines full, streaming, random and snapkv at --ratio R, with --window,
 * --sinks, --seed, --prune-mode, --prune-decoding and --prefill-chunk N
 * (a chunked prefill evicting between chunks, so the cache stays bounded). */
typedef struct cli_prune {
    const char *method;    /* NULL: no pruning (the dense cache) */
    const char *surrogate; /* kvzap: an export, kvpress directory or GGUF, Linear or MLP */
    const char *mode;      /* NULL: threshold with --tau, ratio with --ratio */
    double tau, ratio;
    int tau_set, ratio_set, decoding;
    size_t window, sinks, prefill_chunk; /* 0: not given */
    uint64_t seed;
    int seed_set;
    const char *oracle_text; /* oracle: the prompt's text, set before opening */
    float *oracle_scores;  /* oracle: [L, Hkv, oracle_len] KVzip+ log-scores */
    size_t oracle_len;
    int timed;             /* set before opening: time the policy's calls */
    double policy_seconds; /* their wall-clock total */
    kvz_surrogate *s;      /* opened by cli_model_open_pruned */
    kvz_prune *policy;
} cli_prune;
/* The flags' help lines. */
extern const char CLI_PRUNE_HELP[];
/* 1 when opt is a pruning flag taking a value; --prune-decoding takes none
 * (cli_parse_prune_flag accepts it with value NULL). */
int cli_is_prune_flag(const char *opt);
/* Parses one of them; prints the error and returns 2 on nonsense. */
int cli_parse_prune_flag(const char *cmd, const char *opt, const char *value, cli_prune *p);
/* Checks the combination (kvzap needs --surrogate and one of --tau/--ratio,
 * the baselines --ratio, the rest need --prune); prints the error, returns 2. */
int cli_prune_check(const char *cmd, const cli_prune *p);
/* cli_model_open with pruning (p NULL or p->method NULL: none): the forward
 * gets the ragged cache and the policy, the surrogate is loaded and checked
 * against the model, the window against its context. */
int cli_model_open_pruned(const char *cmd, const char *path, const cli_device *dev,
                          int n_threads, size_t max_tokens, int want_tokenizer, cli_prune *p,
                          cli_model *m);
/* Runs ids[n] as a prefill: in chunks of p->prefill_chunk tokens when set
 * (the policy evicting between chunks), else in one call; logits_mode and
 * logits as kvz_forward_run (KVZ_LOGITS_ALL: [n, vocab] over all chunks).
 * Leaves the policy in decoding mode. */
int cli_prefill(cli_model *m, cli_prune *p, const int32_t *ids, size_t n, int logits_mode,
                float *logits, kvz_error *err);
/* Prints to stderr what pruning did: kvpress's compression ratio, kept
 * pairs and K/V bytes against the full cache, the cache's peak bytes. */
void cli_prune_report(const char *cmd, const cli_prune *p, const cli_model *m);
/* Frees the policy and the surrogate. */
void cli_prune_close(cli_prune *p);
/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons and falls back
 * to its Prescott (SSE3) kernels, 3-5x slower than its AVX-512/AVX2 ones. The
 * core type can only be chosen before libopenblas initialises, so when the
 * core is Prescott, OPENBLAS_CORETYPE is unset and the CPU has AVX-512F (or
 * AVX2), this sets OPENBLAS_CORETYPE=SkylakeX (Haswell) and re-executes
 * /proc/self/exe with the same arguments. Returns only when it did nothing
 * (or the re-exec failed); the result is then still correct, just slower.
 * An OPENBLAS_CORETYPE already set is always respected; KVZAP_BLAS_TUNE=0
 * turns this off. */
void cli_tune_openblas(void);
/* Monotonic seconds. */
double cli_now(void);
/* Peak resident set size of this process in MiB (getrusage). */
double cli_peak_rss_mib(void);

#endif
