#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + libFuzzer; UBSan does not recover, so
# undefined behaviour fails the run) in build-fuzz and runs each for its share of the time. One
# target per parser of untrusted input:
#   model_file         the model-file reader (seeds: tiny models the writer makes at start-up)
#   jinja              the Jinja chat-template engine (tests/data/chat/templates, fuzz_jinja.dict)
#   hf_configs         config.json, tokenizer_config.json, generation_config.json
#   safetensors        a safetensors file: header and data (SafetensorsFile::Open)
#   safetensors_index  model.safetensors.index.json
#   tokenizer_json     tokenizer.json (BpeTokenizer::FromJson, encode, decode)
#   train_config       the train config JSON (ParseTrainConfig)
#   token_manifest     a token dataset's manifest.json (ParseManifest)
#   routing_profile    the routing profile of --pin_profile (ParseRoutingProfile)
#   gguf               a GGUF file (GgufFile: from memory and through pread)
# Seeds: tests/data/fuzz_<target> where present, plus what a target writes into
# $ST_FUZZ_SEED_DIR at start-up. Usage: scripts/fuzz.sh [seconds=60] [target...] (default all,
# the seconds split evenly, at least 1 s each). Findings (crash-*, leak-*, timeout-*) land in
# build-fuzz/fuzz/<target>; the script exits non-zero on the first one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ALL=(model_file jinja hf_configs safetensors safetensors_index tokenizer_json train_config
     token_manifest routing_profile gguf)
SECONDS_TO_RUN="${1:-60}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || {
    echo "unknown fuzz target '$t' (${ALL[*]})" >&2
    exit 2
  }
done
CXX_BIN="$(command -v clang++ || command -v clang++-14 || true)"
C_BIN="$(command -v clang || command -v clang-14 || true)"
if [[ -z "$CXX_BIN" || -z "$C_BIN" ]]; then
  echo "clang/clang++ not found: apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CC="$C_BIN" CXX="$CXX_BIN" cmake -S . -B build-fuzz -G Ninja -DST_WITH_TORCH=OFF \
  -DST_BUILD_FUZZERS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
cmake --build build-fuzz -j"${JOBS:-1}" --target "${TARGETS[@]/#/fuzz_}"
EACH=$((SECONDS_TO_RUN / ${#TARGETS[@]}))
[[ "$EACH" -ge 1 ]] || EACH=1
# Abort (not just report) on a UBSan finding, and keep ASan's leak check on.
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
for t in "${TARGETS[@]}"; do
  DIR="$ROOT/build-fuzz/fuzz/$t"
  mkdir -p "$DIR/seeds" "$DIR/corpus"
  SEEDS=("$DIR/seeds")
  [[ -d "$ROOT/tests/data/fuzz_$t" ]] && SEEDS+=("$ROOT/tests/data/fuzz_$t")
  ARGS=()
  case "$t" in
    model_file) MAX_LEN=32768 ;;
    jinja) MAX_LEN=16384 ARGS=(-dict="$ROOT/tests/data/chat/fuzz_jinja.dict") ;;
    tokenizer_json) MAX_LEN=65536 ;;
    train_config) MAX_LEN=4096 SEEDS+=("$ROOT/configs/train") ;;
    *) MAX_LEN=8192 ;;
  esac
  echo "== fuzz_$t for ${EACH}s"
  (cd "$DIR" && ST_FUZZ_SEED_DIR="$DIR/seeds" "$ROOT/build-fuzz/tests/fuzz_$t" \
    -max_total_time="$EACH" -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${ARGS[@]}" corpus "${SEEDS[@]}")
done
