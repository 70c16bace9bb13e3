#!/usr/bin/env bash
# Pipeline: a chain of stages (`conveyor submit --then`), each stage's result
# the next stage's payload, across two queues served by different workers.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
TEXT_Q=text-$RUN_ID STATS_Q=stats-$RUN_ID

step "Worker 'text' serves $TEXT_Q (split, format); worker 'stats' serves $STATS_Q (top)"
start_worker text --queue="$TEXT_Q" \
  --exec split="tr -cs 'A-Za-z' '\n' | tr 'A-Z' 'a-z'" \
  --exec format="awk '{ printf \"%s%s=%s\", (NR > 1 ? \", \" : \"\"), \$2, \$1 }'"
start_worker stats --queue="$STATS_Q" --exec top="sort | uniq -c | sort -k1,1nr -k2 | head -n 3"

step "Submit a three-stage chain: split (on $TEXT_Q) -> top (on $STATS_Q) -> format (on $TEXT_Q)"
TEXT="The cat sat on the mat. The dog sat on the log. A cat and a dog."
id=$(conveyor submit --queue "$TEXT_Q" --type split \
  --then queue="$STATS_Q",type=top --then queue="$TEXT_Q",type=format "$TEXT")
echo "chain id: $id"

chain_ended() { ! conveyor chain get "$id" | grep -q '^state: RUNNING'; }
wait_for 20 chain_ended || fail "the chain did not end within 20 s"
conveyor chain get "$id"

result=$(conveyor chain get "$id" | sed -n "s/^result: //p")
[[ $result == "the=4, a=2, cat=2" ]] || fail "unexpected result '$result'"
echo "OK: three stages on two queues and two workers, each fed the previous result"
