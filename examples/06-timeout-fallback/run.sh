#!/usr/bin/env bash
# Timeout with fallback: each attempt is bounded by a timeout; a task whose
# attempts run out ends FALLBACK with a fallback result (a success) instead of
# DEAD, so the caller always gets an answer in bounded time.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=quotes-$RUN_ID

step "A worker whose 'quote' handler is fast, except for items named slow-* (30 s)"
start_worker quotes --queue="$QUEUE" --concurrency=4 \
  --exec quote='read -r item; case $item in slow-*) sleep 30 ;; esac; echo "live quote for $item"'

step "3 lookups, 500ms timeout, one attempt each, fallback result 'cached quote'"
start=$(now)
printf '%s\n' acme slow-globex initech |
  conveyor map --queue "$QUEUE" --type quote --task-timeout 500ms --max-attempts 1 \
    --fallback "cached quote" -o json >"$WORK/out.jsonl" 2>/dev/null ||
  fail "conveyor map failed; a FALLBACK item counts as a success"
elapsed=$(awk "BEGIN { printf \"%.1f\", $(now) - $start }")
python3 - "$WORK/out.jsonl" <<'PY'
import base64, json, sys
for line in open(sys.argv[1]):
    item = json.loads(line)
    result = base64.b64decode(item["result"]).decode().strip()
    print(f'item {item["index"]}: {item["state"].removeprefix("TASK_STATE_"):9} "{result}"'
          + (f' (error: {item["error"]})' if item["error"] else ""))
PY
echo "all three answered after ${elapsed}s"

step "The fallen-back task keeps why it fell back"
fallback_id=$(conveyor list --queue "$QUEUE" --state fallback | awk 'NR == 2 { print $1 }')
conveyor get "$fallback_id" | grep -E '^(state|attempts|timeout|result|error):'

states=$(python3 -c 'import json, sys; print(" ".join(json.loads(l)["state"][11:] for l in sys.stdin))' \
  <"$WORK/out.jsonl")
[[ $states == "SUCCEEDED FALLBACK SUCCEEDED" ]] || fail "unexpected states: $states"
grep -q "$(printf 'cached quote' | base64)" "$WORK/out.jsonl" || fail "no fallback result"
awk "BEGIN { exit !($elapsed < 15) }" || fail "took ${elapsed}s: the timeout did not cut the slow call"
echo "OK: the slow call was cut at its timeout and answered with the fallback"
