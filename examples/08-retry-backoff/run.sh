#!/usr/bin/env bash
# Retry with backoff: a failed attempt is retried by the broker after a delay
# that grows each time (initial * multiplier^(n-1)), up to --max-attempts.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=flaky-$RUN_ID

step "Queue $QUEUE: 5 attempts, backoff 500ms then x2 each retry (no jitter, to show it exactly)"
conveyor queue create "$QUEUE" --max-attempts 5 --initial-backoff 500ms --multiplier 2 \
  --jitter 0 >/dev/null

step "A worker whose handler flaky.sh fails until its 3rd attempt"
start_worker flaky --queue="$QUEUE" --exec flaky="$HERE/flaky.sh $WORK/attempts"

step "Submit and wait for the result"
conveyor submit --queue "$QUEUE" --type flaky --wait "" || fail "the task did not succeed"
# FAILURES counts the attempts that failed: 2 of the 5 allowed (the 3rd succeeded).
conveyor list --queue "$QUEUE"

step "When each attempt ran"
awk 'NR == 1 { first = $2 } { printf "attempt %d at +%.2fs", $1, $2 - first }
     NR > 1 { printf " (backoff %.2fs)", $2 - prev } { print ""; prev = $2 }' "$WORK/attempts"

[[ $(wc -l <"$WORK/attempts") -eq 3 ]] || fail "expected exactly 3 attempts"
read -r gap1 gap2 < <(awk 'NR > 1 { printf "%s ", $2 - prev } { prev = $2 } END { print "" }' \
  "$WORK/attempts")
awk "BEGIN { exit !($gap1 >= 0.45 && $gap2 >= 0.95 && $gap2 > 1.5 * $gap1) }" ||
  fail "the backoffs ${gap1}s and ${gap2}s are not 500ms then 1s"
echo "OK: two retries, after about 0.5 s and 1 s, and the third attempt succeeded"
