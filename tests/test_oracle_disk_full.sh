#!/usr/bin/env bash
# test_oracle_disk_full: `kvzap oracle` runs that hit a full disk (simulated
# with `ulimit -f` and SIGXFSZ ignored, so write() fails with EFBIG) at three
# moments (the first progress record, a later shard, the final merge) fail
# cleanly (exit 1, the file named, no crash, no final .h5, no temporary
# file left), and `--resume`
# with room to write then ends with a dataset identical (h5diff) to an
# uninterrupted run. Env (set by ctest): KVZAP, KVZ_FIXTURES.
set -uo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

for i in 1 2 3 4 5 6; do
  printf '{"text": "Note %s: the cache keeps the keys and values of every attention head."}\n' "$i"
done > c.jsonl
oracle() {
  "$KVZAP" oracle --quiet --set model.path="$KVZ_FIXTURES/tiny/qwen3_f16" --set oracle.corpus=c.jsonl \
    --set oracle.n_tokens=8 --set oracle.min_doc_tokens=0 --set oracle.max_doc_tokens=100000 \
    --set oracle.train_docs_per_subset=2 --set oracle.test_docs_per_subset=1 \
    --set oracle.docs_per_shard=1 "$@"
}
fail() { echo "FAIL: $*"; exit 1; }

# full_<r>.h5: the uninterrupted reference with oracle.ridge_stats=<r>
for r in true false; do
  oracle --set oracle.ridge_stats=$r --set oracle.output=full_$r.h5 >/dev/null ||
    fail "the uninterrupted run (ridge_stats $r) failed"
done
full_kb=$(( $(stat -c %s full_true.h5) / 1024 ))

# disk_full NAME LIMIT_KIB RIDGE [--resume]: one run under the limit must fail
# cleanly, naming the file; --resume with room must then finish it.
disk_full() {
  local name=$1 out=$1.h5 lim=$2 r=$3
  shift 3
  (trap '' XFSZ; ulimit -f "$lim"; oracle --set oracle.ridge_stats=$r --set oracle.output=$out "$@") \
    >/dev/null 2>err.txt
  local rc=$?
  echo "$name (limit $lim KiB): exit $rc: $(head -n 1 err.txt)"
  [ "$rc" -ge 1 ] && [ "$rc" -le 125 ] || fail "$name: exit $rc (expected a clean failure)"
  ! grep -qE 'Sanitizer|runtime error:' err.txt || fail "$name: sanitizer report: $(cat err.txt)"
  grep -q "File too large" err.txt || fail "$name: the message does not give the reason"
  grep -q "$out" err.txt || fail "$name: the message does not name the file"
  [ ! -e "$out" ] || fail "$name: a final $out exists after the failure"
  ! ls "$out.parts" 2>/dev/null | grep -q '\.tmp$' || fail "$name: a temporary file was left in $out.parts"
  oracle --set oracle.ridge_stats=$r --set oracle.output=$out --resume >/dev/null 2>err.txt ||
    fail "$name: --resume failed: $(cat err.txt)"
  [ ! -e "$out.parts" ] || fail "$name: $out.parts left behind after the resumed run"
  h5diff -c full_$r.h5 "$out" >/dev/null || fail "$name: the resumed dataset differs from the uninterrupted one"
}

# the first progress record (ridge.h5) cannot be written
disk_full first_record 4 true
# the disk fills up mid-run: two shards committed, the third cannot be written
oracle --set oracle.ridge_stats=false --set oracle.output=mid_run.h5 --stop-after 2 >/dev/null ||
  fail "the --stop-after 2 run failed"
disk_full mid_run 32 false --resume
# every shard is committed but the merged file does not fit
disk_full final_merge $(( full_kb * 85 / 100 )) true
echo "PASS: disk-full failures are clean and --resume completes identical datasets"
