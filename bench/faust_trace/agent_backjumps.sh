#!/bin/bash
# Within-life repeats in kept logs of a traced run (FTRACE=1 ... --keep-logs): the surviving worker's
# agents going backwards on a partition (FTRACE agent-jump), old - new + 1 records each.
#   bench/faust_trace/agent_backjumps.sh RUN_ID...
for r in "$@"; do
  f=/tmp/backlog-logs/$r/worker.log
  grep "FTRACE agent-jump" $f | sed -E 's/.*agent-jump ([^ ]+) ([0-9]+) -> ([0-9]+)/\1 \2 \3/' | awk -v r=$r '$3<=$2 {n+=$2-$3+1; j++} END{printf "%s backward jumps %d, records %d\n", r, j, n}'
done
