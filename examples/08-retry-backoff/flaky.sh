#!/usr/bin/env bash
# The handler of 08-retry-backoff (conveyor-worker --exec): a call that fails
# twice before it works. $CONVEYOR_ATTEMPT (set by the worker) counts attempts
# from 1; $1 is a file where each attempt writes down its number and time.
echo "$CONVEYOR_ATTEMPT $(date +%s.%N)" >>"$1"
if ((CONVEYOR_ATTEMPT < 3)); then
  echo "upstream unavailable (attempt $CONVEYOR_ATTEMPT)" >&2
  exit 1 # any exit but 0, 65 and 76: a retryable failure
fi
echo "done on attempt $CONVEYOR_ATTEMPT"
