#!/usr/bin/env bash
# The handler of 09-progress (conveyor-worker --exec): a job in 4 steps that
# reports its progress with "PROGRESS <percent> <message>" lines on stderr;
# the worker sends them to the broker with its heartbeats.
steps=(fetch parse render upload)
for i in "${!steps[@]}"; do
  echo "PROGRESS $((i * 25)) ${steps[i]}" >&2
  sleep 0.4 # the work of this step
done
printf 'report ready' # the result (stdout)
