#!/usr/bin/env bash
# test_oracle_run_defects: two defects of `kvzap oracle` found in review
# (issue 20), each failing before its fix:
#  1. oracle.n_tokens far above any document's length (1,000,000 on the
#     default model: 30 layers x 576 dims) sized host buffers by n_tokens
#     and failed at once with "out of memory"; buffers are now sized by what
#     the selected documents can give, and the dataset equals a run with
#     n_tokens just above the longest document.
#  2. An unfinished run's <output>.parts blocked the next run even with
#     --overwrite; --overwrite now discards it, and without it the message
#     says what to do.
# Env (set by ctest): KVZAP, KVZAP_DEFAULT_MODEL, KVZ_FIXTURES.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }

for i in 1 2 3; do
  printf '{"text": "Note %s: the cache keeps keys and values of every head, and the surrogate decides which to drop."}\n' "$i"
done > c.jsonl
common=(--quiet --threads 2 --set model.path="$KVZAP_DEFAULT_MODEL" --set oracle.corpus=c.jsonl
  --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000
  --set oracle.train_docs_per_subset=2 --set oracle.test_docs_per_subset=1)

# --- 1. n_tokens far beyond the documents ---
/usr/bin/time -f "%M" -o rss.txt "$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=1000000 \
  --set oracle.output=huge.h5 || fail "n_tokens=1000000 failed"
rss_mib=$(( $(cat rss.txt) / 1024 ))
echo "n_tokens=1000000: ok, peak RSS ${rss_mib} MiB"
[ "$rss_mib" -lt 2000 ] || fail "peak RSS ${rss_mib} MiB: buffers still sized by n_tokens?"
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=200 --set oracle.output=small.h5
h5diff small.h5 huge.h5 /samples /samples && h5diff small.h5 huge.h5 /layers /layers &&
  h5diff small.h5 huge.h5 /documents /documents || fail "the datasets' samples differ"
echo "same samples and layers as n_tokens=200"

# --- 2. an unfinished run's parts directory and --overwrite ---
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=16 --set oracle.docs_per_shard=1 \
  --set oracle.output=o.h5 --stop-after 1 >/dev/null 2>&1 || true
[ -d o.h5.parts ] && [ ! -e o.h5 ] || fail "expected an unfinished run (o.h5.parts)"
set +e
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=16 --set oracle.output=o.h5 2>err.txt
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a second plain run silently reused or replaced the parts directory"
grep -q -- "--resume to continue it, or --overwrite to discard it" err.txt ||
  fail "the message does not say what to do: $(cat err.txt)"
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=16 --set oracle.output=o.h5 --overwrite ||
  fail "--overwrite did not clear the unfinished run"
[ -f o.h5 ] && [ ! -e o.h5.parts ] || fail "no dataset after --overwrite"
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=16 --set oracle.output=fresh.h5
h5diff -c fresh.h5 o.h5 || fail "the --overwrite run differs from a fresh run"
mkdir x.h5.parts && touch x.h5.parts/notes.txt
set +e
"$KVZAP" oracle "${common[@]}" --set oracle.n_tokens=16 --set oracle.output=x.h5 --overwrite 2>err.txt
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "which kvzap did not write" err.txt && [ -f x.h5.parts/notes.txt ] ||
  fail "--overwrite removed a directory holding foreign files"
echo "ok"
