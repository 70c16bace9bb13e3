#!/usr/bin/env bash
# Parallel map: one task per input item, run by a pool of workers, results
# back in input order, with `conveyor map` and with Client::Map (map_squares.cc).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=squares-$RUN_ID

step "Two workers, 4 slots each, serve $QUEUE (built-in handler sum_squares: 0² + ... + (n-1)²)"
start_worker w1 --queue="$QUEUE" --concurrency=4
start_worker w2 --queue="$QUEUE" --concurrency=4

step "conveyor map: 12 items, one per line, submitted as one group"
seq 1000 1000 12000 >"$WORK/items.txt"
conveyor map --queue "$QUEUE" --type sum_squares --input "$WORK/items.txt" >"$WORK/results.txt"
paste "$WORK/items.txt" "$WORK/results.txt" | head -n 4
echo "... ($(wc -l <"$WORK/results.txt") results, in input order)"

# Check each result against n(n-1)(2n-1)/6.
[[ $(wc -l <"$WORK/results.txt") -eq 12 ]] || fail "expected 12 results"
while read -r n result; do
  [[ $result == $(((n - 1) * n * (2 * n - 1) / 6)) ]] || fail "item $n: wrong result '$result'"
done < <(paste "$WORK/items.txt" "$WORK/results.txt")

step "The same map from C++: Client::Map (examples/01-parallel-map/map_squares.cc)"
MAP_SQUARES=$(find_bin map_squares examples)
"$MAP_SQUARES" --broker="$CONVEYOR_ADDR" --queue="$QUEUE" --count=8 | tee "$WORK/cpp.txt"
[[ $(tail -n 1 "$WORK/cpp.txt") == "8 items: 8 succeeded, 0 failed" ]] ||
  fail "map_squares did not report 8 successes"

echo "OK: both maps returned every result in input order"
