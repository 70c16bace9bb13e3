#!/usr/bin/env bash
# The handler of 05-worker-pool (conveyor-worker --exec): payload a whole
# number n on stdin, result n*n on stdout. Anything else is an error no retry
# can fix: the message on stderr, exit 65 (the task ends DEAD at once).
read -r n || true
sleep 0.2 # the work
if [[ ! $n =~ ^[0-9]+$ ]]; then
  echo "not a number: '$n'" >&2
  exit 65
fi
echo $((n * n))
