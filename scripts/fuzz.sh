#!/usr/bin/env bash
# Builds the model-file fuzzer with clang (ASan + UBSan + libFuzzer) in build-fuzz and runs it.
# Usage: scripts/fuzz.sh [seconds=60]. Findings (crash-*, leak-*, timeout-*) land in build-fuzz/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
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
cmake --build build-fuzz -j"${JOBS:-1}" --target fuzz_model_file
DIR=build-fuzz/fuzz/model_file
mkdir -p "$DIR/seeds" "$DIR/corpus"
cd "$DIR"
ST_FUZZ_SEED_DIR="$PWD/seeds" ../../tests/fuzz_model_file -max_total_time="$SECONDS_TO_RUN" \
  -max_len=32768 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 corpus seeds
