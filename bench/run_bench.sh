#!/usr/bin/env bash
# run_bench.sh -- Conveyor on the peers' fixed workload (../shared/peers/WORKLOAD.md), in the
# pattern of the peers' run.sh / run_all.sh, so both tabulate with the same lib/stats.py.
#
#   bench/run_bench.sh [REPS] [REGEX]     the plan REPS times (default 3; repetition loop outermost),
#                                         RESULT lines in $OUT/raw-STAMP.log, tables in
#                                         $OUT/summary-STAMP.md (median (min–max) per variant)
#   bench/run_bench.sh one VARIANT WL     one measurement: a fresh conveyord on 127.0.0.1:0 with a
#                                         fresh --data-dir, conveyor-bench WL, broker stopped by PID
#
# VARIANT  conveyor         --fsync=always,      the client library (an idempotency key per task)
#          conveyor-i50     --fsync=interval:50, the client library
#          conveyor-stub    --fsync=always,      the generated stub, no idempotency key
#          conveyor-i50-stub --fsync=interval:50, the generated stub
#          conveyor-s       --fsync=always,      the client library's SubmitStream (W1u, W3: one
#                           stream call, each task awaited before the next is sent)
#          conveyor-i50-s   --fsync=interval:50, the same
#          conveyor-p0      --fsync=always, the client library, W2 workers without prefetch
#                           (--worker-args=--prefetch=0; the others use conveyor-bench's
#                           W2 default, --prefetch=1000 --log-level=warning)
# WL       W1u W1b W2 W3 MEM, and PING (awaited no-op unary calls: the gRPC floor here; not a
#          peer workload)  (see bench/conveyor_bench.cc)
#
# Environment:
#   BUILD_DIR   build tree with server/conveyord, worker/conveyor-worker, bench/conveyor-bench
#   BROKER_ARGS, WORKER_BIN  (one) more conveyord flags; another conveyor-worker binary (A/B runs)
#   BENCH_ARGS  (one) more conveyor-bench flags, e.g. --window=64 with conveyor-s W1u
#               (default build; RelWithDebInfo or Release)
#   OUT         results directory (default bench/results)
#   PEERS=1     also run the peers installed here, from a copy of ../shared/peers in $PEERS_DIR
#               (default /tmp/peers-conveyor): limits RTT/RTT1CPU, and beanstalkd W1u W1b W2 W3 MEM
#   QUIET_MAX   seconds to wait before each run for a quiet machine (>= 90 % idle for 5 s;
#               default 900, as run_all.sh); after that the run goes ahead, flagged in the log
#   PB_N, PB_MEM_N  task counts (default 100000 and 1000000), for smoke runs only
#
# Every run records foreign_cpu_pct (CPU used by other processes during it, % of one core, as
# run_all.sh computes it) and load1 (1-minute load average when it started); stats.py drops runs
# with foreign_cpu_pct > 10 from the table unless every run of a pair was flagged (then marked †).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
OUT=${OUT:-$HERE/results}
PEERS_SRC=$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)
PEERS_DIR=${PEERS_DIR:-/tmp/peers-conveyor}
STATS=$PEERS_SRC/lib/stats.py
N=${PB_N:-100000} MEM_N=${PB_MEM_N:-1000000}
PY=/usr/bin/python3

variant_flags() {  # VARIANT -> "FSYNC CLIENT SUBMIT [WORKER_ARGS]"
  case $1 in
    conveyor) echo "always lib call" ;;
    conveyor-i50) echo "interval:50 lib call" ;;
    conveyor-s) echo "always lib stream" ;;
    conveyor-i50-s) echo "interval:50 lib stream" ;;
    conveyor-stub) echo "always stub call" ;;
    conveyor-i50-stub) echo "interval:50 stub call" ;;
    conveyor-p0) echo "always lib call --prefetch=0" ;;
    *) echo "unknown variant $1" >&2; return 2 ;;
  esac
}

# ───────────────────────────── one measurement ─────────────────────────────
if [ "${1:-}" = one ]; then
  VARIANT=${2:?variant} WL=${3:?workload}
  read -r FSYNC CLIENT SUBMIT WORKER_ARGS < <(variant_flags "$VARIANT") || exit 2
  for b in server/conveyord worker/conveyor-worker bench/conveyor-bench; do
    [ -x "$BUILD_DIR/$b" ] || { echo "missing $BUILD_DIR/$b (ninja -C $BUILD_DIR conveyor-bench)" >&2; exit 2; }
  done
  WORK=$(mktemp -d /tmp/conveyor-bench.XXXXXX)
  SERVER_PID=
  gone() { [ ! -e /proc/$1 ] || [ "$(awk '{print $3}' /proc/$1/stat 2>/dev/null)" = Z ]; }
  stop_pid() {  # TERM, up to 30 s, then KILL; only the process we started
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 300); do gone "$1" && break; sleep 0.1; done
    gone "$1" || kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  }
  cleanup() { [ -z "$SERVER_PID" ] || stop_pid "$SERVER_PID"; rm -rf "$WORK"; }
  trap cleanup EXIT
  trap 'exit 143' TERM INT
  "$BUILD_DIR/server/conveyord" --listen=127.0.0.1:0 --port-file="$WORK/port" --metrics-addr= \
    --data-dir="$WORK/data" --fsync="$FSYNC" ${BROKER_ARGS:-} 2>"$WORK/conveyord.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do [ -s "$WORK/port" ] && break; gone $SERVER_PID && break; sleep 0.1; done
  [ -s "$WORK/port" ] || { echo "conveyord did not start:" >&2; cat "$WORK/conveyord.log" >&2; exit 1; }
  PORT=$(cat "$WORK/port")
  case $WL in MEM) n=$MEM_N ;; W3) n=0 ;; PING) n=${PB_PING_N:-20000} ;; *) n=$N ;; esac
  timeout 900 "$BUILD_DIR/bench/conveyor-bench" "$WL" --addr="127.0.0.1:$PORT" --broker-pid=$SERVER_PID \
    --label="$VARIANT" --client="$CLIENT" --submit="$SUBMIT" --n=$n --work-dir="$WORK" --data-dir="$WORK/data" \
    --raw="$WORK/lat.txt" --timeout=600 ${WORKER_ARGS:+--worker-args="$WORKER_ARGS"} \
    ${WORKER_BIN:+--worker="$WORKER_BIN"} ${BENCH_ARGS:-}
  rc=$?
  [ $rc = 0 ] || { echo "conveyor-bench $WL exited $rc; broker log:" >&2; tail -5 "$WORK/conveyord.log" >&2; }
  exit $rc
fi

# ───────────────────────────── the plan ─────────────────────────────
REPS=${1:-3} FILTER=${2:-.}
PLAN="conveyor:PING conveyor:W1u conveyor:W1b conveyor:W2 conveyor:W3 conveyor:MEM
conveyor-i50:W1u conveyor-i50:W1b conveyor-i50:W2 conveyor-i50:W3
conveyor-s:W1u conveyor-s:W3 conveyor-i50-s:W1u conveyor-i50-s:W3
conveyor-stub:W1u conveyor-stub:W1b conveyor-stub:MEM
conveyor-i50-stub:W1u conveyor-p0:W2"
if [ "${PEERS:-0}" = 1 ]; then
  if [ ! -d "$PEERS_DIR" ]; then cp -r "$PEERS_SRC" "$PEERS_DIR" && chmod -R u+w "$PEERS_DIR"; fi
  mkdir -p "$PEERS_DIR/results"
  PLAN="limits:RTT limits:RTT1CPU
$PLAN"
  if command -v beanstalkd >/dev/null; then
    PLAN="$PLAN
beanstalkd:W1u beanstalkd:W1b beanstalkd:W2 beanstalkd:W3 beanstalkd:MEM"
  else
    echo "run_bench.sh: beanstalkd is not installed, so this sitting has no peer figures" \
      "(apt-get install -y beanstalkd)" >&2
  fi
fi
mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S); LOG=$OUT/raw-$STAMP.log; TF=$(mktemp /tmp/conveyor-bench-time.XXXXXX)
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # machine user+nice+system+irq+softirq ticks
quiet_wait() {  # >= 90 % idle for 5 s in a row, at most QUIET_MAX s
  local ok=0 b
  for _ in $(seq "${QUIET_MAX:-900}"); do
    b=$(busy); sleep 1
    if [ $(( $(busy) - b )) -le $(( $(getconf CLK_TCK) * $(nproc) / 10 )) ]; then
      ok=$((ok + 1)); [ $ok -ge 5 ] && return 0
    else ok=0; fi
  done
  return 1
}
{ echo "# $(date -Is) $(uname -r) nproc=$(nproc) reps=$REPS build=$BUILD_DIR $(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" 2>/dev/null)"
  echo "# git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet -- server worker client common proto 2>/dev/null || echo ' (server/worker/client/common/proto have uncommitted changes)'); binaries built $(date -r "$BUILD_DIR/server/conveyord" -Is) / $(date -r "$BUILD_DIR/worker/conveyor-worker" -Is)"
  echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); uptime:$(uptime)"
  command -v beanstalkd >/dev/null && [ "${PEERS:-0}" = 1 ] && echo "# $(beanstalkd -v)"
} | tee "$LOG"
for r in $(seq "$REPS"); do
  for pw in $(echo "$PLAN" | grep -oE '\S+' | grep -E "$FILTER"); do
    peer=${pw%%:*} wl=${pw##*:}
    quiet_wait || echo "# machine not quiet after ${QUIET_MAX:-900} s; running $pw anyway (load:$(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$LOG"
    load1=$(cut -d' ' -f1 /proc/loadavg)
    case $peer in
      conveyor*) cmd=("$HERE/run_bench.sh" one "$peer" "$wl") ;;
      *) cmd=("$PEERS_DIR/run.sh" "$peer" "$wl") ;;
    esac
    b0=$(busy); t0=$(date +%s%N)
    line=$(/usr/bin/time -o "$TF" -f '%U %S' timeout 1200 "${cmd[@]}" 2>>"$LOG.err") \
      || line="FAILED $peer $wl rep=$r"
    fp=$(awk -v d=$(( $(busy) - b0 )) -v hz="$(getconf CLK_TCK)" -v w=$(( $(date +%s%N) - t0 )) \
         '{printf "%.0f", 100 * (d / hz - $1 - $2) / (w / 1e9)}' "$TF")
    echo "$line ts=$(date +%H:%M:%S) load1=$load1 foreign_cpu_pct=$fp" | tee -a "$LOG"
  done
done
rm -f "$TF"
ALL=$(mktemp /tmp/conveyor-bench-all.XXXXXX)
sed 's/ foreign_cpu_pct=/ foreign_cpu=/' "$LOG" >"$ALL"  # every run, contended ones included
{ echo "Raw log: $(basename "$LOG")"; echo
  echo "## Every metric, every run (median min–max)"; echo
  $PY "$STATS" agg "$ALL"; echo
  echo "## Runs with foreign_cpu_pct <= 10 (as peers/RESULTS.md; † = all runs of the pair contended)"; echo
  $PY "$STATS" table "$LOG"; echo
  echo "## Every run, contended ones included"; echo
  $PY "$STATS" table "$ALL"; } > "$OUT/summary-$STAMP.md"
rm -f "$ALL"
cat "$OUT/summary-$STAMP.md"
