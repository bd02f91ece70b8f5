#!/usr/bin/env bash
# st-server, black box, through OpenAI's official Node client (npm openai, pinned in
# scripts/reference/package.json): two tiny random models (the byte tokenizer, which has no chat
# template so chat turns use ChatML, and the real Qwen3 tokenizer), each served with
# --parallel 4 --ctx 256 --api_key; scripts/reference/server_client_test.mjs checks chat and text
# completions (plain and streamed), max_tokens, stop strings, seeds, logprobs, /v1/models,
# /tokenize, /detokenize, /health and the error answers (400, 401, 404, 413, and 503 with
# Retry-After from a third server with --parallel 1 --queue 1);
# scripts/reference/server_load_test.mjs sends each model's server 2 rounds of 64 streamed requests
# from 16 clients, a quarter cancelled mid-stream, and checks the replies against the greedy ones,
# the slots afterwards and the server's memory. Finally SIGTERM and SIGINT stop the servers.
#   tests/st_server_test.sh ST_EXPORT ST_SERVER SOURCE_DIR BINARY_DIR
# Needs node and scripts/reference/node_modules with openai (scripts/fetch_tokenizers.sh installs
# it, and BINARY_DIR/tokenizers/qwen3: the ctest fixture "qwen"); run here when missing.
set -uo pipefail
prog=st_server_test
if [[ $# -ne 4 ]]; then
  echo "usage: bash tests/st_server_test.sh ST_EXPORT ST_SERVER SOURCE_DIR BINARY_DIR" >&2
  exit 2
fi
st_export=$1 st_server=$2 src=$3 bin=$4
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"  # fresh_dir, check, die
ref="$src/scripts/reference"
qwen_tokenizer="$bin/tokenizers/qwen3/tokenizer.json"
command -v node > /dev/null 2>&1 || die "node is missing; install nodejs npm"
[[ -x "$st_server" ]] || die "$st_server is not an executable"
if ! (cd "$ref" && node -e 'import("openai")') > /dev/null 2>&1 || [[ ! -s "$qwen_tokenizer" ]]; then
  bash "$src/scripts/fetch_tokenizers.sh" "$bin/tokenizers" ||
    die "cannot install scripts/reference's packages (openai) or the Qwen tokenizer"
  (cd "$ref" && node -e 'import("openai")') > /dev/null 2>&1 ||
    die "the openai package does not load from $ref/node_modules after npm ci"
fi
dir="$bin/test_tmp/st_server"
fresh_dir "$dir"
key=testkey
ctx=256

# Two models: the byte tokenizer (4096 ids; ids >= 257 decode to U+FFFD) and Qwen3's tokenizer
# (tiny.json with a vocabulary of 151936, as the released models have).
"$st_export" --random-init --config "$src/configs/model/tiny.json" --quant q8_0 \
  --output "$dir/tiny.stmf" --force > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; exit 1; }
node -e 'const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  c.vocab_size = 151936; fs.writeFileSync(process.argv[2], JSON.stringify(c));' \
  "$src/configs/model/tiny.json" "$dir/tiny-qwen.json"
"$st_export" --random-init --config "$dir/tiny-qwen.json" --quant q8_0 --tokenizer "$qwen_tokenizer" \
  --output "$dir/tiny-qwen.stmf" --force > "$dir/export_qwen.log" 2>&1 || { cat "$dir/export_qwen.log"; exit 1; }

# Servers run in the background; whatever happens, none outlives the test.
source "$src/scripts/st_server_util.sh"
trap stop_st_servers EXIT

# start_server NAME MODEL FLAGS...: st-server on a free port (scripts/st_server_util.sh); sets
# server_pid and server_port. Logs: $dir/NAME.err.
start_server() {
  local name=$1 model=$2
  shift 2
  if ! start_st_server "$dir/$name" 60 "$st_server" --model "$model" --threads 2 "$@"; then
    echo "FAIL: st-server $name ($*) did not start"
    exit 1
  fi
  echo "ok: st-server $name ($*) listening on port $server_port, pid $server_pid"
}

start_server byte "$dir/tiny.stmf" --parallel 4 --ctx $ctx --api_key $key
byte_pid=$server_pid byte_port=$server_port
# The Qwen model's server renders chats with the real Qwen3 chat template (its
# tokenizer_config.json), so the requests below go through a template users bring.
qwen_config="$bin/tokenizers/qwen3/tokenizer_config.json"
node -e 'const fs = require("fs");
  fs.writeFileSync(process.argv[2], JSON.parse(fs.readFileSync(process.argv[1], "utf8")).chat_template);' \
  "$qwen_config" "$dir/qwen3.jinja"
start_server qwen "$dir/tiny-qwen.stmf" --parallel 4 --ctx $ctx --api_key $key \
  --chat_template_file "$dir/qwen3.jinja"
qwen_pid=$server_pid qwen_port=$server_port
start_server queue "$dir/tiny.stmf" --parallel 1 --queue 1 --ctx $ctx --api_key $key
queue_pid=$server_pid queue_port=$server_port
check "--port 0: three different free ports" \
  test "$byte_port" -gt 0 -a "$byte_port" != "$qwen_port" -a "$qwen_port" != "$queue_port" -a "$byte_port" != "$queue_port"

# run_node NAME SCRIPT ARGS...: the script's lines, also in $dir/NAME.log; a non-zero exit is a
# failure. The scripts stop themselves after --time_limit 300 s; timeout is the backstop.
run_node() {
  local name=$1 rc
  shift
  timeout 600 node "$@" --time_limit 300 2>&1 | tee "$dir/$name.log"
  rc=${PIPESTATUS[0]}
  if [[ $rc -ne 0 ]]; then
    echo "FAIL: $name (exit $rc$([[ $rc -eq 124 ]] && echo ', timed out after 600 s'))"
    fail=1
  else
    echo "ok: $name"
  fi
}

run_node client_byte "$ref/server_client_test.mjs" --base "http://127.0.0.1:$byte_port" --model tiny.stmf \
  --api_key $key --ctx $ctx --parallel 4 --queue_base "http://127.0.0.1:$queue_port"
run_node client_qwen "$ref/server_client_test.mjs" --base "http://127.0.0.1:$qwen_port" --model tiny-qwen.stmf \
  --api_key $key --ctx $ctx --parallel 4
run_node template_qwen "$ref/server_template_test.mjs" --base "http://127.0.0.1:$qwen_port" \
  --api_key $key --config "$qwen_config"
run_node load_byte "$ref/server_load_test.mjs" --base "http://127.0.0.1:$byte_port" --model tiny.stmf \
  --api_key $key --pid "$byte_pid" --parallel 4 --requests 64 --concurrency 16 --max_tokens 20
run_node load_qwen "$ref/server_load_test.mjs" --base "http://127.0.0.1:$qwen_port" --model tiny-qwen.stmf \
  --api_key $key --pid "$qwen_pid" --parallel 4 --requests 64 --concurrency 16 --max_tokens 20

# stop_server NAME PID SIGNAL: the server exits within 10 s of the signal, by itself (status 0,
# or 128 + the signal's number), not by a crash.
stop_server() {
  local name=$1 pid=$2 sig=$3 rc=0 i
  kill -s "$sig" "$pid" 2> /dev/null
  for i in $(seq 1 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2> /dev/null; then
    echo "FAIL: st-server $name still runs 10 s after SIG$sig ($(grep -E '^Sig(Ign|Cgt):' /proc/"$pid"/status | tr '\n' ' '))"
    fail=1
    return
  fi
  wait "$pid" || rc=$?
  local signum
  signum=$(kill -l "$sig")
  if [[ $rc -eq 0 || $rc -eq $((128 + signum)) ]]; then
    echo "ok: st-server $name stopped on SIG$sig (exit $rc)"
  else
    echo "FAIL: st-server $name exited $rc on SIG$sig; stderr:"
    tail -n 20 "$dir/$name.err"
    fail=1
  fi
}
stop_server byte "$byte_pid" TERM
stop_server qwen "$qwen_pid" INT
stop_server queue "$queue_pid" TERM

exit $fail
