#!/usr/bin/env bash
# st-export --format gguf from the command line, each file read by Hugging Face's independent
# GGUF parser (npm @huggingface/gguf via scripts/reference/read_gguf.mjs), which must see exactly
# the metadata (keys, types, values, order) and tensor infos (name, shape, dtype, offset) our
# reader sees (tests/gguf_dump); plus the values llama.cpp needs, the layout refusal and --force,
# a model file as the source, and the flag errors.
#   tests/gguf_npm_test.sh ST_EXPORT GGUF_DUMP SOURCE_DIR BINARY_DIR
# Needs node and scripts/reference/node_modules (scripts/fetch_tokenizers.sh installs both the
# package and BINARY_DIR/tokenizers/qwen3, the ctest fixture "qwen").
set -uo pipefail
prog=gguf_npm_test
if [[ $# -ne 4 ]]; then
  echo "usage: bash tests/gguf_npm_test.sh ST_EXPORT GGUF_DUMP SOURCE_DIR BINARY_DIR" >&2
  exit 2
fi
st_export=$1 gguf_dump=$2 src=$3 bin=$4
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
die() {
  echo "$prog: $*" >&2
  exit 1
}
read_gguf="$src/scripts/reference/read_gguf.mjs"
qwen_dir="$bin/tokenizers/qwen3"
command -v node > /dev/null 2>&1 || die "node is missing; install nodejs npm"
command -v python3 > /dev/null 2>&1 || die "python3 is missing"
[[ -d "$src/scripts/reference/node_modules/@huggingface/gguf" ]] ||
  die "@huggingface/gguf is not installed; run: bash scripts/fetch_tokenizers.sh $bin/tokenizers"
[[ -s "$qwen_dir/tokenizer.json" ]] ||
  die "$qwen_dir/tokenizer.json is missing; run: bash scripts/fetch_tokenizers.sh $bin/tokenizers"
dir="$bin/test_tmp/gguf_npm"
fresh_dir "$dir"

# config NAME KEY=JSON...: configs/model/tiny.json with the keys replaced, as $dir/NAME.json.
config() {
  local name=$1
  shift
  python3 - "$src/configs/model/tiny.json" "$dir/$name.json" "$@" << 'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    c[k] = json.loads(v)
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
}

# export NAME ARGS...: st-export ARGS --format gguf --output $dir/NAME.gguf, logged to NAME.log.
export_gguf() {
  local name=$1
  shift
  "$st_export" "$@" --format gguf --output "$dir/$name.gguf" > "$dir/$name.log" 2>&1 ||
    { cat "$dir/$name.log"; die "st-export for $name failed"; }
}

# same_view NAME: @huggingface/gguf sees in NAME.gguf what our reader sees (NAME.ours.json).
same_view() {
  "$gguf_dump" "$dir/$1.gguf" > "$dir/$1.ours.json" || return 1
  node "$read_gguf" "$dir/$1.gguf" --expect "$dir/$1.ours.json"
}

# value NAME KEY: "TYPE VALUE" of a metadata key as both readers see it ("absent" if it is not
# there; arrays give "9/SUBTYPE LENGTH").
value() {
  python3 - "$dir/$1.ours.json" "$2" << 'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for key, t in d["metadata"]:
    if key == sys.argv[2]:
        v = t["value"]
        if t["type"] == 9:
            print(f"9/{t['subType']} {len(v)}")
        else:
            print(t["type"], json.dumps(v) if isinstance(v, str) else str(v).lower())
        break
else:
    print("absent")
EOF
}
has_value() { [[ "$(value "$1" "$2")" == "$3" ]] || { echo "  $1 $2: $(value "$1" "$2"), want $3"; return 1; }; }

# ---- 1. random weights, the 21B's layout with llama.cpp's window, byte tokenizer, q4_0
config sliding4096 'sliding_window_size=4096'
export_gguf byte_q4 --random-init --config "$dir/sliding4096.json" --quant q4_0 -s 3
check "byte q4_0: @huggingface/gguf reads what we read" same_view byte_q4
check "byte q4_0: arch" has_value byte_q4 general.architecture '8 "smallthinker"'
check "byte q4_0: file type Q4_0" has_value byte_q4 general.file_type '4 2'
check "byte q4_0: block_count u32" has_value byte_q4 smallthinker.block_count '4 4'
check "byte q4_0: sliding window" has_value byte_q4 smallthinker.attention.sliding_window '4 4096'
check "byte q4_0: gpt-2 pre" has_value byte_q4 tokenizer.ggml.pre '8 "gpt-2"'
check "byte q4_0: tokens" has_value byte_q4 tokenizer.ggml.tokens '9/8 4096'
check "byte q4_0: token types int32" has_value byte_q4 tokenizer.ggml.token_type '9/5 4096'
check "byte q4_0: empty merges present" has_value byte_q4 tokenizer.ggml.merges '9/8 0'
check "byte q4_0: eos" has_value byte_q4 tokenizer.ggml.eos_token_id '4 256'
check "byte q4_0: progress" matches "$dir/byte_q4.log" '[0-9]+/[0-9]+ tensors, [0-9.]+/[0-9.]+ MB'
check "byte q4_0: summary" matches "$dir/byte_q4.log" \
  '^wrote .*byte_q4.gguf: 42 tensors, general.file_type 2, tokenizer pre gpt-2'

# ---- 2. the layout llama.cpp cannot express: refused, then written with --force and a warning
if "$st_export" --random-init --config "$src/configs/model/tiny.json" --format gguf \
  --output "$dir/tiny.gguf" > "$dir/refused.log" 2>&1; then
  echo "FAIL: window 64 accepted"
  fail=1
else
  check "window 64 refused, saying why" matches "$dir/refused.log" \
    '^st-export: error: the sliding window is 64 tokens, but llama.cpp ignores attention.sliding_window and always uses 4096; llama.cpp would compute a different model from this GGUF; --force writes the GGUF anyway$'
  check "nothing written" test ! -e "$dir/tiny.gguf"
fi
export_gguf tiny --random-init --config "$src/configs/model/tiny.json" --quant f16 --force
check "--force: warning" matches "$dir/tiny.log" '^st-export: warning: the sliding window is 64 tokens.*\(written anyway: --force\)$'
check "--force: @huggingface/gguf reads what we read" same_view tiny
check "--force: window as configured" has_value tiny smallthinker.attention.sliding_window '4 64'

# ---- 3. the Qwen3 vocabulary through a Hugging Face directory, every layer RoPE + global
config qwen 'vocab_size=151936' 'hidden_size=64' 'num_attention_heads=2' 'num_key_value_heads=1' \
  'rope_layout=[1,1,1,1]' 'sliding_window_layout=[0,0,0,0]' 'tie_word_embeddings=false'
"$st_export" --random-init --config "$dir/qwen.json" --tokenizer "$qwen_dir/tokenizer.json" \
  --format hf --hf_dtype f32 --output "$dir/qwen_hf" > "$dir/qwen_hf.log" 2>&1 ||
  { cat "$dir/qwen_hf.log"; die "st-export --format hf failed"; }
cp "$qwen_dir/tokenizer_config.json" "$dir/qwen_hf/tokenizer_config.json"  # eos, chat template
export_gguf qwen_q8 --input "$dir/qwen_hf" --quant q8_0
check "qwen q8_0: @huggingface/gguf reads what we read" same_view qwen_q8
check "qwen q8_0: name" has_value qwen_q8 general.name '8 "qwen_hf"'
check "qwen q8_0: file type Q8_0" has_value qwen_q8 general.file_type '4 7'
check "qwen q8_0: no sliding window" has_value qwen_q8 smallthinker.attention.sliding_window absent
check "qwen q8_0: rope base f32" has_value qwen_q8 smallthinker.rope.freq_base '6 10000.0'
check "qwen q8_0: qwen2 pre" has_value qwen_q8 tokenizer.ggml.pre '8 "qwen2"'
check "qwen q8_0: tokens padded to vocab_size" has_value qwen_q8 tokenizer.ggml.tokens '9/8 151936'
check "qwen q8_0: merges" has_value qwen_q8 tokenizer.ggml.merges "9/8 $(python3 -c \
  'import json,sys; print(len(json.load(open(sys.argv[1]))["model"]["merges"]))' "$qwen_dir/tokenizer.json")"
check "qwen q8_0: eos <|im_end|>" has_value qwen_q8 tokenizer.ggml.eos_token_id '4 151645'
check "qwen q8_0: add_bos_token false" has_value qwen_q8 tokenizer.ggml.add_bos_token '7 false'
check "qwen q8_0: chat template" python3 -c '
import json, sys
d = dict(json.load(open(sys.argv[1]))["metadata"])
want = json.load(open(sys.argv[2]))["chat_template"]
sys.exit(0 if d["tokenizer.chat_template"]["value"] == want else 1)' \
  "$dir/qwen_q8.ours.json" "$qwen_dir/tokenizer_config.json"
check "qwen q8_0: untied output" python3 -c '
import json, sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))["tensors"]}
o, d = t["output.weight"], t["blk.0.ffn_down_exps.weight"]
sys.exit(0 if o["shape"] == ["64", "151936"] and o["dtype"] == 8 and d["shape"] == ["128", "64", "8"] else 1)' \
  "$dir/qwen_q8.ours.json"

# ---- 4. one of our model files: blocks copied, down matrices requantised (and said so)
"$st_export" --random-init --config "$dir/sliding4096.json" --quant q4_0 -s 3 \
  --output "$dir/model.stmf" > "$dir/stmf.log" 2>&1 || { cat "$dir/stmf.log"; die "stmf export failed"; }
export_gguf from_stmf --input "$dir/model.stmf"
check "model file: @huggingface/gguf reads what we read" same_view from_stmf
check "model file: requantisation reported" matches "$dir/from_stmf.log" \
  '^st-export: warning: the expert down matrices are stored transposed.*quantised again'
check "model file: same metadata as the direct export but the name" python3 -c '
import json, sys
a, b = (dict(json.load(open(p))["metadata"]) for p in sys.argv[1:])
a.pop("general.name"); b.pop("general.name")
sys.exit(0 if a == b else 1)' "$dir/from_stmf.ours.json" "$dir/byte_q4.ours.json"

# ---- 5. flag errors
refused() {
  local what=$1 code=$2 want=$3
  shift 3
  "$st_export" "$@" > "$dir/flag.log" 2>&1
  local rc=$?
  check "$what: exit $code" test "$rc" -eq "$code"
  check "$what: message" matches "$dir/flag.log" "$want"
}
refused "recipe with a model file" 2 '^st-export: error: --quant does not apply to a model file input' \
  --input "$dir/model.stmf" --format gguf --quant q8_0 --output "$dir/never.gguf"
refused "model file to stmf" 2 '^st-export: error: --input .*model.stmf is a model file; only --format gguf reads one' \
  --input "$dir/model.stmf" --output "$dir/never.stmf"
refused "existing output" 2 '^st-export: error: .*byte_q4.gguf exists; pass --force to replace it' \
  --random-init --config "$dir/sliding4096.json" --format gguf --output "$dir/byte_q4.gguf"
refused "hf flags" 2 '^st-export: error: --hf_dtype applies only with --format hf' \
  --random-init --config "$dir/sliding4096.json" --format gguf --hf_dtype f32 --output "$dir/never.gguf"
exit $fail
