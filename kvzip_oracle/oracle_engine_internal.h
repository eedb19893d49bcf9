/* oracle_engine_internal: the engine struct shared by oracle_engine.c (the
 * interface and the CPU engine) and oracle_engine_cuda.c (the CUDA engine). */
#ifndef KVZ_ORACLE_ENGINE_INTERNAL_H
#define KVZ_ORACLE_ENGINE_INTERNAL_H

#include "oracle_engine.h"

typedef struct kvz_oracle_cuda_engine kvz_oracle_cuda_engine; /* oracle_engine_cuda.c */

struct kvz_oracle_engine {
    kvz_oracle_engine_options opt;
    char device_name[320];
    const char *precision;          /* "float32" / "bfloat16" */
    const kvz_model_config *cfg;    /* owned by the forward */
    kvz_forward *cpu;               /* cpu engine */
    kvz_oracle_cuda_engine *cuda;   /* cuda engine */
};

int kvz_oracle_cuda_engine_open(const kvz_checkpoint *ck, kvz_oracle_engine *e, kvz_error *err);
void kvz_oracle_cuda_engine_free(kvz_oracle_cuda_engine *c);
int kvz_oracle_cuda_engine_score(kvz_oracle_engine *e, const kvz_oracle_prompt *p,
                                 const size_t *positions, size_t n, float *out_hidden,
                                 float *out_logscores, size_t slot, kvz_error *err);
int kvz_oracle_cuda_engine_ready(kvz_oracle_engine *e, size_t slot, kvz_error *err);

#endif
