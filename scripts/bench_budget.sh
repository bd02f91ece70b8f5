#!/usr/bin/env bash
# Expert streaming under a hard memory limit: st-bench on synthetic SmallThinker-4B-A0.6B
# (every matrix Q4_0, 2.3 GB) inside a cgroup v1 memory limit of 1 GiB and on synthetic
# SmallThinker-21B-A3B (Q4_0, 12 GB) inside 8 GiB, with the same --memory_budget as the limit.
# For each: prefetch on vs off (reads issued by the pre-attention router vs after attention),
# each cache policy (lru, lfu, lrfu), tokens of a text routed by the router vs uniformly drawn
# experts (a cache's worst case), and pinning from a routing profile recorded by st-run on
# another stretch of the same text, by the same kind of run.
# Prints tokens/s, peak memory (the cgroup's max_usage_in_bytes: RSS + page cache), hit rate,
# MB read per token, I/O stall per token and prefetch accuracy; one JSON line per run goes to
# $dir/budget.jsonl.
#   scripts/bench_budget.sh            both models (writes the model files once: ~20 s + ~2 min)
#   ST_BUDGET_MODELS=4b scripts/bench_budget.sh      only the 4B
#   ST_BENCH_DIR=/data/bench ST_BUILD_DIR=build-notorch scripts/bench_budget.sh
# Needs root and the cgroup v1 memory controller (/sys/fs/cgroup/memory); without them it says
# so and runs with the budget alone.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ST_BENCH_DIR:-runs/bench}
build=${ST_BUILD_DIR:-build}
models=${ST_BUDGET_MODELS:-4b,21b}
threads=${ST_THREADS:-2}

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=OFF
fi
cmake --build "$build" -j "${ST_JOBS:-$(nproc)}" --target st-bench st-export st-run
mkdir -p "$dir"
out="$dir/budget.jsonl"
: > "$out"

cgroot=/sys/fs/cgroup/memory
use_cgroup=1
if [[ $(id -u) != 0 || ! -w $cgroot ]]; then
  echo "note: no writable cgroup v1 memory controller at $cgroot (root needed): running with"
  echo "      --memory_budget only; the peak column is then the process's VmHWM"
  use_cgroup=0
fi

# run LABEL LIMIT_BYTES -- st-bench args...
run() {
  local label=$1 limit=$2
  shift 3
  local cg="" json peak
  if [[ $use_cgroup == 1 ]]; then
    cg="$cgroot/st-bench-$$"
    mkdir -p "$cg"
    echo "$limit" > "$cg/memory.limit_in_bytes"
    echo 0 > "$cg/memory.failcnt" 2>/dev/null || true
    json=$(bash -c "echo \$\$ > $cg/cgroup.procs; exec $build/infer/tools/st-bench --json \"\$@\"" \
      st-bench "$@" 2> "$dir/last_budget_run.log") || {
      echo "FAILED: $label (see $dir/last_budget_run.log)"; tail -3 "$dir/last_budget_run.log"
      rmdir "$cg" 2>/dev/null || true; return 0; }
    peak=$(cat "$cg/memory.max_usage_in_bytes")
    local failcnt; failcnt=$(cat "$cg/memory.failcnt")
    rmdir "$cg"
  else
    json=$("$build/infer/tools/st-bench" --json "$@" 2> "$dir/last_budget_run.log") || {
      echo "FAILED: $label"; tail -3 "$dir/last_budget_run.log"; return 0; }
    peak=-1
    failcnt=-1
  fi
  python3 - "$label" "$limit" "$peak" "$failcnt" "$json" "$out" <<'EOF'
import json, sys
label, limit, peak, failcnt, line, out = sys.argv[1:]
j = json.loads(line.strip().splitlines()[-1])
j.update(label=label, limit_bytes=int(limit), cgroup_peak_bytes=int(peak), cgroup_failcnt=int(failcnt))
open(out, "a").write(json.dumps(j) + "\n")
peak_mib = int(peak) / 2**20 if int(peak) >= 0 else j["peak_rss_mib"]
within = "yes" if int(peak) < 0 or int(peak) <= int(limit) else "NO"
print(f"{label:<34} {j['decode_tok_s_median']:7.2f} {j['prefill_tok_s_median']:8.1f} "
      f"{peak_mib:9.0f} {within:>6} {100*j.get('hit_rate',1):6.1f}% "
      f"{j.get('read_bytes_per_token',0)/1e6:8.1f} {j.get('stall_ms_per_token',0):8.1f} "
      f"{100*j.get('prefetch_accuracy',0):6.1f}% {j.get('cache_slots',0):6d} {j.get('cache_pinned',0):5d}")
EOF
}

header() {
  echo
  echo "== $1"
  printf '%-34s %7s %8s %9s %6s %7s %8s %8s %7s %6s %5s\n' run "dec t/s" "pre t/s" "peak MiB" \
    within hit "MB/tok" "stall ms" "pf acc" slots pinned
}

bench_model() {  # name config limit prompt gen [budget label suffix] [quick]
  local name=$1 config=$2 limit=$3 prompt=$4 gen=$5 quick=${6:-0}
  local model="$dir/$name-q4_0_pure.stmf"
  if [[ ! -f $model ]]; then
    echo "== writing the synthetic model $model (once)"
    "$build/infer/tools/st-export" --random-init --config "$config" --quant q4_0_pure \
      --output "$model"
  fi
  local common=(--model "$model" --threads "$threads" --prompt_tokens "$prompt"
    --gen_tokens "$gen" --reps 2 --warmup 1 --membw_mib 256 --membw_passes 1)
  local mem=(--memory_budget "$limit")
  # Text for the router runs: the README, byte-tokenized. The benchmark's prompt and decode
  # tokens come from its second half; the routing profile that pinning uses is recorded by the
  # same kind of run (same lengths) on its first half.
  local half=$(( $(wc -c < README.md) / 2 ))
  head -c "$half" README.md > "$dir/calibration.txt"
  tail -c +"$((half + 1))" README.md > "$dir/bench-text.txt"
  local text=(--text "$dir/bench-text.txt")
  local profile="$dir/$name-$limit-routing.json"
  if [[ ! -f $profile ]]; then
    "$build/infer/tools/st-bench" "${common[@]}" --text "$dir/calibration.txt" --reps 8 \
      --record_routing "$profile" "${mem[@]}" > /dev/null 2> "$dir/last_budget_run.log" || {
      echo "recording the routing profile failed:"; tail -3 "$dir/last_budget_run.log"; exit 1; }
  fi
  header "$name: limit $((limit >> 20)) MiB, $threads threads, prompt $prompt, $gen decoded tokens"
  [[ $quick == 2 ]] || run "in memory (no limit), text" 100000000000000 -- "${common[@]}" "${text[@]}"
  local p
  for p in lru lfu lrfu; do
    run "text, $p, prefetch" "$limit" -- "${common[@]}" "${text[@]}" "${mem[@]}" --cache_policy $p
    [[ $quick != 0 && $p != lrfu ]] && continue
    run "text, $p, no prefetch" "$limit" -- "${common[@]}" "${text[@]}" "${mem[@]}" \
      --cache_policy $p --prefetch=false
  done
  run "text, lrfu, prefetch, pinned" "$limit" -- "${common[@]}" "${text[@]}" "${mem[@]}" \
    --cache_policy lrfu --pin_profile "$profile"
  [[ $quick == 2 ]] && return 0
  for p in lru lfu lrfu; do
    run "uniform, $p, prefetch" "$limit" -- "${common[@]}" "${mem[@]}" --uniform_routing \
      --cache_policy $p
    [[ $quick != 0 && $p != lrfu ]] && continue
    run "uniform, $p, no prefetch" "$limit" -- "${common[@]}" "${mem[@]}" --uniform_routing \
      --cache_policy $p --prefetch=false
  done
}

if [[ $models == *4b* ]]; then
  bench_model 4b configs/model/smallthinker-4b-a0.6b.json 1073741824 32 32
  # A tighter budget, where the text's working set no longer fits and the policies differ.
  bench_model 4b configs/model/smallthinker-4b-a0.6b.json 587202560 32 32 2
fi
if [[ $models == *21b* ]]; then
  bench_model 21b configs/model/smallthinker-21b-a3b.json 8589934592 16 16 1
fi
echo
echo "(peak: the cgroup's max_usage_in_bytes, RSS + page cache; within: peak <= limit. llama.cpp"
echo " with mmap inside a 1 GiB limit decodes the 4B at about 0.6 tok/s here, 31 without a limit)"
