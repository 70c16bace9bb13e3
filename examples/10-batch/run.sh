#!/usr/bin/env bash
# Batch processing: the worker gathers tasks of one type into batches and runs
# one handler call per batch (one bulk INSERT instead of one per row), while
# each task still gets its own result, retries and outcome.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
QUEUE=users-$RUN_ID

step "A worker with two batch handlers (up to 10 tasks a batch, waiting up to 200ms to fill one):"
echo "the built-in batch_echo (result: <batch size>:<payload>) and bulk_insert.py"
start_worker batcher --queue="$QUEUE" --concurrency=1 \
  --batch batch_echo=10:200ms --batch insert=10:200ms \
  --exec-batch insert="python3 $HERE/bulk_insert.py $WORK/inserts.sql"

step "batch_echo: 6 tasks (the number before : is the size of the batch each ran in)"
seq 6 | conveyor map --queue "$QUEUE" --type batch_echo 2>/dev/null | tee "$WORK/echo.txt" | paste -sd' '
grep -qE '^([2-9]|10):' "$WORK/echo.txt" || fail "no batch_echo task ran in a batch"

step "bulk_insert.py: 25 rows, 10 per batch"
for i in $(seq 25); do echo "user$i"; done >"$WORK/names.txt"
conveyor map --queue "$QUEUE" --type insert --input "$WORK/names.txt" 2>/dev/null |
  sort | uniq -c
echo "the statements it ran:"
cut -c1-100 "$WORK/inserts.sql"

statements=$(wc -l <"$WORK/inserts.sql")
rows=$(grep -o "('user[0-9]*')" "$WORK/inserts.sql" | sort -u | wc -l)
((rows == 25)) || fail "expected 25 distinct rows inserted, got $rows"
((statements <= 5)) || fail "$statements INSERTs for 25 rows: they did not run in batches"
echo "OK: 25 tasks, $statements batch calls"
