#!/usr/bin/env bash
# A checkpoint directory laid out as the released SmallThinker-4BA0.6B-Instruct is, end to end
# with no hand edits: config.json with every published key (small sizes, random weights),
# the real Qwen3 tokenizer.json and tokenizer_config.json (its chat template, add_bos_token
# false), a Qwen3-style generation_config.json. Checks: st-export imports it and names the keys
# it ignored; st-inspect shows the policy and the defaults; st-run puts nothing in front of a
# prompt; st-run --chat feeds exactly the string the checkpoint's own template renders
# (st-data render-chat, which the Jinja golden test ties to Hugging Face's renderer).
#   tests/released_layout_test.sh ST_EXPORT ST_RUN ST_INSPECT ST_DATA SOURCE_DIR BINARY_DIR
set -euo pipefail
st_export=$1 st_run=$2 st_inspect=$3 st_data=$4 src=$5 bin=$6
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
qwen="$bin/tokenizers/qwen3"
for f in tokenizer.json tokenizer_config.json; do
  [[ -f "$qwen/$f" ]] || { echo "missing $qwen/$f (ctest fixture fetch_tokenizers)"; exit 1; }
done
dir="$bin/test_tmp/released_layout"
fresh_dir "$dir"
hf="$dir/SmallThinker-tiny-Instruct"

# Random weights for small sizes, written as a Hugging Face directory by our own exporter...
python3 - "$src/tests/data/released/smallthinker-4b-a0.6b-instruct.config.json" "$dir" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
small = dict(hidden_size=64, head_dim=32, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, moe_num_primary_experts=4, moe_num_active_primary_experts=2,
             moe_ffn_hidden_size=64, max_position_embeddings=2048)
c.update(small)
c["rope_layout"] = [1] * 2
c["sliding_window_layout"] = [0] * 2
# ...then given exactly the published key set (every key of the released file, same order).
json.dump(c, open(sys.argv[2] + "/config.json", "w"), indent=2)
ours = {k: v for k, v in c.items() if k in (
    "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
    "rope_layout", "sliding_window_layout", "sliding_window_size", "moe_num_primary_experts",
    "moe_num_active_primary_experts", "moe_ffn_hidden_size", "tie_word_embeddings",
    "bos_token_id", "eos_token_id")}
json.dump(ours, open(sys.argv[2] + "/ours.json", "w"), indent=2)
EOF
"$st_export" --random-init --config "$dir/ours.json" --tokenizer "$qwen/tokenizer.json" \
  --format hf --output "$hf" > "$dir/hf.log" 2>&1 || { cat "$dir/hf.log"; exit 1; }
cp "$dir/config.json" "$hf/config.json"
cp "$qwen/tokenizer.json" "$qwen/tokenizer_config.json" "$hf/"
cat > "$hf/generation_config.json" <<'EOF'
{
  "bos_token_id": 151643,
  "do_sample": true,
  "eos_token_id": [151645, 151643],
  "pad_token_id": 151643,
  "temperature": 0.6,
  "top_k": 20,
  "top_p": 0.95,
  "transformers_version": "4.53.3"
}
EOF
check "config.json has every published key" python3 -c "
import json, sys
a = list(json.load(open('$src/tests/data/released/smallthinker-4b-a0.6b-instruct.config.json')))
b = list(json.load(open('$hf/config.json')))
sys.exit(a != b)"

# Import: no hand edits.
model="$dir/model.stmf"
"$st_export" --input "$hf" --output "$model" --quant q8_0 > "$dir/export.log" 2>&1 ||
  { cat "$dir/export.log"; exit 1; }
check "export names the ignored config keys" matches "$dir/export.log" \
  'config.json: ignored keys that do not change the computation: .*tokenizer_class.*use_cache'
"$st_inspect" "$model" > "$dir/inspect.txt"
check "policy stored: no BOS, eos <|im_end|>" matches "$dir/inspect.txt" \
  'tokenizer policy: add_bos_token false .* add_eos_token false, bos_token none, eos_token <\|im_end\|>'
check "generation defaults stored" matches "$dir/inspect.txt" \
  'generation defaults: do_sample true, temperature 0.6, top_k 20, top_p 0.95, eos \[151645, 151643\]'
check "end ids include <|im_end|>" matches "$dir/inspect.txt" 'tokenizer.eos_token_ids = \[151643, 151645\]'

# The first prompt token is the prompt's own first token.
"$st_data" encode --tokenizer "$hf" --text "Hello world" > "$dir/ids.json"
first=$(python3 -c "import json; print(json.load(open('$dir/ids.json'))[0])")
"$st_run" --model "$model" --prompt "Hello world" --max_new_tokens 2 --top_logits 1 \
  --logits_out "$dir/prompt.jsonl" > /dev/null 2> "$dir/prompt.err"
check "first prompt token is $first (no BOS in front)" \
  matches "$dir/prompt.jsonl" "^\{\"pos\":0,\"token\":$first,"
check "sampling defaults from generation_config" matches "$dir/prompt.err" \
  'sampling from the model.s generation_config: top_k 20, top_p 0.95, temperature 0.6'

# Chat renders the checkpoint's own template: the prompt tokens st-run feeds spell exactly what
# st-data render-chat prints for the same conversation.
printf 'What is 2+2?\n' |
  "$st_run" --model "$model" --chat --system "You are brief." --temperature 0 \
    --max_new_tokens 3 --chat_template_kwargs '{"enable_thinking": false}' --top_logits 1 \
    --logits_out "$dir/chat.jsonl" > "$dir/chat.txt" 2> "$dir/chat.err" ||
  { cat "$dir/chat.err"; exit 1; }
cat > "$dir/conv.json" <<'EOF'
[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What is 2+2?"}]
EOF
"$st_data" render-chat --template "$hf/tokenizer_config.json" --messages "$dir/conv.json" \
  --add_generation_prompt --kwargs '{"enable_thinking": false}' > "$dir/rendered.txt"
check "rendered prompt ends in the empty think block" \
  python3 -c "import sys; sys.exit(not open('$dir/rendered.txt').read().endswith('<|im_start|>assistant\n<think>\n\n</think>\n\n'))"
"$st_data" encode --tokenizer "$hf" --input "$dir/rendered.txt" > "$dir/rendered_ids.json"
check "st-run --chat fed the rendered template, token for token" python3 - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
want = json.load(open(d + "/rendered_ids.json"))
rows = [json.loads(l) for l in open(d + "/chat.jsonl")]
got = [r["token"] for r in rows[:len(want)]]
sys.exit(got != want or [r["pos"] for r in rows[:len(want)]] != list(range(len(want))))
EOF

# A second turn feeds only what follows the context, /reset starts again from position 0 with
# exactly the first turn's tokens. The template writes each user turn with the assistant header
# after it and leaves replies out, so turn 2's rendering extends turn 1's whatever the random
# model replies (one token a reply: the sampled token is not in the KV cache yet).
chatml="$dir/user_turns.jinja"
cat > "$chatml" <<'JINJA'
{%- for m in messages if m.role != 'assistant' -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% if m.role == 'user' %}<|im_start|>assistant
{% endif %}
{%- endfor -%}
JINJA
printf 'What is 2+2?\nAnd 3+3?\n/reset\nWhat is 2+2?\n' |
  "$st_run" --model "$model" --chat --system "You are brief." --temperature 0 \
    --max_new_tokens 1 --chat_template_file "$chatml" --top_logits 1 \
    --logits_out "$dir/turns.jsonl" > /dev/null 2> "$dir/turns.err" ||
  { cat "$dir/turns.err"; exit 1; }
cat > "$dir/conv1.json" <<'JSON'
[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What is 2+2?"}]
JSON
"$st_data" render-chat --template "$chatml" --messages "$dir/conv1.json" \
  > "$dir/chatml1.txt"
"$st_data" encode --tokenizer "$hf" --input "$dir/chatml1.txt" > "$dir/chatml1_ids.json"
check "/reset noted" matches "$dir/turns.err" 'context cleared'
check "no re-read when the template extends the context" bash -c "! grep -q 'read again' '$dir/turns.err'"
check "turn 2 continues at the end of turn 1; /reset restarts at 0 with the same tokens" \
  python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/turns.jsonl")]
first = json.load(open(d + "/chatml1_ids.json"))
n = len(first)
starts = [i for i, r in enumerate(rows) if r["pos"] == 0]
ok = (len(starts) == 2 and [r["token"] for r in rows[:n]] == first and
      [r["pos"] for r in rows[:n]] == list(range(n)) and rows[n]["pos"] == n and
      [r["token"] for r in rows[starts[1]:starts[1] + n]] == first)
sys.exit(not ok)
PY
# Qwen3's template drops the (empty) thinking block of past turns, so the conversation is read
# again from its start, as Hugging Face would compute it; st-run says so once.
printf 'What is 2+2?\nAnd 3+3?\n' |
  "$st_run" --model "$model" --chat --temperature 0 --max_new_tokens 2 \
    --chat_template_kwargs '{"enable_thinking": false}' > /dev/null 2> "$dir/reread.err"
check "re-read noted for Qwen3" matches "$dir/reread.err" 'the conversation is read again from its start'

# Bad chat inputs get clear errors: a template with a syntax error (line and column), kwargs that
# are not a JSON object.
printf '{%% if messages %%}\n{{ messages[0].content }\n{%% endif %%}' > "$dir/bad.jinja"
if echo hi | "$st_run" --model "$model" --chat --chat_template_file "$dir/bad.jinja" \
  > /dev/null 2> "$dir/bad_template.err"; then
  echo "FAIL: a broken template was accepted"; fail=1
fi
check "broken template: line and column" matches "$dir/bad_template.err" \
  '^st-run: error: chat template:2:24: expected .}}. to close the expression'
if echo hi | "$st_run" --model "$model" --chat --chat_template_kwargs '[1]' \
  > /dev/null 2> "$dir/bad_kwargs.err"; then
  echo "FAIL: kwargs that are not an object were accepted"; fail=1
fi
check "kwargs must be an object" matches "$dir/bad_kwargs.err" '--chat_template_kwargs must be a JSON object'

# A checkpoint whose tokenizer_config.json asks for a BOS gets one, in front of the prompt only.
python3 - "$hf/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["add_bos_token"] = True
c["bos_token"] = "<|endoftext|>"
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
"$st_export" --input "$hf" --output "$dir/bos.stmf" --quant q8_0 > "$dir/bos.log" 2>&1 ||
  { cat "$dir/bos.log"; exit 1; }
"$st_run" --model "$dir/bos.stmf" --prompt "Hello world" --max_new_tokens 1 --top_logits 1 \
  --logits_out "$dir/bos.jsonl" > /dev/null 2>&1
check "add_bos_token true: BOS first, then the prompt's first token" python3 - "$dir" "$first" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/bos.jsonl")]
sys.exit([r["token"] for r in rows[:2]] != [151643, int(sys.argv[2])])
PY
"$st_data" encode --tokenizer "$hf" --text "Hello world" > "$dir/bos_ids.json"
check "st-data applies the directory's policy too" python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
sys.exit(json.load(open(d + "/bos_ids.json")) != [151643] + json.load(open(d + "/ids.json")))
PY

exit $fail
