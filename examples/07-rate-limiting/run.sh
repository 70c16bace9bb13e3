#!/usr/bin/env bash
# Rate limiting: the broker starts at most 5 tasks a second from the queue,
# across every worker, however many slots are free (here 2 workers x 8 slots).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=api-$RUN_ID TASKS=20

step "Queue $QUEUE with --rate 5/s (a token bucket, burst 1)"
conveyor queue create "$QUEUE" --rate 5/s >/dev/null
conveyor queue get "$QUEUE" | grep '^rate:'

step "Two workers, 8 slots each; the handler 'call' writes down when it started"
for w in w1 w2; do
  start_worker "$w" --queue="$QUEUE" --concurrency=8 --exec call="date +%s.%N >>$WORK/starts"
done

step "$TASKS calls at once: the broker spreads them out"
start=$(now)
seq "$TASKS" | conveyor map --queue "$QUEUE" --type call >/dev/null 2>&1 &
map=$!
sleep 1
echo "after 1s: $(conveyor queue get "$QUEUE" | grep -E '^blocked:')"
wait "$map" || fail "the map failed"
elapsed=$(awk "BEGIN { printf \"%.1f\", $(now) - $start }")
# The start rate: starts after the first, over the time from the first to the last.
rate=$(sort -n "$WORK/starts" | awk 'NR == 1 { first = $1 } { last = $1 }
  END { printf "%.1f", (NR - 1) / (last - first) }')
echo "$TASKS tasks took ${elapsed}s: they started at $rate/s"

[[ $(wc -l <"$WORK/starts") -eq $TASKS ]] || fail "expected $TASKS starts"
# 5/s with a burst of 1: one at once, then one every 200ms: about 3.8 s.
awk "BEGIN { exit !($elapsed >= 3.0) }" || fail "$TASKS tasks took only ${elapsed}s at 5/s"
awk "BEGIN { exit !($rate <= 5.5) }" || fail "tasks started at $rate/s, over the rate of 5/s"
echo "OK: the queue's rate held, with 16 free slots"
