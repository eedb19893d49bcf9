/* oracle_writer: the writer thread and its slot queue (see oracle_writer.h).
 * One mutex guards the queue; `changed` is signalled on every state change
 * (slot submitted, slot freed, error, stop). Slots move free -> acquired ->
 * queued (FIFO ring) -> being appended -> free. */
#include "oracle_writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kvz_oracle_writer {
    kvz_oracle_writer_options opt;
    kvz_oracle_slot *slots;     /* [n_slots] */
    kvz_oracle_slot **free_list; /* stack of free slots */
    size_t n_free;
    kvz_oracle_slot **queue;    /* FIFO ring of submitted slots */
    size_t q_head, q_len;
    pthread_mutex_t mu;
    pthread_cond_t changed;
    pthread_t thread;
    int started, stopping, joined;
    int rc;                     /* first append error */
    kvz_error err;
    kvz_oracle_writer_stats stats;
};

static void *host_alloc(kvz_oracle_writer *w, size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    return w->opt.host_alloc ? w->opt.host_alloc(w->opt.alloc_user, bytes) : malloc(bytes);
}

static void host_free(kvz_oracle_writer *w, void *p)
{
    if (!p)
        return;
    if (w->opt.host_free)
        w->opt.host_free(w->opt.alloc_user, p);
    else
        free(p);
}

static int alloc_slot(kvz_oracle_writer *w, kvz_oracle_slot *s)
{
    const kvz_oracle_writer_options *o = &w->opt;
    size_t n = o->n_max, L = o->n_layers;
    s->token_id = host_alloc(w, n * sizeof *s->token_id);
    s->position = host_alloc(w, n * sizeof *s->position);
    s->scores = host_alloc(w, L * n * o->n_kv_heads * sizeof *s->scores);
    if (o->with_hidden)
        s->hidden = host_alloc(w, L * n * o->d_model * sizeof *s->hidden);
    return s->token_id && s->position && s->scores && (!o->with_hidden || s->hidden);
}

static void free_slots(kvz_oracle_writer *w)
{
    for (size_t i = 0; w->slots && i < w->opt.n_slots; i++) {
        kvz_oracle_slot *s = &w->slots[i];
        host_free(w, s->token_id);
        host_free(w, s->position);
        host_free(w, s->scores);
        host_free(w, s->hidden);
    }
    free(w->slots);
    free(w->free_list);
    free(w->queue);
}

/* Ready + append of one slot, outside the lock; errors get the slot's label. */
static int write_slot(kvz_oracle_writer *w, const kvz_oracle_slot *s, kvz_error *err)
{
    int rc = w->opt.ready ? w->opt.ready(w->opt.ready_user, s, err) : KVZ_OK;
    rc = rc ? rc : w->opt.append(w->opt.append_user, s, err);
    if (rc != KVZ_OK) {
        char msg[KVZ_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kvz_fail(err, rc, "%s: %s", s->label, msg);
    }
    return rc;
}

static void *writer_main(void *arg)
{
    kvz_oracle_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->q_len == 0 && !w->stopping)
            pthread_cond_wait(&w->changed, &w->mu);
        if (w->q_len == 0)
            break; /* stopping and drained */
        kvz_oracle_slot *s = w->queue[w->q_head];
        w->q_head = (w->q_head + 1) % w->opt.n_slots;
        w->q_len--;
        if (w->rc == KVZ_OK) { /* after an error, queued slots are dropped */
            pthread_mutex_unlock(&w->mu);
            kvz_error e = {0};
            int rc = write_slot(w, s, &e);
            pthread_mutex_lock(&w->mu);
            if (rc != KVZ_OK) {
                w->rc = rc;
                w->err = e;
            } else {
                w->stats.docs_appended++;
                w->stats.samples_appended += s->n;
                w->stats.prompt_tokens_appended += s->n_prompt_tokens;
                w->stats.last_index = s->index;
            }
        }
        w->free_list[w->n_free++] = s;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->mu);
    if (w->opt.thread_exit)
        w->opt.thread_exit(w->opt.thread_exit_user);
    return NULL;
}

static int init_queue(kvz_oracle_writer *w, kvz_error *err)
{
    size_t k = w->opt.n_slots;
    w->slots = calloc(k, sizeof *w->slots);
    w->free_list = calloc(k, sizeof *w->free_list);
    w->queue = calloc(k, sizeof *w->queue);
    if (!w->slots || !w->free_list || !w->queue)
        return kvz_fail(err, KVZ_ENOMEM, "oracle writer: out of memory");
    for (size_t i = 0; i < k; i++) {
        w->slots[i].id = i;
        if (!alloc_slot(w, &w->slots[i]))
            return kvz_fail(err, KVZ_ENOMEM,
                            "oracle writer: out of memory (%zu host buffers of %zu samples x "
                            "%zu layers x %zu dims)",
                            k, w->opt.n_max, w->opt.n_layers, w->opt.d_model);
        w->free_list[w->n_free++] = &w->slots[k - 1 - i];
    }
    return KVZ_OK;
}

int kvz_oracle_writer_start(const kvz_oracle_writer_options *opt, kvz_oracle_writer **out,
                            kvz_error *err)
{
    *out = NULL;
    if (!opt || !opt->append || opt->n_max == 0 || opt->n_layers == 0)
        return kvz_fail(err, KVZ_EINVAL, "oracle writer: no append function or empty shape");
    kvz_oracle_writer *w = calloc(1, sizeof *w);
    if (!w)
        return kvz_fail(err, KVZ_ENOMEM, "oracle writer: out of memory");
    w->opt = *opt;
    if (w->opt.n_slots == 0)
        w->opt.n_slots = 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->changed, NULL);
    int rc = init_queue(w, err);
    if (rc == KVZ_OK && pthread_create(&w->thread, NULL, writer_main, w) != 0)
        rc = kvz_fail(err, KVZ_ENOMEM, "oracle writer: cannot start the writer thread");
    if (rc != KVZ_OK) {
        w->joined = 1;
        kvz_oracle_writer_free(w);
        return rc;
    }
    w->started = 1;
    *out = w;
    return KVZ_OK;
}

int kvz_oracle_writer_acquire(kvz_oracle_writer *w, kvz_oracle_slot **slot, kvz_error *err)
{
    *slot = NULL;
    pthread_mutex_lock(&w->mu);
    while (w->n_free == 0 && w->rc == KVZ_OK)
        pthread_cond_wait(&w->changed, &w->mu);
    int rc = w->rc;
    if (rc != KVZ_OK) {
        if (err)
            *err = w->err;
    } else {
        *slot = w->free_list[--w->n_free];
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void kvz_oracle_writer_submit(kvz_oracle_writer *w, kvz_oracle_slot *slot)
{
    pthread_mutex_lock(&w->mu);
    w->queue[(w->q_head + w->q_len) % w->opt.n_slots] = slot;
    w->q_len++;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mu);
}

void kvz_oracle_writer_cancel(kvz_oracle_writer *w, kvz_oracle_slot *slot)
{
    pthread_mutex_lock(&w->mu);
    w->free_list[w->n_free++] = slot;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mu);
}

void kvz_oracle_writer_get_stats(kvz_oracle_writer *w, kvz_oracle_writer_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

int kvz_oracle_writer_finish(kvz_oracle_writer *w, kvz_error *err)
{
    if (!w->joined) {
        pthread_mutex_lock(&w->mu);
        w->stopping = 1;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        w->joined = 1;
    }
    if (w->rc != KVZ_OK && err)
        *err = w->err;
    return w->rc;
}

void kvz_oracle_writer_free(kvz_oracle_writer *w)
{
    if (!w)
        return;
    if (w->started && !w->joined)
        kvz_oracle_writer_finish(w, NULL);
    free_slots(w);
    pthread_cond_destroy(&w->changed);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
