#!/usr/bin/env bash
# Training in stages (st-train --resume --stage): a run of 6 steps at seq_len 32, then a new
# stage from its checkpoint with another sequence length, schedule and rope_theta for 4 steps:
#  - the steps carry on (7..10), the checkpoint's model config has the new rope_theta and
#    context, its history records the stage;
#  - the stage interrupted at step 8 and resumed (plain --resume) gives the uninterrupted
#    stage's losses: a resume stays in its stage (schedule offset, data position);
#  - bad combinations of flags are refused.
#   bash tests/train_stage_test.sh BUILD_DIR
set -uo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
work="$build/test_tmp/train_stage"
fresh_dir "$work"
train="$build/train/st-train"

kjv_dataset "$build" "$work" 200000 500
config() {  # name seq_len max_steps lr
  cat > "$work/$1.json" << JSON
{"model_config": "$src/configs/model/tiny.json", "data": "$work/data", "seq_len": $2,
 "micro_batch_size": 4, "grad_accum_steps": 1, "max_steps": $3, "warmup_steps": 1, "lr": $4,
 "log_interval": 1, "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 0,
 "threads": 1, "seed": 77}
JSON
}
config stage1 32 6 0.002
config stage2 64 4 0.0005
curve() { python3 -c "
import json, sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j['type'] == 'train': print(j['step'], repr(j['loss']), repr(j['lr']))" "$1"; }
attr() { h5dump -a "/$2" "$1/checkpoint.h5" 2> /dev/null | tr -d '\n' ; }

"$train" --config "$work/stage1.json" --run_dir "$work/a" --quiet
cp -r "$work/a" "$work/b"
"$train" --run_dir "$work/a" --resume --stage "$work/stage2.json" --rope_theta 50000 \
  --max_position_embeddings 1024 > "$work/a_stage.out" 2>&1
check "the stage says where it starts" matches "$work/a_stage.out" \
  "^new stage from step 6: data .*, seq_len 64, 4 steps, rope_theta 50000"
curve "$work/a/metrics.jsonl" > "$work/a.curve"
check "the steps carry on to 10" test "$(tail -1 "$work/a.curve" | cut -d' ' -f1)" = 10
check "the stage's schedule starts at its own warm-up (step 7 lr 0.0005)" \
  grep -q "^7 .* 0.0005$" "$work/a.curve"
check "the checkpoint is at step 10" matches <(attr "$work/a" step) '\(0\): 10'
check "the checkpoint's model config has the stage's rope_theta" \
  matches <(attr "$work/a" model_config) 'rope_theta.: *50000'
check "the checkpoint's model config has the stage's context" \
  matches <(attr "$work/a" model_config) 'max_position_embeddings.: *1024'
check "the history records the stage" matches <(attr "$work/a" history) 'event.*stage.*step.*6'

# The same stage interrupted at step 8, then a plain --resume: the same losses and rates.
"$train" --run_dir "$work/b" --resume --stage "$work/stage2.json" --rope_theta 50000 \
  --max_position_embeddings 1024 --stop_at_step 8 --quiet
"$train" --run_dir "$work/b" --resume --quiet
curve "$work/b/metrics.jsonl" > "$work/b.curve"
check "an interrupted stage resumes to the uninterrupted stage's curve" \
  cmp -s "$work/a.curve" "$work/b.curve"

# Refusals.
"$train" --config "$work/stage1.json" --run_dir "$work/c" --stage "$work/stage2.json" \
  > "$work/c.out" 2>&1
check "--stage without --resume is a usage error (2)" test $? -eq 2
"$train" --run_dir "$work/a" --resume --rope_theta 1000 > "$work/d.out" 2>&1
check "--rope_theta outside a stage is a usage error (2)" test $? -eq 2
config long 2048 2 0.001
"$train" --run_dir "$work/a" --resume --stage "$work/long.json" > "$work/e.out" 2>&1
check "a stage longer than the context says how to raise it" \
  matches "$work/e.out" "exceeds the model's max_position_embeddings 1024; raise it for the stage with --max_position_embeddings"
[[ $fail -eq 0 ]] || diff "$work/a.curve" "$work/b.curve"
exit $fail
