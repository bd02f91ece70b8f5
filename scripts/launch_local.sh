#!/usr/bin/env bash
# Starts N data-parallel st-train processes on this machine (ranks 0..N-1 over loopback) and
# waits for them; if one fails, the others are stopped and the script exits with its status.
# Each rank's output goes to the terminal prefixed with "[rank R]" (rank 0 prints the progress).
#   scripts/launch_local.sh N [st-train flags...]
#   scripts/launch_local.sh 2 --config configs/train/tiny.json --run_dir runs/tiny-dp --threads 1
# Environment: MASTER_PORT (default 29500 + a value from the PID, so two jobs do not collide),
# ST_TRAIN (the binary; default build/train/st-train).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ || $1 -lt 1 ]]; then
  echo "usage: scripts/launch_local.sh N [st-train flags...]   (N >= 1 processes)" >&2
  exit 2
fi
n=$1
shift
bin=${ST_TRAIN:-build/train/st-train}
if [[ ! -x $bin ]]; then
  echo "launch_local.sh: $bin not found; build first (bash scripts/build.sh)" >&2
  exit 2
fi
port=${MASTER_PORT:-$((29500 + $$ % 1000))}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
}
trap 'cleanup; exit 130' INT TERM
for ((r = 0; r < n; ++r)); do
  RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$bin" "$@" > >(sed -u "s/^/[rank $r] /") 2> >(sed -u "s/^/[rank $r] /" >&2) &
  pids+=($!)
done
status=0
remaining=$n
while ((remaining > 0)); do
  wait -n "${pids[@]}" 2> /dev/null
  rc=$?
  remaining=$((remaining - 1))
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "launch_local.sh: a rank exited with status $rc; stopping the others" >&2
    cleanup
  fi
done
wait
exit $status
