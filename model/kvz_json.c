/* kvz_json: see kvz_json.h. */
#include "kvz_json.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>

static _Thread_local int json_oom;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        json_oom = 1;
    return p;
}

static void json_free(void *p)
{
    free(p);
}

/* objects allocated before this with plain malloc are freed with plain free:
 * the pair stays compatible */
static void install(void)
{
    json_set_alloc_funcs(json_malloc, json_free);
}

void kvz_json_begin(void)
{
    pthread_once(&json_once, install);
    json_oom = 0;
}

int kvz_json_failed(void)
{
    return json_oom;
}
