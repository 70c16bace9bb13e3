#!/usr/bin/env bash
# The handler of 12-resource-pool (conveyor-worker --exec): "uses" a resource
# for 500ms, writing down when it started and ended: "<time> +1 <payload>" and
# "<time> -1 <payload>" lines appended to the file $1 (a short append is atomic).
read -r what || true
echo "$(date +%s.%N) +1 $what" >>"$1"
sleep 0.5
echo "$(date +%s.%N) -1 $what" >>"$1"
