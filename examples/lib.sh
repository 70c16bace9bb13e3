# shellcheck shell=bash
# examples/lib.sh: what every examples/*/run.sh shares. Sourced, never run.
#
#   - The broker: $CONVEYOR_ADDR (default 127.0.0.1:7400); it must be running.
#   - The binaries: from $CONVEYOR_BIN_DIR (one directory holding conveyor,
#     conveyor-worker and the example programs, e.g. /usr/local/bin) or else
#     from a CMake build tree, $CONVEYOR_BUILD_DIR (default: the repo's build/).
#   - `conveyor` and `conveyor-worker` are shell functions running those
#     binaries, so the examples read like the commands you would type (each
#     `conveyor` call is bounded by 60 s).
#   - start_worker runs a worker in the background (metrics on a free port,
#     its log in $WORK); every worker still running is stopped on exit.
#   - step prints a heading; `fail MESSAGE` ends the example (exit 1) with a
#     clear message and the workers' last log lines when the pattern did not
#     behave.
set -euo pipefail

EXAMPLES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The example's own directory (where its handler scripts are) and name.
HERE=$(cd "$(dirname "$0")" && pwd)
EXAMPLE=$(basename "$HERE")
export CONVEYOR_ADDR=${CONVEYOR_ADDR:-127.0.0.1:7400}
# Queue names get this suffix, so repeated runs never share a queue.
RUN_ID=$$

fail() {
  echo "FAIL [$EXAMPLE]: $*" >&2
  for log in "$WORK"/*.log; do
    [[ -e $log ]] || continue
    echo "--- last lines of $(basename "$log"):" >&2
    tail -n 5 "$log" >&2
  done
  exit 1
}

step() { printf '\n== %s\n' "$*"; }

# find_bin NAME SUBDIR: the path of a binary (SUBDIR: where a build tree has it).
find_bin() {
  local path
  if [[ -n ${CONVEYOR_BIN_DIR:-} ]]; then
    path=$CONVEYOR_BIN_DIR/$1
  else
    path=${CONVEYOR_BUILD_DIR:-$EXAMPLES_DIR/../build}/$2/$1
  fi
  [[ -x $path ]] || {
    echo "FAIL [$EXAMPLE]: $path not found: build it (scripts/build $1), or set" \
      "CONVEYOR_BIN_DIR or CONVEYOR_BUILD_DIR" >&2
    exit 1
  }
  echo "$path"
}

CONVEYOR_CLI=$(find_bin conveyor client)
CONVEYOR_WORKER=$(find_bin conveyor-worker worker)
# Bounded, so that an example never hangs (watch and submit --wait have no
# deadline of their own): exit 124 after 60 s.
conveyor() { timeout --foreground 60 "$CONVEYOR_CLI" "$@"; }
conveyor-worker() { "$CONVEYOR_WORKER" "$@"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-$EXAMPLE.XXXXXX")
WORKER_PIDS=()

# start_worker NAME [FLAGS...]: conveyor-worker in the background, logging to
# $WORK/NAME.log; sets WORKER_PID.
start_worker() {
  local name=$1
  shift
  # The binary itself, not the shell function: $! must be the worker's pid.
  "$CONVEYOR_WORKER" --metrics-addr=127.0.0.1:0 "$@" 2>"$WORK/$name.log" &
  WORKER_PID=$!
  WORKER_PIDS+=("$WORKER_PID")
}

# start_program NAME BINARY [FLAGS...]: like start_worker, for an example
# program (an SDK worker).
start_program() {
  local name=$1 binary=$2
  shift 2
  "$binary" "$@" 2>"$WORK/$name.log" &
  WORKER_PID=$!
  WORKER_PIDS+=("$WORKER_PID")
}

# stop_worker PID: SIGTERM (the worker drains), wait for it at most 30 s;
# returns its exit status.
stop_worker() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

# On exit: stop every worker still running (SIGTERM; SIGKILL for one still
# draining after 5 s), and remove $WORK.
cleanup() {
  local pid i
  for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for pid in "${WORKER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${WORKER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# A command that fails unexpectedly (set -e) says which one it was.
set -E
trap 'fail "line $LINENO: exit status $?: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# wait_for SECONDS COMMAND...: run COMMAND (a program or a shell function)
# every 0.1 s until it succeeds; fails after SECONDS.
wait_for() {
  local seconds=$1 i
  shift
  for ((i = 0; i < seconds * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# count QUEUE STATE...: how many of the queue's tasks are in these states
# (the counts `conveyor queue get` prints: scheduled, ready, running,
# succeeded, dead, canceled, expired, fallback), summed.
count() {
  local queue=$1
  shift
  conveyor queue get "$queue" | awk -v states=" $* " '
    { key = $1; sub(/:$/, "", key) }
    index(states, " " key " ") { n += $2 }
    END { print n + 0 }'
}

# json FIELD.PATH: read one JSON document on stdin, print the field (a path
# of keys and list indexes, e.g. stats.ready or members.0.state).
json() {
  python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value.get(key, "")
print(value if not isinstance(value, (dict, list)) else json.dumps(value))
' "$1"
}

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }

conveyor health >/dev/null 2>&1 || {
  echo "FAIL [$EXAMPLE]: no broker answers at $CONVEYOR_ADDR; start one:" \
    "build/server/conveyord --listen=$CONVEYOR_ADDR (or set CONVEYOR_ADDR)" >&2
  exit 1
}
