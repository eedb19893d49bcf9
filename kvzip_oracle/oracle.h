/* oracle: the `kvzap oracle` job as a library call. Reads a run
 * configuration (common/config.h: model and oracle sections), selects the
 * corpus (data/corpus.h), and harvests every selected document in dataset
 * order: repeat prompt, sampled positions, one scoring pass (single-pass
 * KVzip+ or chunked), then one append to the crash-safe store
 * (oracle_store.h), which merges into the final HDF5 file at the end.
 * Memory: the model, one document's activations, two documents' samples
 * (the document being scored and the one the writer thread appends), and
 * the ridge sums; never the corpus or the dataset.
 * Device: model.device (auto: cuda when a CUDA device is present and the
 * scoring is kvzip_plus, else cpu); model.precision on cuda. */
#ifndef KVZ_ORACLE_H
#define KVZ_ORACLE_H

#include <stddef.h>

#include "../common/config.h"
#include "../common/kvz_error.h"

typedef enum kvz_oracle_phase {
    KVZ_ORACLE_SELECTING = 0, /* scanning and tokenizing the corpus */
    KVZ_ORACLE_HARVESTING,    /* one call after every document */
    KVZ_ORACLE_MERGING,       /* writing the final file */
    KVZ_ORACLE_DONE,
    KVZ_ORACLE_STARTING       /* the model is loaded: device and precision are known */
} kvz_oracle_phase;

typedef struct kvz_oracle_progress {
    kvz_oracle_phase phase;
    size_t docs_done, docs_total; /* documents committed (incl. resumed) / selected */
    size_t docs_resumed;          /* committed by an earlier run */
    size_t tokens_this_run;       /* prompt tokens run by this process */
    size_t samples_written;
    double elapsed_s;             /* since the harvest started in this process */
    const char *current_source;   /* last document's source, or NULL */
    const char *device;           /* "cpu", "cuda:0 <name>" (NULL before STARTING) */
    const char *precision;        /* "float32" or "bfloat16" (NULL before STARTING) */
} kvz_oracle_progress;

typedef void (*kvz_oracle_progress_fn)(const kvz_oracle_progress *p, void *user);

typedef struct kvz_oracle_options {
    int resume;                     /* continue "<output>.parts" if present */
    int overwrite;                  /* replace an existing output file */
    size_t stop_after_docs;         /* testing: return KVZ_OK early after this many
                                       documents of this run (0 = no limit); the run
                                       stays resumable */
    kvz_oracle_progress_fn progress; /* may be NULL */
    void *user;
    int dry_run;                    /* select, tokenize, time a few documents and
                                       fill summary.plan; write nothing */
    size_t dry_run_timed_docs;      /* documents scored for the time estimate (0: 2) */
} kvz_oracle_options;

/* What a run would do (kvz_oracle_options.dry_run). */
enum { KVZ_ORACLE_PLAN_MAX_SUBSETS = 64 };
typedef struct kvz_oracle_plan {
    size_t n_subsets;              /* the first KVZ_ORACLE_PLAN_MAX_SUBSETS are listed */
    struct {
        char name[128];
        size_t train_docs, test_docs;
    } subsets[KVZ_ORACLE_PLAN_MAX_SUBSETS];
    size_t n_docs, prompt_tokens, samples;
    double bytes_with_hidden, bytes_without_hidden; /* the final dataset, estimated */
    size_t timed_docs, timed_tokens;
    double timed_seconds, estimated_seconds;       /* whole harvest, extrapolated by
                                                      prompt tokens from the timed pass */
} kvz_oracle_plan;

typedef struct kvz_oracle_summary {
    char output[4096];
    size_t n_documents, n_samples, docs_resumed;
    size_t corpus_scanned, corpus_eligible;
    size_t tokens_this_run;
    double seconds;         /* whole call: model load, selection, harvest, merge */
    double harvest_seconds; /* the document loop alone */
    int finished; /* 0 when stop_after_docs ended it early */
    char device[320];   /* the engine that ran: "cpu" or "cuda:0 <name>" */
    char precision[16]; /* "float32" or "bfloat16" */
    kvz_oracle_plan plan; /* dry_run only */
    char warning[1024]; /* "" or what could not be tidied up after a complete run */
} kvz_oracle_summary;

/* Runs the job; cfg must have passed kvz_config_validate. Errors name the
 * model, corpus document (source) or output file and the problem. */
int kvz_oracle_harvest(const kvz_run_config *cfg, const kvz_oracle_options *opt,
                       kvz_oracle_summary *summary_or_NULL, kvz_error *err);

#endif
