#!/usr/bin/env bash
# Disk-full soak test on a real small filesystem (run by hand, as root; not
# part of the suite):
#   1. mounts an 8 MiB tmpfs and fills 3 MiB of it with a filler file;
#   2. runs conveyord there with 1 MiB segments and submits 16 KiB tasks with
#      the real CLI until a submit fails with RESOURCE_EXHAUSTED (exit 75);
#   3. checks that every acknowledged task is there (conveyor get);
#   4. deletes the filler and checks that submits succeed again;
#   5. restarts the broker on the same directory and checks that every
#      acknowledged task survived, and that conveyord --verify finds the
#      directory sound.
# Exit 0 on success, 1 on a failed check, 77 if it cannot mount (not root).
#
# Usage: tests/soak/disk_full.sh   (BUILD_DIR=build by default: needs
# $BUILD_DIR/server/conveyord and $BUILD_DIR/client/conveyor)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
CONVEYORD=$BUILD_DIR/server/conveyord
CLI=$BUILD_DIR/client/conveyor
SIZE=${DISK_FULL_SIZE:-8m}
FILLER_MB=${DISK_FULL_FILLER_MB:-3}
PAYLOAD_BYTES=${DISK_FULL_PAYLOAD_BYTES:-16384}
MAX_SUBMITS=${DISK_FULL_MAX_SUBMITS:-5000}

for bin in "$CONVEYORD" "$CLI"; do
  if [ ! -x "$bin" ]; then echo "disk_full: $bin is missing; build first" >&2; exit 1; fi
done

work=$(mktemp -d /tmp/conveyor_disk_full.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! mount -t tmpfs -o size="$SIZE" tmpfs "$mnt" 2>"$work/mount.err"; then
  echo "disk_full: cannot mount a $SIZE tmpfs on $mnt ($(cat "$work/mount.err")); run as root" >&2
  exit 77
fi
echo "disk_full: mounted a $SIZE tmpfs on $mnt"

fail() { echo "disk_full: FAILED: $*" >&2; exit 1; }

dd if=/dev/zero of="$mnt/filler" bs=1M count="$FILLER_MB" status=none
head -c "$PAYLOAD_BYTES" /dev/urandom | base64 -w0 | head -c "$PAYLOAD_BYTES" >"$work/payload"
echo "disk_full: filler of ${FILLER_MB} MiB written; $(df -k --output=avail "$mnt" | tail -1 | tr -d ' ') KiB free"

data=$mnt/data
start_broker() {
  rm -f "$work/port"
  "$CONVEYORD" --listen=127.0.0.1:0 --port-file="$work/port" --metrics-addr= \
    --data-dir="$data" --segment-bytes=1048576 --log-level=warning 2>>"$work/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 100); do
    [ -s "$work/port" ] && break
    kill -0 "$broker_pid" 2>/dev/null || fail "conveyord exited at start (log: $(tail -5 "$work/broker.log"))"
    sleep 0.1
  done
  [ -s "$work/port" ] || fail "conveyord did not write its port file"
  export CONVEYOR_ADDR=127.0.0.1:$(cat "$work/port")
}
stop_broker() {
  kill -TERM "$broker_pid"
  local rc=0
  wait "$broker_pid" || rc=$?
  broker_pid=""
  [ "$rc" -eq 0 ] || fail "conveyord exited $rc on SIGTERM"
}

# submit: prints the id and returns 0, or returns the CLI's exit code
# (stderr in $work/submit.err).
submit() {
  "$CLI" submit --queue soak --type noop --payload-file "$work/payload" 2>"$work/submit.err"
}

start_broker
echo "disk_full: conveyord pid $broker_pid on $CONVEYOR_ADDR, data in $data"

acked=$work/acked
: >"$acked"
n=0
full_rc=0
while [ "$n" -lt "$MAX_SUBMITS" ]; do
  rc=0
  id=$(submit) || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "$id" >>"$acked"
    n=$((n + 1))
    continue
  fi
  full_rc=$rc
  break
done
[ "$full_rc" -ne 0 ] || fail "no submit failed after $MAX_SUBMITS (disk never full?)"
[ "$full_rc" -eq 75 ] || fail "submit exited $full_rc, not 75: $(cat "$work/submit.err")"
grep -q "RESOURCE_EXHAUSTED\|disk full" "$work/submit.err" ||
  fail "exit 75 without RESOURCE_EXHAUSTED: $(cat "$work/submit.err")"
echo "disk_full: $n submits acknowledged, then exit 75: $(head -c 300 "$work/submit.err")"
echo "disk_full: $(ls "$data" | tr '\n' ' ')/ $(df -k --output=avail "$mnt" | tail -1 | tr -d ' ') KiB free"

# Still full: refused again, the broker still serves.
rc=0; submit >/dev/null || rc=$?
[ "$rc" -eq 75 ] || fail "a second submit on a full disk exited $rc, not 75"
"$CLI" health >/dev/null || fail "conveyor health failed on a full disk"

check_all() {
  local what=$1 missing=0
  while read -r id; do
    "$CLI" get "$id" >/dev/null 2>&1 || { echo "disk_full: task $id missing $what" >&2; missing=$((missing + 1)); }
  done <"$acked"
  [ "$missing" -eq 0 ] || fail "$missing acknowledged tasks missing $what"
  echo "disk_full: all $(wc -l <"$acked") acknowledged tasks present $what"
}
check_all "on the full disk"

rm -f "$mnt/filler"
echo "disk_full: filler deleted; $(df -k --output=avail "$mnt" | tail -1 | tr -d ' ') KiB free"
for i in $(seq 1 20); do
  rc=0
  id=$(submit) || rc=$?
  [ "$rc" -eq 0 ] || fail "submit $i after freeing space exited $rc: $(cat "$work/submit.err")"
  echo "$id" >>"$acked"
done
echo "disk_full: 20 more submits succeeded after freeing space"

stop_broker
verify_rc=0
"$CONVEYORD" --verify="$data" >"$work/verify.out" 2>&1 || verify_rc=$?
sed 's/^/disk_full: verify: /' "$work/verify.out"
[ "$verify_rc" -eq 0 ] || fail "conveyord --verify exited $verify_rc"

start_broker
echo "disk_full: restarted conveyord (pid $broker_pid)"
check_all "after the restart"
ready=$("$CLI" -o json queue get soak | tr -d ' \n' | grep -o '"ready":"\?[0-9]*' | grep -o '[0-9]*$' || echo "?")
echo "disk_full: queue soak holds $ready READY tasks; $(wc -l <"$acked") were acknowledged"
[ "$ready" = "$(wc -l <"$acked")" ] || fail "READY count $ready differs from the acknowledged count"
stop_broker
echo "disk_full: PASSED"
