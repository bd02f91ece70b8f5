#!/usr/bin/env bash
# Serving throughput: st-server --parallel 8 on a synthetic SmallThinker-4B-A0.6B (random weights,
# every matrix Q4_0, about 2.3 GB; the same file scripts/bench_runtime.sh writes), and
# scripts/reference/bench_server.mjs sending 1, 2, 4 and 8 streamed chat completions at once
# (greedy, 64 tokens each, counted from the streamed usage; every prompt its own, so none is
# served from another's cached prompt). Prints, per concurrency, the aggregate decode tokens/s
# while all C streams decode (content chunks, one per token, between the last stream's first
# token and the first stream's end), the same over the whole decode phase, end-to-end tokens/s,
# one stream's tokens/s and the time to first token (p50, max) of C requests sent at once, then
# the ratio of 4 streams to 1 (target >= 2.5x: batching decodes the streams together). One JSON
# line per concurrency, then one with the ratio, go to $dir/bench_server.jsonl.
#   scripts/bench_server.sh [extra st-server flags, e.g. --memory_budget 1500M]
#   ST_SERVER_BENCH_CONFIG=configs/model/tiny.json scripts/bench_server.sh   quick run, tiny model
#   ST_BENCH_DIR=/data/bench    model and results directory (default runs/bench)
#   ST_BUILD_DIR=build-notorch  build directory (default build)
#   ST_SKIP_BUILD=1             use the binaries in ST_BUILD_DIR as they are (no cmake)
#   ST_THREADS=N                st-server --threads (default 2)
#   ST_SERVER_BENCH_TOKENS=64 ST_SERVER_BENCH_REPS=3 ST_SERVER_BENCH_STREAMS=1,2,4,8
#   ST_SERVER_BENCH_CTX=N       st-server --ctx (default 2048 for the 4B; the model's own otherwise)
# Needs node >= 18 (built-in fetch); no npm package.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ST_BENCH_DIR:-runs/bench}
build=${ST_BUILD_DIR:-build}
threads=${ST_THREADS:-2}
config=${ST_SERVER_BENCH_CONFIG:-configs/model/smallthinker-4b-a0.6b.json}
tokens=${ST_SERVER_BENCH_TOKENS:-64}
reps=${ST_SERVER_BENCH_REPS:-3}
streams=${ST_SERVER_BENCH_STREAMS:-1,2,4,8}
if [[ $config == configs/model/smallthinker-4b-a0.6b.json ]]; then
  model="$dir/4b-q4_0_pure.stmf"
  ctx=${ST_SERVER_BENCH_CTX:-2048}
else
  model="$dir/$(basename "$config" .json)-q4_0_pure.stmf"
  ctx=${ST_SERVER_BENCH_CTX:-}
fi

command -v node > /dev/null 2>&1 || { echo "bench_server: node is missing; install nodejs npm" >&2; exit 1; }
if [[ ${ST_SKIP_BUILD:-0} != 1 ]]; then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=OFF
  fi
  cmake --build "$build" -j "${ST_JOBS:-$(nproc)}" --target st-server st-export
fi
server="$build/infer/tools/st-server"
[[ -x $server ]] || { echo "bench_server: $server is missing (build the st-server target)" >&2; exit 1; }

mkdir -p "$dir"
if [[ ! -f $model ]]; then
  echo "== writing the synthetic model $model (once)"
  "$build/infer/tools/st-export" --random-init --config "$config" --quant q4_0_pure --output "$model"
fi

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "== st-server --parallel 8 --threads $threads on $(basename "$model") ($config)"
echo "CPU: ${cpu:-unknown}, $(nproc) CPUs available"

log="$dir/bench_server"
server_args=(--model "$model" --parallel 8 --threads "$threads")
[[ -n $ctx ]] && server_args+=(--ctx "$ctx")
source scripts/st_server_util.sh
trap stop_st_servers EXIT
# Up to 2 minutes: the model file may be read from a cold disk.
start_st_server "$log" 120 "$server" "${server_args[@]}" "$@" || {
  echo "bench_server: st-server did not start" >&2
  exit 1
}
url=$server_url

out="$dir/bench_server.jsonl"
: > "$out"
meta=$(CPU="$cpu" NPROC="$(nproc)" MODEL="$(basename "$model")" CONFIG="$config" THREADS="$threads" node -e '
  const e = process.env;
  console.log(JSON.stringify({ cpu: e.CPU, nproc: Number(e.NPROC), model: e.MODEL, config: e.CONFIG,
    threads: Number(e.THREADS), parallel: 8 }));')
node scripts/reference/bench_server.mjs "$url" --concurrency "$streams" --max_tokens "$tokens" \
  --reps "$reps" --json "$out" --meta "$meta"
echo "(JSON lines: $out; server log: $log.err)"
