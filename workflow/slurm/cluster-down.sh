#!/usr/bin/env bash
# Take down the single-node Slurm test cluster of workflow/slurm/cluster-up.sh:
# cancel its jobs, stop the daemons that script started -- by the PIDs it
# recorded, each checked against the daemon's name first -- and remove the
# configs it wrote. Daemons it found already running are left alone; installed
# packages, the accounting database and the logs in $BRCD_SLURM_STATE stay.
#   workflow/slurm/cluster-down.sh
set -euo pipefail

STATE=${BRCD_SLURM_STATE:-/var/lib/brcd-slurm}
MARKER="# Written by workflow/slurm/cluster-up.sh (brcd test cluster)"
STARTED="$STATE/started"

say() { echo "cluster-down: $*"; }

# cluster-up.sh holds the lock already when it calls this to clean up after a failure.
if [ -z "${BRCD_SLURM_LOCK_HELD:-}" ]; then
  mkdir -p "$STATE"
  exec 9>"$STATE/lock"
  flock 9
fi

if [ ! -s "$STARTED" ]; then
  say "nothing to stop: $STARTED lists no daemons started by cluster-up.sh"
  exit 0
fi

# Jobs first, while slurmctld and slurmd still run: their processes end with them.
if command -v squeue >/dev/null && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    say "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi

# Running: exists and is not a zombie (an exited daemon stays one until init reaps it).
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop() {  # stop NAME PID: TERM, wait up to 15 s, then KILL
  local name=$1 pid=$2 comm
  if ! running "$pid"; then
    say "$name ($pid) already gone"
    return
  fi
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  # A recycled PID belongs to someone else: never signal it.
  if [ "$comm" != "$name" ]; then
    say "pid $pid is now '$comm', not $name: left alone"
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 150); do running "$pid" || { say "stopped $name ($pid)"; return; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $name ($pid): it ignored SIGTERM for 15 s"
}

# Reverse start order: slurmd, slurmctld, slurmdbd, MariaDB, munged.
tac "$STARTED" | while read -r name pid; do stop "$name" "$pid"; done
: > "$STARTED"

for conf in /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf; do
  if [ -e "$conf" ] && head -n1 "$conf" | grep -qF "$MARKER"; then rm -f "$conf"; fi
done
say "down (logs kept in $STATE)"
