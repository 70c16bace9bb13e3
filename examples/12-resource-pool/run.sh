#!/usr/bin/env bash
# Resource pool: at most 2 tasks that use the database run at once, across
# all workers, however many slots are free; tasks that do not need it are not
# held back.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=reports-$RUN_ID

step "Queue $QUEUE with a pool: at most 2 tasks holding concurrency key 'db' run at once"
# Paused while we submit, so that every task is there when the pool opens.
conveyor queue create "$QUEUE" --pool db=2 --paused >/dev/null
conveyor queue get "$QUEUE" | grep -E '^pools?:'

step "One worker with 8 slots; its handler query.sh takes 500ms"
start_worker pool --queue="$QUEUE" --concurrency=8 \
  --exec query="$HERE/query.sh $WORK/events"

step "6 tasks with --concurrency-key db, and 2 without a key"
for _ in $(seq 6); do conveyor submit --queue "$QUEUE" --type query --concurrency-key db db >/dev/null; done
for _ in 1 2; do conveyor submit --queue "$QUEUE" --type query other >/dev/null; done
conveyor queue resume "$QUEUE" >/dev/null
sleep 0.3
echo "meanwhile: $(conveyor queue get "$QUEUE" | grep -E '^(running|blocked):' | paste -sd' ')"
all_done() { [[ $(count "$QUEUE" succeeded) -eq 8 ]]; }
wait_for 20 all_done || fail "not every task succeeded"

# The most db tasks running at once: walk the start (+1) and end (-1) events in time order.
peak=$(sort -n "$WORK/events" | awk '$3 == "db" { n += $2; if (n > max) max = n } END { print max + 0 }')
echo "at most $peak 'db' tasks ran at once, with 8 slots free"
((peak == 2)) || fail "$peak db tasks ran at once; the pool allows 2"
# The 'other' tasks did not wait behind the db tasks: both started before any db task ended.
read -r other_started db_ended < <(awk '$2 == "+1" && $3 == "other" && $1 > s { s = $1 }
  $2 == "-1" && $3 == "db" && (e == "" || $1 < e) { e = $1 } END { print s, e }' "$WORK/events")
awk "BEGIN { exit !($other_started < $db_ended) }" ||
  fail "the tasks without a key waited behind the db tasks"
echo "OK: the pool held the db tasks to 2 at a time; the others were not held back"
