#!/usr/bin/env bash
# kill9_soak.sh: the kill -9 durability workload of
# tests/e2e/durability_e2e_test.cc with many more cycles (not part of ctest).
#
#   tests/soak/kill9_soak.sh [CYCLES]         # default 200
#
# Each cycle SIGKILLs the real conveyord (--data-dir, --fsync=always) during a
# steady workload (producer threads submitting through the client library, a
# real conveyor-worker with the echo handler), restarts it on the same data
# directory and checks that every acknowledged submit is there with its
# payload, that nothing is stuck RUNNING, that no payload was stored twice and
# that every result equals its payload; see the test's file comment.
#
# Environment:
#   BUILD_DIR     build tree holding tests/e2e/durability_e2e_test (default:
#                 build/ next to this repository's sources); built with
#                 `ninja -C $BUILD_DIR durability_e2e_test` when missing
#   CONVEYOR_KILL9_SEED, CONVEYOR_KILL9_MIN_DELAY_MS, CONVEYOR_KILL9_MAX_DELAY_MS,
#   CONVEYOR_KILL9_PRODUCERS, CONVEYOR_KILL9_KEEP_DIR   passed to the test
#
# Prints the test's "KILL9 SUMMARY" line and exits 0 only if the checker passed.
set -euo pipefail

cycles="${1:-${CONVEYOR_KILL9_CYCLES:-200}}"
case "$cycles" in
  ''|*[!0-9]*) echo "usage: $0 [CYCLES]" >&2; exit 64 ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
test_bin="$build/tests/e2e/durability_e2e_test"
if [[ ! -x "$test_bin" ]]; then
  echo "building durability_e2e_test in $build" >&2
  ninja -C "$build" -j2 durability_e2e_test >&2
fi

log="$(mktemp "${TMPDIR:-/tmp}/kill9_soak.XXXXXX.log")"
echo "kill9 soak: $cycles cycles; full output in $log"
start=$(date +%s)
set +e
CONVEYOR_KILL9_CYCLES="$cycles" "$test_bin" \
  --gtest_filter='DurabilityE2eTest.SurvivesRepeatedKill9DuringSteadyWorkload' \
  --gtest_color=no >"$log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))

summary="$(grep -a '^KILL9 SUMMARY' "$log" | tail -n 1 || true)"
failures="$(grep -a -c 'Failure$' "$log" || true)"
echo "${summary:-KILL9 SUMMARY missing (the test stopped early)}"
echo "gtest exit code $rc, $failures failure(s), ${elapsed}s"
if [[ $rc -ne 0 || -z "$summary" || "$summary" != *"result=PASS"* ]]; then
  echo "--- first failures ---"
  grep -a -A 3 'Failure$' "$log" | head -n 60 || true
  grep -a 'data directory and logs kept in' "$log" || true
  echo "FAIL"
  exit 1
fi
echo "PASS"
