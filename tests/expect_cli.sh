#!/usr/bin/env bash
# Runs one command line and checks BOTH its exit status and its output (stdout and stderr
# together), unlike ctest's PASS_REGULAR_EXPRESSION, which ignores the exit status.
#   tests/expect_cli.sh [--match REGEX]... [--absent REGEX]... [--stdin FILE] EXIT REGEX -- COMMAND [ARG...]
# Passes when COMMAND exits with EXIT, its output has a line matching the extended regular
# expression REGEX (grep -E) and each --match one, and no line matching an --absent one.
set -uo pipefail
absent=() match=() stdin=/dev/null
while [[ $# -gt 0 && $1 == --* && $1 != -- ]]; do
  case $1 in
    --absent) absent+=("$2"); shift 2 ;;
    --match) match+=("$2"); shift 2 ;;
    --stdin) stdin=$2; shift 2 ;;
    *) echo "expect_cli.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 4 || $3 != -- ]]; then
  echo "usage: expect_cli.sh [--match RE]... [--absent RE]... [--stdin FILE] EXIT RE -- COMMAND..." >&2
  exit 2
fi
want_rc=$1 want=$2
shift 3
out=$("$@" < "$stdin" 2>&1)
rc=$?
fail=0
if [[ $rc -ne $want_rc ]]; then
  echo "FAIL: exit status $rc, expected $want_rc"
  fail=1
fi
for m in "$want" "${match[@]+"${match[@]}"}"; do
  if ! grep -Eq -- "$m" <<< "$out"; then
    echo "FAIL: no line matches: $m"
    fail=1
  fi
done
for a in "${absent[@]+"${absent[@]}"}"; do
  if grep -Eq -- "$a" <<< "$out"; then
    echo "FAIL: output matches what must be absent: $a"
    fail=1
  fi
done
echo "command: $*"
echo "exit status: $rc"
echo "output:"
printf '%s\n' "$out" | head -c 4000
exit $fail
