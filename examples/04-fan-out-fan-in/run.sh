#!/usr/bin/env bash
# Fan-out / fan-in: a group of tasks run in parallel (fan-out), and one
# callback task, submitted by the broker once every member has ended, that
# receives all their results (fan-in).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
PARTS_Q=parts-$RUN_ID COLLECT_Q=collect-$RUN_ID

step "Workers: 4 slots on $PARTS_Q (built-in sum_squares), and the collector on $COLLECT_Q"
start_worker parts --queue="$PARTS_Q" --concurrency=4
# collect.py reads the GroupResults JSON on stdin and prints the total.
start_worker collector --queue="$COLLECT_Q" --exec collect="python3 $HERE/collect.py"

step "Fan out: 8 parts as one group, with a callback on $COLLECT_Q"
group=$(seq 1000 1000 8000 | conveyor group submit --queue "$PARTS_Q" --type sum_squares \
  --callback-queue "$COLLECT_Q" --callback-type collect --callback-payload "squares")
echo "group id: $group"
conveyor group watch "$group" --deadline 30s | tail -n 1

step "Fan in: the callback ran once every member had ended"
callback=$(conveyor group get "$group" -o json | json callback_task_id)
[[ -n $callback ]] || fail "the group has no callback task"
conveyor watch "$callback" >/dev/null || fail "the callback $callback did not succeed"
result=$(conveyor get "$callback" | sed -n 's/^result: //p')
echo "callback $callback: $result"

# The sum of n(n-1)(2n-1)/6 for n = 1000 ... 8000.
expected=0
for n in $(seq 1000 1000 8000); do expected=$((expected + (n - 1) * n * (2 * n - 1) / 6)); done
[[ $result == "squares: 8 of 8 parts, sum $expected" ]] || fail "unexpected callback result '$result'"
echo "OK: 8 parts fanned out, one callback fanned their results in"
