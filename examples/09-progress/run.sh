#!/usr/bin/env bash
# Progress tracking: a long task reports how far it got; anyone can follow it
# with `conveyor watch` (or read it with `conveyor get`) while it runs. Shown
# with a command (report.sh, PROGRESS lines on stderr) and with a C++ SDK
# handler (progress_worker.cc, ctx.ReportProgress).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
EXEC_Q=reports-exec-$RUN_ID SDK_Q=reports-sdk-$RUN_ID

step "Two workers, heartbeats every 200ms (they carry the progress):"
echo "conveyor-worker running report.sh on $EXEC_Q; progress_worker (C++ SDK) on $SDK_Q"
start_worker reports --queue="$EXEC_Q" --heartbeat-interval=200ms \
  --exec report="$HERE/report.sh"
start_program sdk "$(find_bin progress_worker examples)" --broker="$CONVEYOR_ADDR" --queue="$SDK_Q"

# follow QUEUE: submit a `report` task, watch it, check what watch showed.
follow() {
  local id seen
  id=$(conveyor submit --queue "$1" --type report "")
  conveyor watch "$id" | tee "$WORK/watch.txt" || fail "task $id did not succeed"
  conveyor get "$id" | grep -E '^(state|progress|result):'
  seen=$(grep -oE '[0-9]+% (fetch|parse|render|upload)' "$WORK/watch.txt" | sort -u | wc -l)
  ((seen >= 3)) || fail "watch showed only $seen of the 4 progress steps of task $id"
  [[ $(conveyor get "$id" | sed -n 's/^result: //p') == "report ready" ]] ||
    fail "task $id: wrong result"
}

step "report.sh: submit, then follow the task with conveyor watch (one line per change)"
follow "$EXEC_Q"

step "The same with the C++ SDK handler"
follow "$SDK_Q"

echo "OK: watch followed both tasks through their progress steps"
