#!/usr/bin/env bash
# st-run and st-perplexity on a tiny random model (byte tokenizer, 4096 ids, context 512):
# greedy and seeded sampling repeat, --top_logits rows, chat with /reset, perplexity output,
# and the errors that need a model file (prompt longer than the context, a text shorter than
# one chunk), the llama.cpp flag spellings, and --model given something that is not a model file.
#   tests/st_run_test.sh ST_EXPORT ST_RUN ST_PERPLEXITY SOURCE_DIR BINARY_DIR
set -euo pipefail
st_export=$1 st_run=$2 st_ppl=$3 src=$4 bin=$5
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
dir="$bin/test_tmp/st_run"
fresh_dir "$dir"
model="$dir/tiny.stmf"
"$st_export" --random-init --config "$src/configs/model/tiny.json" --quant q4_0 \
  --output "$model" --force > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; exit 1; }

run() { "$st_run" --model "$model" --threads 2 "$@"; }

# Greedy decoding and seeded sampling give the same text twice; another seed differs.
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 > "$dir/g1.txt" 2> "$dir/g1.err"
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 > "$dir/g2.txt" 2> /dev/null
check "greedy repeats" cmp -s "$dir/g1.txt" "$dir/g2.txt"
check "prompt echoed" matches "$dir/g1.txt" '^In the beginning'
check "stats line" matches "$dir/g1.err" \
  'load [0-9.]+ s \| prefill 16 tokens .* tok/s\) \| time to first token [0-9.]+ s \| generated [0-9]+ tokens, decode .* tok/s\) \| stop: '
check "sparsity line" matches "$dir/g1.err" 'ReGLU sparsity: [0-9]+ of [0-9]+ expert neurons skipped'
sample() { run --prompt "And God said" --max_new_tokens 32 --temperature 1.2 --top_k 0 --top_p 1 --min_p 0 --seed "$1" 2> /dev/null; }
sample 7 > "$dir/s7a.txt"
sample 7 > "$dir/s7b.txt"
sample 8 > "$dir/s8.txt"
check "same seed, same text" cmp -s "$dir/s7a.txt" "$dir/s7b.txt"
check "another seed, another text" bash -c "! cmp -s '$dir/s7a.txt' '$dir/s8.txt'"

# A stop string that arrives over two tokens (random ids >= 257 decode to U+FFFD each with the
# byte tokenizer): generation stops at it and no part of it is printed.
stop=$(printf '\xef\xbf\xbd\xef\xbf\xbd')
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 --stop "$stop" \
  > "$dir/stop.txt" 2> "$dir/stop.err"
check "greedy text has the stop string" grep -q "$stop" "$dir/g1.txt"
check "stop string not printed" bash -c "! grep -q \"\$(printf '\xef\xbf\xbd')\" '$dir/stop.txt'"
check "stopped by the stop string" matches "$dir/stop.err" 'stop: stop string'

# --top_logits: one JSON line per prompt position (pos 0, 1, 2: 'a' 'b' 'c'), then per token.
run --prompt abc --max_new_tokens 3 --temperature 0 --top_logits 4 --logits_out "$dir/logits.jsonl" \
  > /dev/null 2>&1
check "top_logits prompt rows" matches "$dir/logits.jsonl" '^\{"pos":2,"token":99,"text":"c","top":\[\['
check "top_logits 4 entries" bash -c "head -1 '$dir/logits.jsonl' | grep -Eq '\"top\":\[(\[[0-9]+,[-0-9.e]+,\"[^\"]*\"\],?){4}\]\}$'"
rows=$(wc -l < "$dir/logits.jsonl")
check "top_logits rows ($rows) = 3 prompt + up to 2 generated" test "$rows" -ge 3 -a "$rows" -le 5

# Chat: ChatML note, two replies around a /reset, stats at the end of input.
printf 'hello\n/reset\nhello again\n' |
  run --chat --system "Be brief." --max_new_tokens 4 --temperature 0 > "$dir/chat.txt" 2> "$dir/chat.err"
check "chat notes ChatML" matches "$dir/chat.err" 'no chat template; turns use ChatML'
check "chat /reset" matches "$dir/chat.err" 'context cleared'
check "chat stats" matches "$dir/chat.err" 'mean of 2 replies'

# The llama.cpp spellings give the same text as the long flags.
"$st_run" -m "$model" -p "In the beginning" -n 24 -t 1 --temp 0 -s 3 > "$dir/alias.txt" 2> /dev/null
"$st_run" --model "$model" --prompt "In the beginning" --max_new_tokens 24 --threads 1 \
  --temperature 0 --seed 3 > "$dir/long.txt" 2> /dev/null
check "aliases: same greedy text as the long flags" cmp -s "$dir/alias.txt" "$dir/long.txt"
"$st_run" -m="$model" -p "And God said" --n-predict 32 --temp 1.2 --top-k 0 --top-p 1 --min-p 0 \
  --repeat-penalty 1.0 --seed=7 -c 256 --threads=2 > "$dir/alias_s7.txt" 2> /dev/null
check "aliases: same sampled text as the long flags" cmp -s "$dir/alias_s7.txt" "$dir/s7a.txt"
printf 'In the beginning' > "$dir/prompt.txt"
"$st_run" -m "$model" -f "$dir/prompt.txt" -n 24 --temp 0 -t 1 > "$dir/alias_f.txt" 2> /dev/null
check "-f reads the prompt file" cmp -s "$dir/alias_f.txt" "$dir/long.txt"

# Exit status and message of a command: status, then a regex for its stderr, then the command.
expect() {
  local want_rc=$1 want=$2 rc=0
  shift 2
  "$@" > /dev/null 2> "$dir/expect.err" || rc=$?
  if [[ $rc -ne $want_rc ]]; then
    echo "FAIL: $* exited $rc, expected $want_rc"; cat "$dir/expect.err"; fail=1
  elif ! grep -Eq -- "$want" "$dir/expect.err"; then
    echo "FAIL: $*: no line matches '$want' in:"; cat "$dir/expect.err"; fail=1
  else
    echo "ok: $* (exit $rc)"
  fi
}

# --model given what a user may take for a model file: what it is and which command converts it.
mkdir -p "$dir/hf"
echo '{}' > "$dir/hf/config.json"
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000' > "$dir/m.gguf"
python3 -c 'import struct, sys; h = b"{\"__metadata__\":{}}"; open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h)' \
  "$dir/model.safetensors"
printf '\211HDF\r\n\032\n\000\000\000\000\000\000\000\000' > "$dir/checkpoint.h5"
expect 1 "^st-run: error: '.*/hf' is a Hugging Face checkpoint directory, not a model file; convert it with st-export --input DIR --output m.stmf" \
  "$st_run" --model "$dir/hf" --prompt hi
expect 1 "^st-run: error: '.*/m.gguf' is a GGUF file \(llama.cpp's format\), not a model file; convert it with st-export --input .*/m.gguf --output .*/m.stmf, then pass --model .*/m.stmf$" \
  "$st_run" --model "$dir/m.gguf" --prompt hi
expect 1 "^st-run: error: '.*model.safetensors' is a safetensors file, not a model file; convert .* with st-export --input DIR --output m.stmf" \
  "$st_run" --model "$dir/model.safetensors" --prompt hi
expect 1 "^st-run: error: '.*checkpoint.h5' is an HDF5 file .*st-export --input .*checkpoint.h5 --output m.stmf" \
  "$st_run" --model "$dir/checkpoint.h5" --prompt hi
expect 1 "^st-perplexity: error: '.*m.gguf' is a GGUF file" "$st_ppl" --model "$dir/m.gguf" --file "$dir/prompt.txt"
expect 1 "^st-perplexity: error: '.*/hf' is a Hugging Face checkpoint directory" \
  "$st_ppl" -m "$dir/hf" -f "$dir/prompt.txt"
# A directory where a file is expected, and thread counts beyond the bound, with a real model.
expect 1 "^st-run: error: --prompt_file '.*/hf' is a directory; give a file$" \
  "$st_run" --model "$model" --prompt_file "$dir/hf"
expect 1 "^st-run: error: --chat_template_file '.*/hf' is a directory; give a file$" \
  "$st_run" --model "$model" --chat --chat_template_file "$dir/hf"
expect 2 "^st-run: error: --threads 1000000 is more than 1024 threads" \
  "$st_run" --model "$model" --prompt hi --threads 1000000
expect 2 "^st-perplexity: error: --threads 1000000 is more than 1024 threads" \
  "$st_ppl" --model "$model" --file "$dir/prompt.txt" --threads 1000000
expect 2 "^st-run: error: --chat_template_kwargs must be a JSON object" \
  "$st_run" --model "$model" --chat --chat_template_kwargs '[1]'

# Errors that need a model file.
head -c 600 /dev/zero | tr '\0' x > "$dir/long.txt"
expect 1 "^st-run: error: the prompt is 600 tokens, longer than the model's context of 512 tokens" \
  run --prompt_file "$dir/long.txt"

# Perplexity: a random model is close to uniform over 4096 ids.
for i in $(seq 1 40); do echo "In the beginning God created the heaven and the earth. $i"; done > "$dir/text.txt"
"$st_ppl" --model "$model" --file "$dir/text.txt" --ctx 128 --chunks 3 > "$dir/ppl.txt" 2>&1 || fail=1
"$st_ppl" -m "$model" -f "$dir/text.txt" -c 128 --chunks 3 -t 0 > "$dir/ppl_alias.txt" 2>&1 || fail=1
check "perplexity aliases: the same PPL" \
  bash -c "diff <(grep '^Final' '$dir/ppl.txt') <(grep '^Final' '$dir/ppl_alias.txt')"
cat "$dir/ppl.txt"
check "perplexity chunks" matches "$dir/ppl.txt" '^\[3/3\] PPL [0-9.]+ \(this chunk [0-9.]+\) \| [0-9.]+ tok/s \| ETA'
check "perplexity final" matches "$dir/ppl.txt" '^Final estimate: PPL = [0-9.]+ \+/- [0-9.]+$'
ppl=$(sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p' "$dir/ppl.txt")
check "PPL $ppl near 4096" awk -v p="$ppl" 'BEGIN { exit !(p > 2000 && p < 8000) }'
echo short > "$dir/short.txt"
expect 1 "^st-perplexity: error: .* is 6 tokens, shorter than one chunk of 512 tokens: use a longer text or a smaller --ctx" \
  "$st_ppl" --model "$model" --file "$dir/short.txt"
# Memory-budget mode: a budget below the minimum is refused with the minimum; 2 MiB above it, the
# same greedy text as in memory (dashes in flag names work too), the cache's figures, a routing
# profile written by --record_routing and read back by --pin_profile.
expect 1 "^st-run: error: .*needs at least [0-9.]+ MiB = weights outside the experts" \
  run --prompt "x" --memory_budget 1M
budget=$(sed -n 's/.*needs at least \([0-9]*\)\.[0-9]* MiB.*/\1/p' "$dir/expect.err")
budget=$((${budget:-50} + 2))
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 --memory-budget ${budget}M \
  --cache_policy lru --record_routing "$dir/routing.json" > "$dir/b1.txt" 2> "$dir/b1.err"
check "budget ${budget}M: same greedy text as in memory" cmp -s "$dir/g1.txt" "$dir/b1.txt"
check "budget: plan line" matches "$dir/b1.err" "budget ${budget} MiB: resident weights .* slots of .*policy lru, prefetch on"
check "budget: cache line" matches "$dir/b1.err" 'expert cache: hit rate [0-9.]+% .* MB read/token, I/O stall'
check "routing profile written" matches "$dir/routing.json" '"counts":\[\['
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 --memory_budget ${budget}M \
  --pin_profile "$dir/routing.json" --io pread > "$dir/b2.txt" 2> "$dir/b2.err"
check "budget, pinned, pread: same text" cmp -s "$dir/g1.txt" "$dir/b2.txt"
expect 2 "^st-run: error: --memory_budget: '12Q' is not a size" run --prompt "x" --memory_budget 12Q

exit $fail
