#!/usr/bin/env bash
# compaction_soak.sh: does disk use follow live state under long churn?
# Not part of the test suite; run by hand (bench/README.md, "Durability").
#
#   bench/compaction_soak.sh [TOTAL]          # default 10000000
#
# Starts conveyord with a data directory, creates the queue `churn` with a
# result TTL of 1 s and at most 10,000 retained ended tasks, and runs
# build/bench/churn_driver to submit and complete TOTAL tasks (64-byte
# payloads) while keeping about LIVE of them unfinished. Every SAMPLE_SECONDS
# it samples the data directory (apparent bytes as `du -sb`, allocated bytes
# as `du -sB1`). At the end it prints the maximum and final sizes, the
# latest snapshot (the size of the live state: live tasks plus the results
# still kept) and the bound the journal design promises:
#   bound = 2 x snapshot + snapshot_bytes + 2 x segment_bytes
# (a new snapshot is written before the old one and the segments it covers are
# deleted; writes go on meanwhile; one segment may be preallocated ahead),
# then restarts the broker once and times its recovery.
# Exit 0 if the driver finished, the broker exited 0 on SIGTERM, it came back,
# and the maximum allocated size stayed under SLACK x bound.
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]  LIVE [10000]  FSYNC [always]  SNAPSHOT_BYTES [0 = the
#   broker's automatic threshold: 2 x the last snapshot, at least 4 MiB]
#   SEGMENT_BYTES [8388608]  SAMPLE_SECONDS [1]  SLACK [1.5]
#   DATA_PARENT [${TMPDIR:-/tmp}]  KEEP [unset: remove the directory at the end]
set -euo pipefail

total="${1:-10000000}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
live="${LIVE:-10000}"
fsync="${FSYNC:-always}"
snapshot_bytes="${SNAPSHOT_BYTES:-0}"
segment_bytes="${SEGMENT_BYTES:-8388608}"
sample_seconds="${SAMPLE_SECONDS:-1}"
slack="${SLACK:-1.5}"
conveyord="$build/server/conveyord"
cli="$build/client/conveyor"
driver="$build/bench/churn_driver"
for b in "$conveyord" "$cli" "$driver"; do
  [[ -x "$b" ]] || { echo "missing $b: ninja -C $build conveyord conveyor churn_driver" >&2; exit 69; }
done

work="$(mktemp -d "${DATA_PARENT:-${TMPDIR:-/tmp}}/conveyor_compaction_soak.XXXXXX")"
data="$work/data"
broker_pid=""
sampler_pid=""
cleanup() {
  [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null || true
  [[ -n "$broker_pid" ]] && kill -KILL "$broker_pid" 2>/dev/null || true
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

# Starts the broker; sets broker_pid and addr. $1: extra log label.
start_broker() {
  rm -f "$work/port"
  echo "=== start $1 ===" >>"$work/conveyord.log"
  "$conveyord" --listen=127.0.0.1:0 --port-file="$work/port" --metrics-addr= \
    --data-dir="$data" --fsync="$fsync" --snapshot-bytes="$snapshot_bytes" \
    --segment-bytes="$segment_bytes" </dev/null >>"$work/conveyord.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 60000); do
    [[ -s "$work/port" ]] && break
    kill -0 "$broker_pid" 2>/dev/null || { echo "conveyord exited:"; tail -n 20 "$work/conveyord.log"; exit 1; }
    sleep 0.01
  done
  [[ -s "$work/port" ]] || { echo "conveyord wrote no port"; exit 1; }
  addr="127.0.0.1:$(cat "$work/port")"
}

stop_broker() {
  kill -TERM "$broker_pid"
  local rc=0
  wait "$broker_pid" || rc=$?
  broker_pid=""
  return $rc
}

snapshot_size() {
  local f
  f="$(ls -1 "$data"/snapshot-*.snap 2>/dev/null | tail -n 1 || true)"
  if [[ -n "$f" ]]; then stat -c %s "$f"; else echo 0; fi
}

echo "compaction soak: total=$total live=$live fsync=$fsync snapshot_bytes=$snapshot_bytes segment_bytes=$segment_bytes dir=$work"
start_broker first
"$cli" --addr="$addr" queue create churn --capacity 10000000 --result-ttl 1s --retained 10000 >/dev/null

# sample: milliseconds apparent_bytes allocated_bytes snapshot_bytes files
# (du still prints its total when files vanish under it, exiting 1.)
(
  set +e +o pipefail
  t0=$(date +%s%N)
  while true; do
    app=$(du -sb "$data" 2>/dev/null | cut -f1)
    alloc=$(du -sB1 "$data" 2>/dev/null | cut -f1)
    files=$(ls -1 "$data" 2>/dev/null | wc -l)
    echo "$(( ($(date +%s%N) - t0) / 1000000 )) ${app:-0} ${alloc:-0} $(snapshot_size) $files"
    sleep "$sample_seconds"
  done
) >"$work/samples" &
sampler_pid=$!

driver_rc=0
"$driver" --addr="$addr" --queue=churn --total="$total" --live="$live" \
  --progress_seconds=30 | tee "$work/driver.out" || driver_rc=$?
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""

# Let the result TTL pass and a last snapshot land, then the final sample.
sleep 3
final_app=$(du -sb "$data" | cut -f1)
final_alloc=$(du -sB1 "$data" | cut -f1)
snap=$(snapshot_size)
queue_json="$("$cli" --addr="$addr" -o json queue get churn || true)"
snapshots=$(grep -c '"msg":"snapshot written"' "$work/conveyord.log" || true)
stop_rc=0
stop_broker || stop_rc=$?

t_start=$(date +%s%N)
start_broker restart
t_up=$(( ($(date +%s%N) - t_start) / 1000000 ))
restart_ok=1
"$cli" --addr="$addr" health >/dev/null || restart_ok=0
stop_broker || restart_ok=0

read -r max_app max_alloc max_snap < <(awk 'BEGIN{a=0;b=0;s=0} {if($2>a)a=$2; if($3>b)b=$3; if($4>s)s=$4} END{print a, b, s}' "$work/samples")
nsamples=$(wc -l <"$work/samples")
big_snap=$(( max_snap > snap ? max_snap : snap ))
threshold=$snapshot_bytes
if (( threshold == 0 )); then  # the broker's automatic threshold
  threshold=$(( 2 * big_snap > 4194304 ? 2 * big_snap : 4194304 ))
fi
bound=$(( 2 * big_snap + threshold + 2 * segment_bytes ))
limit=$(awk -v b="$bound" -v s="$slack" 'BEGIN{printf "%d", b*s}')
mib() { awk -v x="$1" 'BEGIN{printf "%.1f MiB", x/1048576}'; }

echo "--- queue at the end ---"
echo "$queue_json" | tr -d '\n' | sed 's/  */ /g'; echo
echo "--- summary ---"
grep '^RESULT' "$work/driver.out" || true
echo "RESULT compaction_soak total=$total live=$live fsync=$fsync samples=$nsamples snapshots=$snapshots" \
  "max_apparent_bytes=$max_app max_allocated_bytes=$max_alloc final_apparent_bytes=$final_app" \
  "final_allocated_bytes=$final_alloc last_snapshot_bytes=$snap max_snapshot_bytes=$max_snap" \
  "bound_bytes=$bound restart_ms=$t_up"
echo "max on disk:   $(mib "$max_alloc") allocated, $(mib "$max_app") apparent"
echo "final on disk: $(mib "$final_alloc") allocated, $(mib "$final_app") apparent"
echo "live state:    $(mib "$snap") (last snapshot; largest seen $(mib "$max_snap"))"
echo "bound:         $(mib "$bound") = 2 x snapshot + snapshot threshold + 2 x segment_bytes; limit x$slack = $(mib "$limit")"
echo "restart after the soak: ${t_up} ms to the port file"

status=0
[[ $driver_rc -eq 0 ]] || { echo "FAIL: churn_driver exited $driver_rc"; status=1; }
[[ $stop_rc -eq 0 ]] || { echo "FAIL: conveyord exited $stop_rc on SIGTERM"; status=1; }
[[ $restart_ok -eq 1 ]] || { echo "FAIL: conveyord did not come back healthy"; status=1; }
[[ $snapshots -gt 0 ]] || echo "note: no snapshot was written (less than snapshot_bytes of journal?)"
(( max_alloc <= limit )) || { echo "FAIL: disk use $max_alloc bytes exceeded $limit"; status=1; }
[[ $status -eq 0 ]] && echo PASS
exit $status
