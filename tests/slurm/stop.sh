#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start.sh started: each daemon by the pid in its pid file
# under $JUDGEFLOW_SLURM_STATE, newest first; nothing else is killed. Leaves the packages installed.
set -uo pipefail
STATE=${JUDGEFLOW_SLURM_STATE:-/tmp/judgeflow-slurm}
[ -d "$STATE" ] || exit 0
command -v scancel >/dev/null && timeout 10 scancel --user=root >/dev/null 2>&1 || true
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$STATE/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$f"
done
echo "stop.sh: test cluster stopped"
