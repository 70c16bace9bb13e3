#!/usr/bin/env bash
# Graceful shutdown: on SIGTERM a worker stops leasing, lets running tasks
# finish within --grace, hands the others back to the broker (READY again, no
# attempt spent), and exits 0; another worker picks them up.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=shutdown-$RUN_ID

step "Four tasks: 'short' (sleep 500ms), 'long' (sleep 2s), and two more short ones"
short=$(conveyor submit --queue "$QUEUE" --type sleep 500ms)
long=$(conveyor submit --queue "$QUEUE" --type sleep 2s)
next1=$(conveyor submit --queue "$QUEUE" --type sleep 500ms)
next2=$(conveyor submit --queue "$QUEUE" --type sleep 500ms)
show() {
  for name in short long next1 next2; do
    printf '%-6s %s\n' "$name" "$(conveyor get "${!name}" | grep -E '^(state|attempts):' | paste -sd' ')"
  done
}

step "Worker A: 2 slots, --grace=1s; once both slots run, SIGTERM it"
start_worker a --queue="$QUEUE" --concurrency=2 --grace=1s
worker_a=$WORKER_PID
two_running() { [[ $(count "$QUEUE" running) -eq 2 ]]; }
wait_for 10 two_running || fail "worker A did not start two tasks"
status=0
stop_worker "$worker_a" || status=$?
echo "worker A exited with status $status; its log:"
sed -nE 's/.*"ts":"[^T]*T([^Z]*)Z","level":"[a-z]*","msg":"([^"]*)"(.*"outcome":"([^"]*)")?.*/  \1  \2 \4/p' \
  "$WORK/a.log" | grep -v 'task started'
show

[[ $status -eq 0 ]] || fail "worker A exited $status, expected 0 after a drain"
state_of() { conveyor get "$1" | sed -n 's/^state: //p'; }
[[ $(state_of "$short") == SUCCEEDED ]] || fail "the short task did not finish within the grace"
[[ $(state_of "$long") == READY ]] || fail "the long task was not handed back READY"
conveyor get "$long" | grep -q '^failures: 0/' || fail "handing the long task back spent an attempt"
[[ $(state_of "$next1") == READY && $(state_of "$next2") == READY ]] || fail "next1, next2 not READY"

step "Worker B picks up the rest"
start_worker b --queue="$QUEUE" --concurrency=4
all_done() { [[ $(count "$QUEUE" succeeded) -eq 4 ]]; }
wait_for 20 all_done || fail "worker B did not finish the handed-back tasks"
show
conveyor get "$long" | grep -q '^failures: 0/' || fail "the long task spent an attempt"
# 'long' was cut at the end of the grace; it and the two never started went back unspent.
echo "OK: 'short' finished within the grace, the other three were handed back and run by worker B"
