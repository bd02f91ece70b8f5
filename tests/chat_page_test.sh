#!/usr/bin/env bash
# st-server's chat page (infer/server/chat.html) in headless Chromium: a tiny random model behind
# st-server, scripts/reference/chat_page.mjs (puppeteer-core, the system chromium) types a message,
# sends it, and checks that the reply streams in token by token, that the second turn sends the
# whole conversation, that a server error object is shown readably and that markup in a reply
# is shown as text; then the screenshot it saved.
#   tests/chat_page_test.sh ST_EXPORT ST_SERVER SOURCE_DIR BINARY_DIR
# Needs chromium (scripts/install_deps.sh installs it), node and scripts/reference/node_modules
# (scripts/fetch_tokenizers.sh installs the pinned packages, the ctest fixture "qwen").
set -uo pipefail
prog=chat_page_test
if [[ $# -ne 4 ]]; then
  echo "usage: bash tests/chat_page_test.sh ST_EXPORT ST_SERVER SOURCE_DIR BINARY_DIR" >&2
  exit 2
fi
st_export=$1 st_server=$2 src=$3 bin=$4
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"  # fresh_dir, check, die
chromium=${CHROMIUM:-/usr/bin/chromium}
[[ -x $chromium ]] || die "$chromium is missing; install it: sudo apt-get install chromium (scripts/install_deps.sh)"
command -v node > /dev/null 2>&1 || die "node is missing; install nodejs npm"
[[ -d "$src/scripts/reference/node_modules/puppeteer-core" ]] ||
  die "puppeteer-core is not installed; run: bash scripts/fetch_tokenizers.sh $bin/tokenizers"
dir="$bin/test_tmp/chat_page"
fresh_dir "$dir"

model="$dir/tiny.stmf"
"$st_export" --random-init --config "$src/configs/model/tiny.json" --quant q8_0 \
  --output "$model" --force > "$dir/export.log" 2>&1 || { cat "$dir/export.log"; die "st-export failed"; }

# The server on a free port, stopped when the test ends however it ends.
source "$src/scripts/st_server_util.sh"
trap stop_st_servers EXIT
start_st_server "$dir/server" 60 "$st_server" --model "$model" --threads 2 || die "st-server did not start"
url=$server_url
echo "st-server at $url"

png="$dir/chat.png"
CHROMIUM=$chromium timeout 180 node "$src/scripts/reference/chat_page.mjs" "$url/" "$png" \
  --max_tokens 100 2>&1 | tee "$dir/chat_page.log"
rc=${PIPESTATUS[0]}
check "chat_page.mjs passed (exit $rc)" test "$rc" -eq 0
check "screenshot written" test -s "$png"
check "screenshot is a PNG" bash -c "head -c 8 '$png' | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a'"
size=$(stat -c %s "$png" 2> /dev/null || echo 0)
check "screenshot is not blank ($size bytes > 10000)" test "$size" -gt 10000
check "server still running" kill -0 "$server_pid"
if [[ $fail -ne 0 ]]; then
  echo "---- st-server stderr (last 40 lines)"
  tail -n 40 "$dir/server.err"
fi
exit $fail
