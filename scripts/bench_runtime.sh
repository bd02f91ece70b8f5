#!/usr/bin/env bash
# Runtime throughput on a synthetic SmallThinker-4B-A0.6B (random weights, every matrix Q4_0,
# about 2.3 GB): st-bench with 1 and 2 threads, 128-token prompt, 64 decoded tokens; with
# LLAMA_CPP_BUILD_DIR set, then scripts/bench_vs_llama.sh (llama.cpp on the same weights, same
# machine, same run). Builds the two tools if needed and writes the model only when it is not
# there yet.
#   scripts/bench_runtime.sh [extra st-bench flags, e.g. --reps 5 or --kv_f16=false]
#   ST_BENCH_DIR=/data/bench scripts/bench_runtime.sh   model directory (default runs/bench)
#   ST_BUILD_DIR=build-notorch scripts/bench_runtime.sh build directory (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ST_BENCH_DIR:-runs/bench}
build=${ST_BUILD_DIR:-build}
model="$dir/4b-q4_0_pure.stmf"

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=OFF
fi
cmake --build "$build" -j "${ST_JOBS:-$(nproc)}" --target st-bench st-export

mkdir -p "$dir"
if [[ ! -f $model ]]; then
  echo "== writing the synthetic model $model (once)"
  "$build/infer/tools/st-export" --random-init --config configs/model/smallthinker-4b-a0.6b.json \
    --quant q4_0_pure --output "$model"
fi

# The report goes to the terminal (stderr), one JSON line per thread count to $dir/bench.jsonl.
"$build/infer/tools/st-bench" --model "$model" --threads 1,2 --prompt_tokens 128 --gen_tokens 64 \
  --json "$@" > "$dir/bench.jsonl"

# Against llama.cpp: only on this machine, in this run, on the same weights (a baseline copied
# from another CPU means nothing): scripts/bench_vs_llama.sh does that when LLAMA_CPP_BUILD_DIR
# names a llama.cpp build.
if [[ -n ${LLAMA_CPP_BUILD_DIR:-} ]]; then
  echo
  bash scripts/bench_vs_llama.sh "$LLAMA_CPP_BUILD_DIR"
else
  echo
  echo "(for ratios against llama.cpp measured here and now: LLAMA_CPP_BUILD_DIR=DIR $0, or"
  echo " scripts/bench_vs_llama.sh DIR; building llama.cpp: ../shared/reference/benchmark-anchor.md)"
fi
