#!/usr/bin/env bash
# expect_error.sh REGEX COMMAND: runs COMMAND (a bash snippet) in a fresh temp
# directory and passes only when it fails cleanly: exit status 1..125 (not a
# crash or signal), stderr matching REGEX (extended regex), and no sanitizer
# report. Used for the bad-input tests listed in tests/bad_input/*.tsv.
set -u
regex=$1
cmd=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
bash -c "$cmd" >"$work/.stdout" 2>"$work/.stderr"
rc=$?
fail() {
  echo "FAIL: $1"
  echo "command: $cmd"
  echo "exit status: $rc"
  echo "--- stderr ---"; head -c 4000 "$work/.stderr"
  echo "--- stdout ---"; head -c 2000 "$work/.stdout"
  exit 1
}
[ "$rc" -ne 0 ] || fail "expected a non-zero exit status"
[ "$rc" -lt 126 ] || fail "crashed or was killed (status >= 126)"
if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|Segmentation fault' "$work/.stderr"; then
  fail "sanitizer report or crash"
fi
grep -qE -- "$regex" "$work/.stderr" || fail "stderr does not match /$regex/"
lines=$(grep -c . "$work/.stderr")
echo "ok: exit $rc, $lines stderr line(s): $(head -n 1 "$work/.stderr")"
exit 0
