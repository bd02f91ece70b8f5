#!/usr/bin/env bash
# Peak memory under --memory_budget: st-run and st-perplexity on a model whose experts (110 MB
# of Q8_0) are larger than the budget must peak (resident set, getrusage) within the budget,
# with prefetch on and off, each cache policy and both read backends, and with the cache
# evicting (so experts really stream). The same model in memory peaks above the budget: the
# check can tell a run that ignores the budget from one that keeps it.
#   tests/memory_budget_test.sh ST_EXPORT ST_RUN ST_PERPLEXITY BINARY_DIR
set -euo pipefail
st_export=$1 st_run=$2 st_ppl=$3 bin=$4
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
dir="$bin/test_tmp/memory_budget"
fresh_dir "$dir"
cat > "$dir/config.json" << 'EOF'
{
  "model_type": "smallthinker",
  "num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2,
  "head_dim": 64, "vocab_size": 320, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
  "max_position_embeddings": 512, "rope_layout": [0, 1, 1, 1], "sliding_window_layout": [0, 1, 1, 1],
  "sliding_window_size": 64, "moe_num_primary_experts": 32, "moe_num_active_primary_experts": 4,
  "moe_ffn_hidden_size": 512, "moe_primary_router_apply_softmax": false,
  "tie_word_embeddings": true, "bos_token_id": null, "eos_token_id": null
}
EOF
model="$dir/m.stmf"
"$st_export" --random-init --config "$dir/config.json" --quant q8_0 --output "$model" --force \
  > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; exit 1; }

# Runs a command, its stderr to $dir/last.err; prints the child's peak resident set in KiB.
peak_kib() {
  python3 - "$@" 2> /dev/null << 'EOF'
import resource, subprocess, sys
with open(sys.argv[1], "w") as err:
    rc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if rc == 0 else -1)
EOF
}

budget_mib=72
limit_kib=$((budget_mib * 1024))
file_kib=$(($(stat -c %s "$model") / 1024))
test "$file_kib" -gt "$limit_kib" || { echo "FAIL: the model must be larger than the budget"; exit 1; }

in_memory=$(peak_kib "$dir/last.err" "$st_run" --model "$model" --threads 2 --prompt "In the beginning" \
  --max_new_tokens 8 --temperature 0)
echo "in memory: peak ${in_memory} KiB (budget ${limit_kib} KiB)"
if [[ "$in_memory" -le "$limit_kib" ]]; then
  echo "FAIL: the in-memory run fits the budget too: the test could not tell"
  fail=1
fi

check_run() {  # description, then the command; peak within the budget, experts evicted
  local what=$1
  shift
  local peak
  peak=$(peak_kib "$dir/last.err" "$@" --memory_budget ${budget_mib}M --max_context 512)
  local evictions
  evictions=$(sed -n 's/.* \([0-9][0-9]*\) evictions.*/\1/p' "$dir/last.err" | tail -1)
  if [[ "$peak" -lt 0 ]]; then
    echo "FAIL: $what: the run failed"
    cat "$dir/last.err"
    fail=1
  elif [[ "$peak" -gt "$limit_kib" ]]; then
    echo "FAIL: $what: peak ${peak} KiB is over the budget of ${limit_kib} KiB"
    fail=1
  elif [[ -n "$evictions" && "$evictions" -eq 0 ]]; then
    echo "FAIL: $what: no evictions, the experts did not stream"
    fail=1
  else
    echo "ok: $what: peak ${peak} KiB <= ${limit_kib} KiB (${evictions:-?} evictions)"
  fi
}

gen=(--model "$model" --threads 2 --prompt "In the beginning" --max_new_tokens 64 --temperature 0)
check_run "st-run, lrfu, prefetch, io_uring" "$st_run" "${gen[@]}"
check_run "st-run, lru, no prefetch" "$st_run" "${gen[@]}" --cache_policy lru --prefetch=false
check_run "st-run, lfu, pread" "$st_run" "${gen[@]}" --cache_policy lfu --io pread
check_run "st-run, 1 thread" "$st_run" "${gen[@]}" --threads 1
head -c 3000 /dev/urandom | base64 > "$dir/text.txt"
check_run "st-perplexity" "$st_ppl" --model "$model" --threads 2 --file "$dir/text.txt" --ctx 256 \
  --chunks 3
exit $fail
