#!/usr/bin/env bash
# st-run and st-perplexity on a tiny random model (byte tokenizer, 4096 ids, context 512):
# greedy and seeded sampling repeat, --top_logits rows, chat with /reset, perplexity output,
# and the errors that need a model file (prompt longer than the context, a text shorter than
# one chunk).
#   tests/st_run_test.sh ST_EXPORT ST_RUN ST_PERPLEXITY SOURCE_DIR BINARY_DIR
set -euo pipefail
st_export=$1 st_run=$2 st_ppl=$3 src=$4 bin=$5
dir="$bin/test_tmp/st_run"
mkdir -p "$dir"
model="$dir/tiny.stmf"
"$st_export" --random-init --config "$src/configs/model/tiny.json" --quant q4_0 \
  --output "$model" --force > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; exit 1; }

fail=0
check() {  # description, then a command that must succeed
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}
matches() { grep -Eq -- "$2" "$1"; }

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

# Errors that need a model file.
head -c 600 /dev/zero | tr '\0' x > "$dir/long.txt"
if run --prompt_file "$dir/long.txt" > /dev/null 2> "$dir/long.err"; then
  echo "FAIL: a prompt longer than the context was accepted"; fail=1
fi
check "long prompt error" matches "$dir/long.err" \
  "the prompt is 600 tokens, longer than the model's context of 512 tokens"

# Perplexity: a random model is close to uniform over 4096 ids.
for i in $(seq 1 40); do echo "In the beginning God created the heaven and the earth. $i"; done > "$dir/text.txt"
"$st_ppl" --model "$model" --file "$dir/text.txt" --ctx 128 --chunks 3 > "$dir/ppl.txt" 2>&1 || fail=1
cat "$dir/ppl.txt"
check "perplexity chunks" matches "$dir/ppl.txt" '^\[3/3\] PPL [0-9.]+ \(this chunk [0-9.]+\) \| [0-9.]+ tok/s \| ETA'
check "perplexity final" matches "$dir/ppl.txt" '^Final estimate: PPL = [0-9.]+ \+/- [0-9.]+$'
ppl=$(sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p' "$dir/ppl.txt")
check "PPL $ppl near 4096" awk -v p="$ppl" 'BEGIN { exit !(p > 2000 && p < 8000) }'
echo short > "$dir/short.txt"
if "$st_ppl" --model "$model" --file "$dir/short.txt" > /dev/null 2> "$dir/short.err"; then
  echo "FAIL: a text shorter than one chunk was accepted"; fail=1
fi
check "short text error" matches "$dir/short.err" \
  "is 6 tokens, shorter than one chunk of 512 tokens: use a longer text or a smaller --ctx"
# Memory-budget mode: the same greedy text as in memory (dashes in flag names work too), the
# cache's figures, a routing profile written by --record_routing and read back by --pin_profile,
# and a budget below the minimum refused with the minimum.
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 --memory-budget 52M \
  --cache_policy lru --record_routing "$dir/routing.json" > "$dir/b1.txt" 2> "$dir/b1.err"
check "budget: same greedy text as in memory" cmp -s "$dir/g1.txt" "$dir/b1.txt"
check "budget: plan line" matches "$dir/b1.err" 'budget 52 MiB: resident weights .* slots of .*policy lru, prefetch on'
check "budget: cache line" matches "$dir/b1.err" 'expert cache: hit rate [0-9.]+% .* MB read/token, I/O stall'
check "routing profile written" matches "$dir/routing.json" '"counts":\[\['
run --prompt "In the beginning" --max_new_tokens 24 --temperature 0 --memory_budget 52M \
  --pin_profile "$dir/routing.json" --io pread > "$dir/b2.txt" 2> "$dir/b2.err"
check "budget, pinned, pread: same text" cmp -s "$dir/g1.txt" "$dir/b2.txt"
if run --prompt "x" --memory_budget 1M > /dev/null 2> "$dir/b3.err"; then
  echo "FAIL: a 1M budget was accepted"; fail=1
fi
check "budget below the minimum states it" matches "$dir/b3.err" 'needs at least [0-9.]+ MiB = weights outside the experts'
if run --prompt "x" --memory_budget 12Q > /dev/null 2> "$dir/b4.err"; then
  echo "FAIL: a bad size was accepted"; fail=1
fi
check "bad size refused" matches "$dir/b4.err" "memory_budget: '12Q' is not a size"

exit $fail
