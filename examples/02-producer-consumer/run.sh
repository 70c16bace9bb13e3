#!/usr/bin/env bash
# Producer-consumer over a bounded queue: a fast producer, a slow consumer, and
# a queue of capacity 5 with --full-policy wait, so the producer is held back
# (each submit waits for room) instead of the queue growing without bound.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=jobs-$RUN_ID
CAPACITY=5 TASKS=20

step "A bounded queue: at most $CAPACITY unfinished tasks; a submit to a full queue waits"
conveyor queue create "$QUEUE" --capacity "$CAPACITY" --full-policy wait >/dev/null

step "The consumer: one worker, one slot; each task sleeps 200ms (5 tasks/s)"
start_worker consumer --queue="$QUEUE" --concurrency=1

step "The producer: $TASKS submits as fast as it can, in the background"
start=$(now)
(for _ in $(seq "$TASKS"); do conveyor submit --queue "$QUEUE" --type sleep 200ms >/dev/null; done) &
producer=$!

# Meanwhile, sample the queue's unfinished tasks (scheduled + ready + running).
max=0 samples=0
while kill -0 "$producer" 2>/dev/null && ((samples < 500)); do
  unfinished=$(count "$QUEUE" scheduled ready running)
  ((unfinished > max)) && max=$unfinished
  samples=$((samples + 1))
done
wait "$producer" || fail "a submit failed"
consumed=$(count "$QUEUE" succeeded)
echo "the producer finished after $(awk "BEGIN { printf \"%.1f\", $(now) - $start }")s," \
  "when $consumed tasks were already consumed"
echo "the queue held at most $max unfinished tasks ($samples samples)"

step "The consumer catches up"
all_consumed() { [[ $(count "$QUEUE" succeeded) -eq $TASKS ]]; }
wait_for 20 all_consumed || fail "only $(count "$QUEUE" succeeded) of $TASKS tasks succeeded"
conveyor queue get "$QUEUE" | grep -E '^(capacity|ready|running|succeeded):'

((max <= CAPACITY)) || fail "the queue held $max unfinished tasks, over its capacity $CAPACITY"
((max >= CAPACITY - 1)) || fail "the queue never filled up (at most $max): nothing held the producer back"
# A queue of capacity C lets the producer run at most C tasks ahead.
((consumed >= TASKS - CAPACITY)) ||
  fail "the producer finished with only $consumed tasks consumed: it ran more than $CAPACITY ahead"
echo "OK: the producer waited for room; the queue never exceeded its capacity of $CAPACITY"
