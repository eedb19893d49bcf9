/* fuzz_common: helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 * Every target defines LLVMFuzzerTestOneInput; it is linked either with
 * libFuzzer (fuzz_<target>, clang, KVZ_FUZZ=ON) or with replay_main.c
 * (replay_<target>, every build: runs the target on files, for ctest).
 *
 * Targets whose API takes paths write the input to files of one temporary
 * directory per process (created on first use under $TMPDIR, removed at
 * exit), rewriting them on every call. Fixed inputs (a tokenizer, shard
 * files) come from tests/fixtures ($KVZ_FIXTURES, else the source tree). */
#ifndef KVZ_FUZZ_COMMON_H
#define KVZ_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional: targets with fixed inputs to load once define it. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The per-process temporary directory (aborts when it cannot be made). */
const char *kvz_fuzz_tmpdir(void);
/* tmpdir/name into buf (aborts when it does not fit). */
const char *kvz_fuzz_tmp_path(const char *name, char *buf, size_t cap);
/* Writes data[0..size) to path, replacing it (aborts on failure). */
void kvz_fuzz_write_file(const char *path, const void *data, size_t size);
/* Copies the fixture file rel (relative to tests/fixtures) to path. */
void kvz_fuzz_copy_fixture(const char *rel, const char *path);
/* tests/fixtures/rel into buf. */
const char *kvz_fuzz_fixture_path(const char *rel, char *buf, size_t cap);
/* A NUL-terminated malloc'ed copy of data (aborts on OOM). */
char *kvz_fuzz_strndup(const uint8_t *data, size_t size);

/* Little-endian reads for targets that split their input. */
uint32_t kvz_fuzz_le16(const uint8_t *p);

#endif
