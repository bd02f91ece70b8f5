#!/usr/bin/env bash
# Our runtime against llama.cpp on this machine, in this run, on the same weights: a
# random-weight SmallThinker-4B-A0.6B with every matrix Q4_0 (runs/bench/4b-q4_0_pure.stmf, the
# file scripts/bench_runtime.sh uses), exported once to GGUF by st-export (blocks copied; expert
# down requantised to Q4_0 from the same values). llama-bench and st-bench alternate A/B/A/B for
# --rounds rounds; a table gives each round's ratio (ours / llama.cpp) for prefill of 128 and
# 512 tokens and decode of 64 tokens, at 1 and 2 threads, with the CPU model and flags. Run it
# on an idle machine: one foreign compile job halves llama.cpp's 2-thread decode.
#   scripts/bench_vs_llama.sh LLAMA_CPP_BUILD_DIR [--rounds 3] [--threads 1,2] [--prompts 128,512]
#                             [--gen 64] [--depth 0]
# LLAMA_CPP_BUILD_DIR: a llama.cpp build with bin/llama-bench (how to build the anchor:
# ../shared/reference/benchmark-anchor.md or DEVELOPERS.md). --depth N: decode after N tokens of
# context as well (llama-bench -d, st-bench --prompt_tokens N). ST_BENCH_DIR, ST_BUILD_DIR as
# for bench_runtime.sh. JSON lines of every run: $ST_BENCH_DIR/vs_llama.jsonl.
set -euo pipefail
usage() {
  sed -n '9,10p' "$0" | sed 's/^# *//' >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
llama_build=$1
shift
rounds=3 threads=1,2 prompts=128,512 gen=64 depth=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2 ;;
    --threads) threads=$2 ;;
    --prompts) prompts=$2 ;;
    --gen) gen=$2 ;;
    --depth) depth=$2 ;;
    *) echo "bench_vs_llama: unknown argument '$1'" >&2; usage ;;
  esac
  shift 2
done
llama_bench=$llama_build/bin/llama-bench
[[ -x $llama_bench ]] || {
  echo "bench_vs_llama: no $llama_bench; build it: cmake --build $llama_build --target llama-bench" >&2
  exit 1
}
cd "$(dirname "$0")/.."
dir=${ST_BENCH_DIR:-runs/bench}
build=${ST_BUILD_DIR:-build}
model="$dir/4b-q4_0_pure.stmf"
gguf="$dir/4b-q4_0_pure.gguf"
mkdir -p "$dir"
if [[ ! -x $build/infer/tools/st-bench || ! -x $build/infer/tools/st-export ]]; then
  [[ -f $build/CMakeCache.txt ]] ||
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DST_WITH_TORCH=OFF
  cmake --build "$build" -j "${ST_JOBS:-$(nproc)}" --target st-bench st-export
fi
if [[ ! -f $model ]]; then
  echo "== writing the synthetic model $model (once)"
  "$build/infer/tools/st-export" --random-init --config configs/model/smallthinker-4b-a0.6b.json \
    --quant q4_0_pure --output "$model"
fi
if [[ ! -f $gguf || $gguf -ot $model ]]; then
  echo "== the same weights as GGUF: $gguf (once)"
  "$build/infer/tools/st-export" --input "$model" --format gguf --output "$gguf" --force | tail -1
fi

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
  grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_vbmi|avx512_bf16|avx_vnni|amx_tile|amx_int8)$' |
  tr '\n' ' ')
echo "== CPU: ${cpu:-unknown} ($(nproc) CPUs), flags: $flags"
echo "== llama.cpp: $llama_bench; ours: $build/infer/tools/st-bench ($(git rev-parse --short HEAD))"

out="$dir/vs_llama.jsonl"
: > "$out"
IFS=, read -r -a tlist <<< "$threads"
IFS=, read -r -a plist <<< "$prompts"
# One llama-bench call per round covers every (threads, prompt) pair and the decode; st-bench
# takes one prompt length a call (decode measured after it: use the shortest prompt's decode).
for ((r = 1; r <= rounds; ++r)); do
  echo "== round $r/$rounds: llama.cpp"
  depth_args=()
  [[ $depth -gt 0 ]] && depth_args=(-d "0,$depth")
  "$llama_bench" -m "$gguf" -t "$threads" -p "$prompts" -n "$gen" -r 2 "${depth_args[@]}" -o jsonl 2> /dev/null |
    sed "s/^{/{\"engine\":\"llama.cpp\",\"round\":$r,/" >> "$out"
  echo "== round $r/$rounds: ours"
  for p in "${plist[@]}"; do
    "$build/infer/tools/st-bench" --model "$model" --threads "$threads" --prompt_tokens "$p" \
      --gen_tokens "$gen" --reps 2 --warmup 1 --membw_mib 512 --membw_passes 3 --json 2> /dev/null |
      sed "s/^{/{\"engine\":\"ours\",\"round\":$r,\"prompt\":$p,/" >> "$out"
  done
  if [[ $depth -gt 0 ]]; then
    "$build/infer/tools/st-bench" --model "$model" --threads "$threads" --prompt_tokens "$depth" \
      --gen_tokens "$gen" --reps 1 --warmup 0 --membw_mib 512 --membw_passes 3 --json 2> /dev/null |
      sed "s/^{/{\"engine\":\"ours\",\"round\":$r,\"prompt\":$depth,\"depth\":$depth,/" >> "$out"
  fi
done

# The table: per round, per (threads, test), ours / llama.cpp.
node - "$out" "${plist[0]}" "$depth" << 'JS'
const fs = require('fs');
const [file, firstPrompt, depth] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const rows = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const ratios = new Map();  // "threads|test" -> [{round, ours, llama}]
const put = (t, test, round, key, v) => {
  const k = `${t}|${test}`;
  if (!ratios.has(k)) ratios.set(k, new Map());
  const m = ratios.get(k);
  if (!m.has(round)) m.set(round, {});
  m.get(round)[key] = v;
};
for (const r of rows) {
  if (r.engine === 'llama.cpp') {
    const d = r.n_depth ?? 0;
    if (r.n_prompt > 0 && r.n_gen === 0 && d === 0) put(r.n_threads, `prefill ${r.n_prompt}`, r.round, 'llama', r.avg_ts);
    if (r.n_gen > 0 && r.n_prompt === 0) put(r.n_threads, d > 0 ? `decode @${d}` : 'decode', r.round, 'llama', r.avg_ts);
  } else {
    if (r.depth) {
      put(r.threads, `decode @${r.depth}`, r.round, 'ours', r.decode_tok_s_median);
      continue;
    }
    put(r.threads, `prefill ${r.prompt}`, r.round, 'ours', r.prefill_tok_s_median);
    if (r.prompt === firstPrompt) put(r.threads, 'decode', r.round, 'ours', r.decode_tok_s_median);
  }
}
const ll = rows.find((r) => r.engine === 'llama.cpp');
if (ll) console.log(`\nllama.cpp build ${ll.build_commit ?? '?'} (${ll.build_number ?? '?'}), ${ll.cpu_info ?? ''}, type ${ll.model_type ?? ''}`);
console.log('\nthreads  test          ours tok/s  llama.cpp tok/s  ratio per round');
for (const [k, m] of [...ratios].sort()) {
  const [t, test] = k.split('|');
  const rs = [...m.values()].filter((v) => v.ours && v.llama);
  if (!rs.length) continue;
  const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const ours = med(rs.map((v) => v.ours)), llama = med(rs.map((v) => v.llama));
  const per = rs.map((v) => (v.ours / v.llama).toFixed(2) + 'x').join(' ');
  console.log(`${t.padStart(7)}  ${test.padEnd(12)}  ${ours.toFixed(1).padStart(10)}  ${llama.toFixed(1).padStart(15)}  ${per}`);
}
console.log('(medians over rounds; decode: 64 tokens after the first prompt; ratio = ours / llama.cpp)');
// Our runs against this machine's limits measured in the same runs (st-bench's probes): prefill
// against the int8 peak of the kernels' dot idiom, decode against the read bandwidth; and the
// time to first token of each prompt beside llama.cpp's (prompt / its prefill rate).
const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
const ourRuns = rows.filter((r) => r.engine === 'ours' && !r.depth);
console.log('\nthreads  prompt  int8 peak GMAC/s  prefill GMAC/s  of peak  decode GB/s  of bandwidth  TTFT ms  llama.cpp TTFT ms');
for (const t of [...new Set(ourRuns.map((r) => r.threads))].sort((a, b) => a - b)) {
  for (const p of [...new Set(ourRuns.map((r) => r.prompt))].sort((a, b) => a - b)) {
    const rs = ourRuns.filter((r) => r.threads === t && r.prompt === p);
    const lp = rows.filter((r) => r.engine === 'llama.cpp' && r.n_threads === t && r.n_prompt === p && r.n_gen === 0 && !(r.n_depth > 0));
    const lttft = lp.length ? (1e3 * p / med(lp.map((r) => r.avg_ts))).toFixed(1) : '-';
    const f = (k, d = 1) => med(rs.map((r) => r[k] ?? 0)).toFixed(d);
    console.log(`${String(t).padStart(7)}  ${String(p).padStart(6)}  ${f('int8_peak_gmac_s').padStart(16)}  ${f('prefill_int8_gmac_s').padStart(14)}  ${(100 * med(rs.map((r) => r.prefill_int8_peak_fraction ?? 0))).toFixed(1).padStart(6)}%  ${f('weight_read_gb_s', 2).padStart(11)}  ${(100 * med(rs.map((r) => r.membw_fraction ?? 0))).toFixed(1).padStart(11)}%  ${f('ttft_ms_median').padStart(7)}  ${lttft.padStart(17)}`);
  }
}
console.log('(int8 peak: st-bench\'s in-register probe of the kernels\' dot idiom; prefill GMAC/s counts the int8 products only;')
console.log(' decode GB/s: weight bytes a token x decode tok/s, against the bandwidth probe of the same run)');
JS
echo "(every run: $out)"
