/* kvz_json: see kvz_json.h. */
#include "kvz_json.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>

/* failures on this thread: a count that only grows (marks), and the count
 * at the last kvz_json_begin */
static _Thread_local unsigned long json_oom, json_begin_at;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        json_oom++;
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
    json_begin_at = json_oom;
}

int kvz_json_failed(void)
{
    return json_oom != json_begin_at;
}

kvz_json_mark kvz_json_mark_now(void)
{
    pthread_once(&json_once, install);
    return json_oom;
}

int kvz_json_failed_since(kvz_json_mark m)
{
    return json_oom != m;
}
