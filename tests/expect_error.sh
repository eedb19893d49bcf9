#!/usr/bin/env bash
# expect_error.sh: the bad-input test runner.
#   expect_error.sh --list TABLE      print the row names of TABLE (checks the format)
#   expect_error.sh --row TABLE NAME  run row NAME of TABLE
#   expect_error.sh REGEX COMMAND     run COMMAND directly
# TABLE rows: name <TAB> stderr regex (extended) <TAB> bash command; '#' lines
# and blank lines are ignored. COMMAND runs in a fresh temp directory and the
# test passes only when it fails cleanly: exit status 1..125 (not a crash or
# signal), stderr matching REGEX, and no sanitizer report.
set -u

list_rows() {
  awk -F'\t' '/^#/ || /^[[:space:]]*$/ { next }
              NF < 3 || $1 !~ /^[A-Za-z0-9_.-]+$/ { print FILENAME ":" NR ": malformed row" > "/dev/stderr"; bad = 1; next }
              seen[$1]++ { print FILENAME ":" NR ": duplicate name " $1 > "/dev/stderr"; bad = 1; next }
              { print $1 }
              END { exit bad }' "$1"
}

case "${1:-}" in
--list)
  list_rows "$2"
  exit $?
  ;;
--row)
  row=$(awk -F'\t' -v name="$3" '$1 == name { print; exit }' "$2")
  [ -n "$row" ] || { echo "no row '$3' in $2"; exit 1; }
  regex=$(printf '%s' "$row" | cut -f2)
  cmd=$(printf '%s' "$row" | cut -f3-)
  ;;
*)
  regex=$1
  cmd=$2
  ;;
esac

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
