#!/usr/bin/env bash
# profile_bench.sh WL [VARIANT] -- one conveyor-bench workload with `perf record` attached to the
# broker (and, for W2/W3, the conveyor-worker processes; for W1u/W1b, the producer too), then
# per-process `perf report` summaries. Not a measurement: perf costs CPU; use run_bench.sh for figures.
#
#   bench/profile_bench.sh W2                 # --fsync=always, client library
#   bench/profile_bench.sh W1u conveyor-i50
#
# Environment: BUILD_DIR (default build), OUT (default bench/results/profile-STAMP), PB_N (tasks,
# default 100000 for W2, 30000 for W1u), FREQ (sampling Hz, default 999), CALLGRAPH (perf
# --call-graph mode, default dwarf,16384: the Debian gRPC/protobuf/absl libraries have no frame
# pointers), BENCH_ARGS (more conveyor-bench flags, e.g. --depth=10000000 for W2).
# Writes OUT/perf-WL-<pid>.data (one perf session per process), OUT/bench-WL.out and
# OUT/report-WL-<process>.txt (self time by symbol, by shared object, by thread; inclusive time).
# Sampling stops when the workload's timed part is over (W2/W3 then read every task back).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WL=${1:?workload} VARIANT=${2:-conveyor}
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
OUT=${OUT:-$HERE/results/profile-$(date +%Y%m%d-%H%M%S)}
FREQ=${FREQ:-999} CALLGRAPH=${CALLGRAPH:-dwarf,16384}
case $VARIANT in
  conveyor) FSYNC=always CLIENT=lib ;; conveyor-i50) FSYNC=interval:50 CLIENT=lib ;;
  conveyor-stub) FSYNC=always CLIENT=stub ;; conveyor-i50-stub) FSYNC=interval:50 CLIENT=stub ;;
  *) echo "unknown variant $VARIANT" >&2; exit 2 ;;
esac
case $WL in W2) N=${PB_N:-100000} ;; W1u) N=${PB_N:-30000} ;; *) N=${PB_N:-100000} ;; esac
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/conveyor-profile.XXXXXX)
SERVER_PID= BENCH_PID= PERF_PIDS=
gone() { [ ! -e /proc/$1 ] || [ "$(awk '{print $3}' /proc/$1/stat 2>/dev/null)" = Z ]; }
stop_pid() {  # $1 pid, $2 signal: only processes this script started
  kill -"${2:-TERM}" "$1" 2>/dev/null || return 0
  for _ in $(seq 600); do gone "$1" && break; sleep 0.1; done
  gone "$1" || kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  for p in ${PERF_PIDS:-}; do stop_pid "$p" INT; done
  [ -z "$BENCH_PID" ] || stop_pid "$BENCH_PID" TERM
  [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID" TERM
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

"$BUILD_DIR/server/conveyord" --listen=127.0.0.1:0 --port-file="$WORK/port" --metrics-addr= \
  --data-dir="$WORK/data" --fsync="$FSYNC" 2>"$WORK/conveyord.log" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || { echo "conveyord did not start" >&2; exit 1; }
# No `timeout` wrapper: perf must attach to the bench itself (its --timeout bounds it).
"$BUILD_DIR/bench/conveyor-bench" "$WL" --addr="127.0.0.1:$(cat "$WORK/port")" \
  --broker-pid=$SERVER_PID --label="$VARIANT" --client=$CLIENT --n=$N --work-dir="$WORK" \
  --data-dir="$WORK/data" --timeout=600 ${BENCH_ARGS:-} >"$OUT/bench-$WL.out" \
  2>"$WORK/bench.err" &
BENCH_PID=$! BPID=$!

# Whom to sample: the broker; the workers once spawned (W2 spawns them after its untimed fill, so
# attaching then leaves the fill out); the producer for W1.
PIDS=$SERVER_PID
case $WL in
  W2|W3)
    for _ in $(seq 60000); do grep -q "workers pid=" "$WORK/bench.err" 2>/dev/null && break
      gone $BENCH_PID && break; sleep 0.01; done
    WPIDS=$(grep -o "workers pid=[0-9,]*" "$WORK/bench.err" | cut -d= -f2)
    [ -n "$WPIDS" ] && PIDS="$PIDS,$WPIDS" ;;
  W1u|W1b) PIDS="$PIDS,$BENCH_PID" ;;
esac
# One perf session per process, so each report is that process alone.
PERF_PIDS=
for pid in ${PIDS//,/ }; do
  perf record -F "$FREQ" --call-graph "$CALLGRAPH" -p "$pid" -o "$OUT/perf-$WL-$pid.data" \
    2>>"$WORK/perf.err" >/dev/null &
  PERF_PIDS="$PERF_PIDS $!"
done
# Until the workload's timed part is over (W2/W3 then read every task back: not profiled).
while ! gone $BENCH_PID && ! grep -q "timed part over" "$WORK/bench.err" 2>/dev/null; do sleep 0.05; done
for p in $PERF_PIDS; do kill -INT "$p" 2>/dev/null; done
for p in $PERF_PIDS; do wait "$p" 2>/dev/null; done
wait $BENCH_PID; rc=$?; BENCH_PID=
cat "$WORK/bench.err" >&2
cat "$OUT/bench-$WL.out"
echo "pids sampled: $PIDS (broker $SERVER_PID)" | tee "$OUT/pids-$WL.txt"

for pid in ${PIDS//,/ }; do
  case $pid in $SERVER_PID) name=conveyord ;; $BPID) name=bench ;; *) name=worker-$pid ;; esac
  d=$OUT/perf-$WL-$pid.data r=$OUT/report-$WL-$name.txt
  { echo "## $name (pid $pid): self time by symbol"
    perf report -i "$d" --no-children --sort sym --stdio --percent-limit 0.5 -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$'
    echo; echo "## $name: by shared object"
    perf report -i "$d" --no-children --sort dso --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -20
    echo; echo "## $name: by thread"
    perf report -i "$d" --no-children --sort comm --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -20
    echo; echo "## $name: inclusive (children) by symbol, top 80"
    perf report -i "$d" --children --sort sym --stdio -g none 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -80
  } >"$r"
  echo "wrote $r"
done
exit $rc
