/* kvz_json: noticing failed allocations inside jansson.
 * jansson does not report every failed allocation: its lexer drops a
 * character of a string when growing the buffer fails (load.c lex_save
 * ignores strbuffer_append_byte's result) and json_load* still succeeds with
 * the mangled value; json_object_set_new, json_array_append_new and friends
 * drop the value. kvz_json_begin() routes jansson's allocations through
 * kvzap (once, process-wide) and clears this thread's flag;
 * kvz_json_failed() is 1 when one of them failed on this thread since.
 *
 *   kvz_json_begin();
 *   json_t *root = json_load_file(path, 0, &jerr);
 *   if (kvz_json_failed()) { json_decref(root); -> KVZ_ENOMEM "out of memory" }
 *
 * The same brackets a JSON document being built before it is dumped.
 *
 * begin/failed do not nest (an inner begin clears the flag). Where a document
 * is built across calls that may bracket JSON of their own (a training run's
 * metrics.json across layers and exports), take a mark instead:
 *
 *   kvz_json_mark m = kvz_json_mark_now();
 *   ... build, call anything ...
 *   if (kvz_json_failed_since(m)) -> KVZ_ENOMEM
 */
#ifndef KVZ_JSON_H
#define KVZ_JSON_H

void kvz_json_begin(void);
int kvz_json_failed(void);

/* failed allocations on this thread so far (installs the hooks like begin) */
typedef unsigned long kvz_json_mark;
kvz_json_mark kvz_json_mark_now(void);
/* 1 when an allocation inside jansson failed on this thread since m */
int kvz_json_failed_since(kvz_json_mark m);

#endif
