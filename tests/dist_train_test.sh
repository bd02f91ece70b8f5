#!/usr/bin/env bash
# Data-parallel training on loopback (c10d, Gloo):
#  1. 2 processes x micro-batch B give the parameters (st-ckpt-diff), losses and gradient norms
#     (metrics.jsonl) of 1 process x 2B after 4 steps, also with gradient accumulation;
#  2. the load-balance loss in groups of 1 and 2 ranks on 2 processes: group size 2 is the
#     single process's global-batch loss, group size 1 is not;
#  3. a rank killed mid-run makes the other fail with a clear error within the timeout, the
#     last checkpoint stays intact, and the run resumes from it with another world size.
#   bash tests/dist_train_test.sh BUILD_DIR
set -uo pipefail
build=$1
src=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
work="$build/test_tmp/dist_train"
fresh_dir "$work"

head -c 300000 "$build/corpus/kjv.txt" > "$work/kjv.txt"
"$build/data/st-data" train-tokenizer --input "$work/kjv.txt" --vocab_size 600 \
  --output "$work/tok.json" > /dev/null
"$build/data/st-data" prepare --tokenizer "$work/tok.json" --input "$work/kjv.txt" \
  --output "$work/data" --val_fraction 0.05 > /dev/null
config() {  # name micro_batch accum lbl_group_size [lbl_coef]
  cat > "$work/$1.json" << JSON
{"model_config": "$src/configs/model/tiny.json", "data": "$work/data", "seq_len": 64,
 "micro_batch_size": $2, "grad_accum_steps": $3, "max_steps": 4, "warmup_steps": 1,
 "log_interval": 1, "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 0,
 "lbl_window": 1, "lbl_group_size": $4, "lbl_coef": ${5:-0.01}, "threads": 1}
JSON
}
export MASTER_PORT=$((31000 + $$ % 2000))
launch() { ST_TRAIN="$build/train/st-train" bash "$src/scripts/launch_local.sh" "$@"; }
# "step loss grad_norm lbl" per train record
curve() { python3 -c "
import json, sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j['type'] == 'train': print(j['step'], j['loss'], j['grad_norm'], j['lbl'])" "$1"; }
same_curve() {  # two metrics files agree within 1e-4 relative
  python3 - "$1" "$2" << 'EOF'
import json, sys
def rows(p):
    return [(j['loss'], j['grad_norm'], j['lbl']) for j in map(json.loads, open(p)) if j['type'] == 'train']
a, b = rows(sys.argv[1]), rows(sys.argv[2])
ok = len(a) == len(b) == 4 and all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
print("  ", a[-1], "vs", b[-1])
sys.exit(0 if ok else 1)
EOF
}

# 1. Equivalence: 1 x 16 against 2 x 8, and 2 x (4 x accumulation 2). The load-balance loss
#    pools each micro-batch's fractions, so with accumulation it is compared without it.
config single 16 1 0
config dp 8 1 0
config single_nolbl 16 1 0 0
config dp_accum 4 2 0 0
"$build/train/st-train" --config "$work/single.json" --run_dir "$work/single" --quiet
"$build/train/st-train" --config "$work/single_nolbl.json" --run_dir "$work/single_nolbl" --quiet
launch 2 --config "$work/dp.json" --run_dir "$work/dp" --quiet
launch 2 --config "$work/dp_accum.json" --run_dir "$work/dp_accum" --quiet
check "2 x 8 has the losses and gradient norms of 1 x 16" \
  same_curve "$work/dp/metrics.jsonl" "$work/single/metrics.jsonl"
check "2 x 8 has the parameters of 1 x 16" \
  "$build/train/st-ckpt-diff" --atol 2e-4 --rtol 1e-3 "$work/dp/checkpoint.h5" \
  "$work/single/checkpoint.h5"
check "2 x (4, accumulated twice) has the losses of 1 x 16" \
  same_curve "$work/dp_accum/metrics.jsonl" "$work/single_nolbl/metrics.jsonl"
check "2 x (4, accumulated twice) has the parameters of 1 x 16" \
  "$build/train/st-ckpt-diff" --atol 2e-4 --rtol 1e-3 "$work/dp_accum/checkpoint.h5" \
  "$work/single_nolbl/checkpoint.h5"

# 2. The DP-group load-balance loss: groups of 2 = the global batch (same lbl as 1 x 16);
#    groups of 1 = each rank's own fractions (another lbl).
config dp_g1 8 1 1
launch 2 --config "$work/dp_g1.json" --run_dir "$work/dp_g1" --quiet
lbl1() { python3 -c "
import json, sys
print([j['lbl'] for j in map(json.loads, open(sys.argv[1])) if j['type'] == 'train'][0])" "$1"; }
check "group size 1 gives a per-rank loss unlike the global one" \
  python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(a - b) > 1e-6 else 1)" \
  "$(lbl1 "$work/dp_g1/metrics.jsonl")" "$(lbl1 "$work/single/metrics.jsonl")"
check "per-group expert load logged" grep -q '"group_expert_load"' "$work/dp_g1/metrics.jsonl"

# 3. A rank dies: the other fails within the timeout; resume from the checkpoint with 1 rank.
cat > "$work/long.json" << JSON
{"model_config": "$src/configs/model/tiny.json", "data": "$work/data", "seq_len": 64,
 "micro_batch_size": 8, "max_steps": 400, "warmup_steps": 1, "log_interval": 1,
 "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 2, "threads": 1}
JSON
# start_pair NAME TIMEOUT PORT_OFFSET: ranks 0 and 1 of the long run in the background (r0, r1),
# then wait until rank 0 logged step 5 and a checkpoint exists.
start_pair() {
  local port=$((MASTER_PORT + $3))
  RANK=0 WORLD_SIZE=2 MASTER_PORT=$port "$build/train/st-train" --config "$work/long.json" \
    --run_dir "$work/$1" --dist_timeout "$2" > "$work/${1}0.log" 2>&1 &
  r0=$!
  RANK=1 WORLD_SIZE=2 MASTER_PORT=$port "$build/train/st-train" --config "$work/long.json" \
    --run_dir "$work/$1" --dist_timeout "$2" > "$work/${1}1.log" 2>&1 &
  r1=$!
  for _ in $(seq 1 600); do
    if [[ -f $work/$1/checkpoint.h5 ]] && grep -q "step      5/" "$work/${1}0.log"; then break; fi
    sleep 0.1
  done
}
start_pair kill 20 7
kill -9 "$r1"
start=$(date +%s)
wait "$r0"
rc=$?
took=$(($(date +%s) - start))
wait "$r1" 2> /dev/null
check "rank 0 fails when rank 1 dies (status $rc)" test "$rc" -ne 0
check "within the timeout (${took} s)" test "$took" -le 40
check "the error says what happened and what to do" \
  grep -q "a collective failed .*restart every rank with --resume" "$work/kill0.log"
"$build/train/st-ckpt-diff" "$work/kill/checkpoint.h5" "$work/kill/checkpoint.h5" > /dev/null
check "the last checkpoint is intact" test $? -eq 0
"$build/train/st-train" --run_dir "$work/kill" --resume --max_steps 12 --quiet > "$work/resume.log" 2>&1
check "resumes on 1 rank" test $? -eq 0
check "resumed run reached step 12" grep -q '"step":12' "$work/kill/metrics.jsonl"

# 4. A rank hangs (stopped, its sockets open): the other fails once --dist_timeout has passed.
start_pair hang 5 11
kill -STOP "$r1"
start=$(date +%s)
wait "$r0"
rc=$?
took=$(($(date +%s) - start))
kill -9 "$r1" 2> /dev/null
wait "$r1" 2> /dev/null
check "rank 0 fails when rank 1 hangs (status $rc)" test "$rc" -ne 0
check "after the 5 s timeout, not much later (${took} s)" test "$took" -ge 4 -a "$took" -le 30
check "the hang error names the timeout" grep -q "none answered within 5 s" "$work/hang0.log"

exit $fail
