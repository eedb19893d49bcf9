/* fuzz_model_config: an HF config.json (model/model_config.h) parsed from
 * arbitrary bytes with the transformers defaults and validation, as
 * kvzap info / the checkpoint loader read it; a config that parses is
 * validated again and summarised as JSON. */
#include <stdlib.h>

#include "fuzz_common.h"
#include "model/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvz_model_config cfg;
    kvz_error err = {0};
    if (kvz_model_config_parse_json((const char *)data, size, "config.json", &cfg, &err) != KVZ_OK)
        return 0;
    if (kvz_model_config_validate(&cfg, "config.json", &err) != KVZ_OK)
        abort(); /* parse_json validates: a parsed config is valid */
    (void)kvz_arch_name(cfg.arch);
    free(kvz_model_config_to_json(&cfg));
    return 0;
}
