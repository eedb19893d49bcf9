#!/usr/bin/env bash
# test_prune_cli: the pruning flags end to end on the default model.
#  1. --prune oracle (the KVzip+ repeat pass over the prompt's text) at ratio
#     0.5: each head keeps floor(T/2) pairs, so kvpress's compression is
#     within 1/T of 0.5; threshold mode with a tau below every log-score
#     evicts nothing. A prompt whose tokens are not the oracle context's
#     (leading whitespace, which the oracle strips) is refused.
#  2. Chunked prefill with kvzap's budget mode hits its ratio, and the
#     report says so; ppl and logits take the same flags.
# Env (set by ctest): KVZAP, KVZ_FIXTURES, KVZAP_DEFAULT_MODEL.
set -euo pipefail
M=${KVZAP_DEFAULT_MODEL:-}
[ -n "$M" ] && [ -f "$M" ] || { echo "skipped: the default model is not cached"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
text=$(python3 -c "
import json
d = [json.loads(l) for l in open('$KVZ_FIXTURES/../../data/sample/corpus/prose.jsonl')]
print(d[0]['text'][:2500].strip())")
compression() { sed -nE 's/.*compression ([0-9.]+) \(kvpress.*/\1/p' "$1"; }

"$KVZAP" generate "$M" --prompt "$text" --max-tokens 4 --ids --prune oracle --ratio 0.5 \
  --threads 2 >out.txt 2>err.txt || fail "oracle ratio: $(tail -2 err.txt)"
c=$(compression err.txt)
python3 -c "import sys; c=float('$c'); sys.exit(0 if abs(c-0.5) < 0.005 else 1)" ||
  fail "oracle ratio 0.5: compression $c"
"$KVZAP" generate "$M" --prompt "$text" --max-tokens 2 --ids --prune oracle --tau -1e9 \
  --threads 2 >out.txt 2>err.txt || fail "oracle threshold: $(tail -2 err.txt)"
[ "$(compression err.txt)" = "0.0000" ] || fail "tau -1e9 evicted something: $(cat err.txt)"
set +e
"$KVZAP" generate "$M" --prompt "  $text" --max-tokens 2 --prune oracle --ratio 0.5 \
  >out.txt 2>err.txt
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "do not end with the oracle context" err.txt ||
  fail "leading whitespace: rc $rc, $(cat err.txt)"

"$KVZAP" generate "$M" --prompt "$text" --max-tokens 4 --ids --threads 2 --prune kvzap \
  --surrogate "$KVZ_FIXTURES/prune/surrogate_linear" --ratio 0.6 --prune-mode budget \
  --prefill-chunk 128 >out.txt 2>err.txt || fail "budget: $(tail -2 err.txt)"
c=$(compression err.txt)
python3 -c "import sys; c=float('$c'); sys.exit(0 if abs(c-0.6) < 0.005 else 1)" ||
  fail "budget 0.6: compression $c"
grep -q "prefill chunks of 128" err.txt || fail "report: $(cat err.txt)"

printf '%s\n' "$text" >text.txt
"$KVZAP" ppl "$M" text.txt --window 256 --stride 128 --threads 2 --prune streaming --ratio 0.5 \
  --prune-window 32 --prefill-chunk 64 >out.txt 2>err.txt || fail "ppl: $(tail -2 err.txt)"
grep -q "pruning streaming: compression" out.txt || fail "ppl report: $(cat out.txt)"
"$KVZAP" logits "$M" --text "$text" --out l.f32 --threads 2 --prune snapkv --ratio 0.5 \
  --prefill-chunk 128 >out.txt 2>err.txt || fail "logits: $(tail -2 err.txt)"
[ -s l.f32 ] || fail "logits file"
echo "ok: oracle ratio/threshold, budget with chunks, ppl and logits with pruning"
