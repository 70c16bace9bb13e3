#!/usr/bin/env bash
# Worker pool with per-task results and errors: many tasks spread over a pool
# of workers; each task's own result, or its own error, comes back.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=pool-$RUN_ID

step "A pool of two workers, 3 slots each; handler square.sh (n -> n*n, exit 65 if not a number)"
for w in w1 w2; do
  start_worker "$w" --queue="$QUEUE" --concurrency=3 --exec square="$HERE/square.sh"
done

step "12 tasks, two of them bad; conveyor map -o json gives one line per task, in order"
printf '%s\n' 1 2 3 seven 5 6 7 8 '' 10 11 12 >"$WORK/items.txt"
status=0
conveyor map --queue "$QUEUE" --type square --input "$WORK/items.txt" -o json \
  >"$WORK/out.jsonl" 2>/dev/null || status=$?
# Each line: index, task_id, state, result (base64) or error.
python3 - "$WORK/out.jsonl" <<'PY'
import base64, json, sys
for line in open(sys.argv[1]):
    item = json.loads(line)
    if item["state"] == "TASK_STATE_SUCCEEDED":
        outcome = "result " + base64.b64decode(item["result"]).decode().strip()
    else:
        outcome = item["state"].removeprefix("TASK_STATE_") + ", error: " + item["error"]
    print(f'item {item["index"]:>2} (task {item["task_id"]}): {outcome}')
PY
echo "tasks run by w1: $(grep -c '"task finished"' "$WORK/w1.log"), by w2: $(grep -c '"task finished"' "$WORK/w2.log")"

step "The failed tasks are dead letters, kept for inspection (and conveyor dead requeue)"
conveyor dead list "$QUEUE"

[[ $status -eq 1 ]] || fail "conveyor map exited $status, expected 1 (some items failed)"
[[ $(grep -c SUCCEEDED "$WORK/out.jsonl") -eq 10 ]] || fail "expected 10 items to succeed"
[[ $(grep -c "not a number" "$WORK/out.jsonl") -eq 2 ]] || fail "expected 2 'not a number' errors"
[[ $(count "$QUEUE" dead) -eq 2 ]] || fail "expected 2 dead letters"
echo "OK: 10 results and 2 errors, each reported with its own task"
