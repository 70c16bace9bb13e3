#!/usr/bin/env bash
# Producer-consumer over a bounded queue: a fast producer, a slow consumer, and
# a queue of capacity 5 with --full-policy wait, so the producer is held back
# (each submit waits for room) instead of the queue growing without bound. Then
# the same with a C++ producer on one SubmitStream (stream_producer.cc).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=jobs-$RUN_ID
CAPACITY=5 TASKS=20

# most_unfinished_while QUEUE PID: the most unfinished tasks (scheduled + ready
# + running) QUEUE held while PID ran, and how many samples were taken.
most_unfinished_while() {
  local most=0 samples=0 unfinished
  while kill -0 "$2" 2>/dev/null && ((samples < 500)); do
    unfinished=$(count "$1" scheduled ready running)
    ((unfinished > most)) && most=$unfinished
    samples=$((samples + 1))
  done
  echo "$most $samples"
}

step "A bounded queue: at most $CAPACITY unfinished tasks; a submit to a full queue waits"
conveyor queue create "$QUEUE" --capacity "$CAPACITY" --full-policy wait >/dev/null

step "The consumer: one worker, one slot; each task sleeps 200ms (5 tasks/s)"
start_worker consumer --queue="$QUEUE" --concurrency=1

step "The producer: $TASKS submits as fast as it can, in the background"
start=$(now)
(for _ in $(seq "$TASKS"); do conveyor submit --queue "$QUEUE" --type sleep 200ms >/dev/null; done) &
producer=$!

# Meanwhile, sample the queue's unfinished tasks (scheduled + ready + running).
read -r max samples < <(most_unfinished_while "$QUEUE" "$producer")
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

step "The same from C++: one SubmitStream, 4 tasks in flight (02-producer-consumer/stream_producer.cc)"
# Each task is acknowledged on its own once stored; a submit parked on the full
# queue is answered when the consumer makes room, and the producer never has
# more than 4 unanswered.
STREAMED=streamed-$RUN_ID
conveyor queue create "$STREAMED" --capacity "$CAPACITY" --full-policy wait >/dev/null
start_worker stream-consumer --queue="$STREAMED" --concurrency=1
STREAM_PRODUCER=$(find_bin stream_producer examples)
"$STREAM_PRODUCER" --broker="$CONVEYOR_ADDR" --queue="$STREAMED" --count="$TASKS" --window=4 \
  >"$WORK/stream.txt" &
producer=$!
read -r smax samples < <(most_unfinished_while "$STREAMED" "$producer")
wait "$producer" || fail "stream_producer failed: $(tail -n 3 "$WORK/stream.txt")"
streamed_consumed=$(count "$STREAMED" succeeded)
tail -n 1 "$WORK/stream.txt"
echo "when the last answer came, $streamed_consumed tasks were consumed; the queue held at most" \
  "$smax unfinished tasks"
[[ $(tail -n 1 "$WORK/stream.txt") == "sent $TASKS: $TASKS accepted, 0 refused" ]] ||
  fail "stream_producer did not get $TASKS acknowledgements"
[[ $(grep -c '^accepted ' "$WORK/stream.txt") -eq $TASKS ]] || fail "not one id per task"
((smax <= CAPACITY)) || fail "the streamed queue held $smax tasks, over its capacity $CAPACITY"
((streamed_consumed >= TASKS - CAPACITY)) ||
  fail "the stream finished with only $streamed_consumed consumed: it ran more than $CAPACITY ahead"
streamed_all() { [[ $(count "$STREAMED" succeeded) -eq $TASKS ]]; }
wait_for 20 streamed_all || fail "only $(count "$STREAMED" succeeded) of $TASKS streamed tasks succeeded"

echo "OK: the producer waited for room, by CLI and by stream; no queue exceeded its capacity of $CAPACITY"
