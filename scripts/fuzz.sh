#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + libFuzzer) in build-fuzz and runs each
# for its share of the time: the model-file reader (fuzz_model_file), the Jinja chat-template
# engine (fuzz_jinja, seeded with tests/data/chat/templates, dictionary
# tests/data/chat/fuzz_jinja.dict) and the Hugging Face side-file parsers (fuzz_hf_configs:
# config.json, tokenizer_config.json, generation_config.json; seeds tests/data/fuzz_hf_configs).
# Usage: scripts/fuzz.sh [seconds=60] [target...]   (targets: model_file jinja hf_configs;
# default all, the seconds split evenly). Findings (crash-*, leak-*, timeout-*) land in build-fuzz/fuzz/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SECONDS_TO_RUN="${1:-60}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(model_file jinja hf_configs)
for t in "${TARGETS[@]}"; do
  [[ "$t" == model_file || "$t" == jinja || "$t" == hf_configs ]] || {
    echo "unknown fuzz target '$t' (model_file, jinja or hf_configs)" >&2
    exit 2
  }
done
CXX_BIN="$(command -v clang++ || command -v clang++-14 || true)"
C_BIN="$(command -v clang || command -v clang-14 || true)"
if [[ -z "$CXX_BIN" || -z "$C_BIN" ]]; then
  echo "clang/clang++ not found: apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
CC="$C_BIN" CXX="$CXX_BIN" cmake -S . -B build-fuzz -G Ninja -DST_WITH_TORCH=OFF \
  -DST_BUILD_FUZZERS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
cmake --build build-fuzz -j"${JOBS:-1}" --target "${TARGETS[@]/#/fuzz_}"
EACH=$((SECONDS_TO_RUN / ${#TARGETS[@]}))
[[ "$EACH" -ge 1 ]] || EACH=1
for t in "${TARGETS[@]}"; do
  DIR="$ROOT/build-fuzz/fuzz/$t"
  mkdir -p "$DIR/seeds" "$DIR/corpus"
  echo "== fuzz_$t for ${EACH}s"
  case "$t" in
    model_file)
      (cd "$DIR" && ST_FUZZ_SEED_DIR="$DIR/seeds" "$ROOT/build-fuzz/tests/fuzz_model_file" \
        -max_total_time="$EACH" -max_len=32768 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 corpus seeds)
      ;;
    jinja)
      (cd "$DIR" && ST_FUZZ_SEED_DIR="$DIR/seeds" "$ROOT/build-fuzz/tests/fuzz_jinja" \
        -max_total_time="$EACH" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -dict="$ROOT/tests/data/chat/fuzz_jinja.dict" corpus seeds)
      ;;
    hf_configs)
      (cd "$DIR" && "$ROOT/build-fuzz/tests/fuzz_hf_configs" -max_total_time="$EACH" \
        -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        corpus "$ROOT/tests/data/fuzz_hf_configs")
      ;;
  esac
done
