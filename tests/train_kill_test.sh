#!/usr/bin/env bash
# Stops that lose nothing (st-train):
#  1. SIGINT: the step in progress finishes, the checkpoint is written, exit 0 with "resume with
#     --resume"; the resumed run's losses equal the uninterrupted run's.
#  2. A second SIGINT during that checkpoint write: exit at once (130); the last complete
#     checkpoint is untouched and resumes.
#  3. SIGKILL at 20 moments in one run directory (5 of them aimed inside a checkpoint write,
#     the others at random times), each start resuming the last: after every kill the
#     checkpoint reads whole, and once the run is taken to the end its loss curve equals the
#     uninterrupted run's, step for step, with no record doubled and no temporary file left.
#   bash tests/train_kill_test.sh BUILD_DIR
set -uo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/test_util.sh"
work="$build/test_tmp/train_kill"
fresh_dir "$work"
train="$build/train/st-train"

kjv_dataset "$build" "$work" 200000 500
steps=24
cat > "$work/train.json" << JSON
{"model_config": "$src/configs/model/tiny.json", "data": "$work/data", "seq_len": 32,
 "micro_batch_size": 4, "grad_accum_steps": 1, "max_steps": $steps, "warmup_steps": 2,
 "log_interval": 1, "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 3,
 "threads": 1}
JSON
# "step loss" of each train record, in file order.
curve() { python3 -c "
import json, sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j['type'] == 'train': print(j['step'], repr(j['loss']))" "$1"; }
"$train" --config "$work/train.json" --run_dir "$work/ref" --quiet
curve "$work/ref/metrics.jsonl" > "$work/ref.curve"
check "the reference run logs $steps steps" test "$(wc -l < "$work/ref.curve")" -eq $steps

# wait_for FILE [SECONDS]: until FILE exists (or time runs out).
wait_for() {
  local i
  for ((i = 0; i < ${2:-60} * 100; ++i)); do
    [[ -e $1 ]] && return 0
    sleep 0.01
  done
  return 1
}
# 1. One SIGINT.
"$train" --config "$work/train.json" --run_dir "$work/int" > "$work/int.out" 2>&1 &
pid=$!
wait_for "$work/int/checkpoint.h5"
kill -INT $pid
wait $pid
rc=$?
check "SIGINT: exit status 0 (got $rc)" test $rc -eq 0
check "SIGINT: says how to resume" matches "$work/int.out" 'stopped by a signal after step [0-9]+; .* resume with --resume'
stopped=$(grep -Eo 'stopped by a signal after step [0-9]+' "$work/int.out" | grep -Eo '[0-9]+$')
check "SIGINT: stopped before the end (step ${stopped:-?} < $steps)" test "${stopped:-$steps}" -lt $steps
"$train" --run_dir "$work/int" --resume --quiet
curve "$work/int/metrics.jsonl" > "$work/int.curve"
check "SIGINT: the resumed run's loss curve is the uninterrupted one" cmp -s "$work/int.curve" "$work/ref.curve"

# 2. A second SIGINT while the first one's checkpoint is being written (held open for 2 s by
#    the test hook): out at once (130), the previous checkpoint untouched and resumable.
ST_TEST_CHECKPOINT_WRITE_DELAY_MS=2000 "$train" --config "$work/train.json" \
  --run_dir "$work/int2" > "$work/int2.out" 2>&1 &
pid=$!
wait_for "$work/int2/checkpoint.h5"
sum_before=$(md5sum < "$work/int2/checkpoint.h5")
kill -INT $pid
for ((i = 0; i < 1000; ++i)); do  # the stop's checkpoint write has begun
  compgen -G "$work/int2/checkpoint.h5.tmp.*" > /dev/null && break
  sleep 0.01
done
kill -INT $pid
wait $pid
rc=$?
check "second SIGINT during the checkpoint write: exit status 130 at once (got $rc)" test $rc -eq 130
check "second SIGINT: the previous checkpoint is untouched" \
  test "$(md5sum < "$work/int2/checkpoint.h5")" = "$sum_before"
"$train" --run_dir "$work/int2" --resume --quiet
curve "$work/int2/metrics.jsonl" > "$work/int2.curve"
check "second SIGINT: the run still resumes to the uninterrupted curve" cmp -s "$work/int2.curve" "$work/ref.curve"

# 3. SIGKILL, 20 times in one run directory.
export ST_TEST_CHECKPOINT_WRITE_DELAY_MS=150
run="$work/kill"
RANDOM=7  # the same moments every run of the test
readable=0 in_write=0
for ((k = 1; k <= 20; ++k)); do
  if [[ -f $run/checkpoint.h5 ]]; then args=(--run_dir "$run" --resume); else args=(--config "$work/train.json" --run_dir "$run"); fi
  "$train" "${args[@]}" > "$work/kill_$k.out" 2>&1 &
  pid=$!
  if ((k % 4 == 0)); then  # aimed: while a checkpoint's temporary file is being written
    for ((i = 0; i < 3000; ++i)); do
      compgen -G "$run/checkpoint.h5.tmp.*" > /dev/null && break
      kill -0 $pid 2> /dev/null || break
      sleep 0.005
    done
    compgen -G "$run/checkpoint.h5.tmp.*" > /dev/null && in_write=$((in_write + 1))
  else
    wait_for "$run/checkpoint.h5"
    sleep "0.$((RANDOM % 9))$((RANDOM % 10))"
  fi
  kill -KILL $pid 2> /dev/null
  wait $pid 2> /dev/null
  # The checkpoint the next start resumes from reads whole (every tensor, both copies).
  "$build/train/st-ckpt-diff" "$run/checkpoint.h5" "$run/checkpoint.h5" > /dev/null 2>&1 &&
    readable=$((readable + 1))
done
check "SIGKILL: after each of the 20 kills the checkpoint reads whole ($readable)" test $readable -eq 20
check "SIGKILL: the starts after a checkpoint existed resumed it" \
  test "$(grep -l "^resumed $run/checkpoint.h5 at step" "$work"/kill_*.out | wc -l)" -ge 5
check "SIGKILL: 5 kills landed inside a checkpoint write ($in_write)" test $in_write -eq 5
unset ST_TEST_CHECKPOINT_WRITE_DELAY_MS
"$train" --run_dir "$run" --resume > "$work/kill_final.out" 2>&1
check "SIGKILL: the last resume runs to the end" matches "$work/kill_final.out" "saved .* \\(step $steps\\)"
curve "$run/metrics.jsonl" > "$work/kill.curve"
check "SIGKILL: the loss curve is the uninterrupted one, every step once" cmp -s "$work/kill.curve" "$work/ref.curve"
check "SIGKILL: no temporary checkpoint left" test -z "$(compgen -G "$run/checkpoint.h5.tmp.*")"
[[ $fail -eq 0 ]] || diff "$work/kill.curve" "$work/ref.curve" | head -20
exit $fail
