# Helpers the shell tests share; each test sources it:
#   source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"

# fresh_dir DIR: DIR, created empty (no file of an earlier run can satisfy a check).
fresh_dir() { rm -rf "$1" && mkdir -p "$1"; }

# check DESCRIPTION COMMAND...: runs COMMAND and prints "ok: DESCRIPTION" or "FAIL: ..."; a
# failure sets fail=1 (the test's exit status: exit $fail).
fail=0
check() {
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}

# matches FILE REGEX: some line of FILE matches the extended regular expression REGEX.
matches() { grep -Eq -- "$2" "$1"; }

# die MESSAGE: "PROG: MESSAGE" on stderr and exit 1 (PROG: $prog when set, else the script name).
die() {
  echo "${prog:-$(basename "$0" .sh)}: $*" >&2
  exit 1
}

# kjv_dataset BUILD_DIR WORK BYTES VOCAB: WORK/data, a dataset of the first BYTES of the KJV
# (the kjv fixture's BUILD_DIR/corpus/kjv.txt) with a BPE tokenizer of VOCAB ids trained on it
# (WORK/tok.json) and 5% held out for validation.
kjv_dataset() {
  head -c "$3" "$1/corpus/kjv.txt" > "$2/kjv.txt"
  "$1/data/st-data" train-tokenizer --input "$2/kjv.txt" --vocab_size "$4" \
    --output "$2/tok.json" > /dev/null
  "$1/data/st-data" prepare --tokenizer "$2/tok.json" --input "$2/kjv.txt" \
    --output "$2/data" --val_fraction 0.05 > /dev/null
}
