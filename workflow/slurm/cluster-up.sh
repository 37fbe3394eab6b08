#!/usr/bin/env bash
# Bring up a throwaway single-node Slurm cluster on this Debian machine, as root:
# install Debian's Slurm and munge (and slurmdbd + MariaDB for accounting), write
# the configs, start the daemons without systemd or cgroups and wait until a job
# runs. It is what tests/test_slurm.py runs the workflow through, and a way to try
# workflow/profiles/slurm before using a real cluster.
#
#   workflow/slurm/cluster-up.sh [--gpus N] [--no-accounting]
#   workflow/slurm/cluster-down.sh            # stops only the daemons this script started
#
#   --gpus N          advertise N fake GPUs (gres, one distinct device file each,
#                     AutoDetect=off; at most 5): the profile's GPU requests can then be
#                     scheduled, and jobs see CUDA_VISIBLE_DEVICES but run on the CPU
#   --no-accounting   no slurmdbd/MariaDB: faster, but `sacct` fails, so the slurm
#                     plugin needs `--slurm-status-command squeue` (README, "Running on a
#                     cluster")
#
# The node has this machine's CPUs (nproc) and memory (`slurmd -C`). Partitions:
# `cpu` (the default) and, with GPUs, `gpu`, both on the one node. With accounting
# there is an account `brcd` that root may use. Daemons run as root
# (SlurmUser=root, proctrack/linuxproc, task/none: no cgroups needed); state and
# logs go to $BRCD_SLURM_STATE (default /var/lib/brcd-slurm).
#
# Every start begins with empty controller and node state (no jobs from a cluster
# that died), job ids continuing after the last one.
#
# Exit status: 0 up (or already up with the same options), 3 this machine cannot
# host it (not root, no apt-get, the packages do not install, or a Slurm
# configuration this script did not write), 1 anything else (the message says
# which daemon failed and shows the end of its log).
set -Eeuo pipefail

STATE=${BRCD_SLURM_STATE:-/var/lib/brcd-slurm}
MARKER="# Written by workflow/slurm/cluster-up.sh (brcd test cluster)"
CLUSTER=brcd
ACCOUNT=brcd
GPUS=0
ACCOUNTING=1
# Distinct device files for fake GPUs: Slurm needs one file per GPU.
FAKE_GPU_FILES=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)

say() { echo "cluster-up: $*"; }
cannot() { echo "cluster-up: cannot set up a Slurm test cluster here: $*" >&2; exit 3; }
die() { echo "cluster-up: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS=${2:?--gpus needs a number}; shift 2 ;;
    --gpus=*) GPUS=${1#--gpus=}; shift ;;
    --no-accounting) ACCOUNTING=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (options: --gpus N, --no-accounting, --help)" ;;
  esac
done
[[ "$GPUS" =~ ^[0-9]+$ ]] && [ "$GPUS" -le ${#FAKE_GPU_FILES[@]} ] \
  || die "--gpus must be a number from 0 to ${#FAKE_GPU_FILES[@]} (one distinct device file per fake GPU), got '$GPUS'"

# --- can this machine host it? ---------------------------------------------------
[ "$(id -u)" = 0 ] || cannot "it must run as root (it installs packages and starts daemons): sudo $0"
command -v apt-get >/dev/null || cannot "apt-get not found: it installs Debian's slurmctld, slurmd, slurm-client and munge"
for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf; do
  if [ -e "$conf" ] && ! head -n1 "$conf" | grep -qF "$MARKER"; then
    cannot "$conf exists and was not written by this script (this machine already belongs to a Slurm cluster; use that one)"
  fi
done

# One cluster-up/-down at a time (two test sessions on one machine wait for each other).
# Daemons are started with `9>&-`: a daemon holding the lock would block every later call.
mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock 9

OPTIONS="gpus=$GPUS accounting=$ACCOUNTING"
STARTED="$STATE/started"   # "name pid" of every daemon this script started: cluster-down.sh reads it

# Running: exists and is not a zombie (an exited daemon stays one until init reaps it).
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

already_up() {
  [ -s "$STARTED" ] || return 1
  local name pid
  while read -r name pid; do alive "$pid" || return 1; done < "$STARTED"
  sinfo -h >/dev/null 2>&1
}

if already_up; then
  if [ "$(cat "$STATE/options" 2>/dev/null)" = "$OPTIONS" ]; then
    say "already up ($OPTIONS); take it down with workflow/slurm/cluster-down.sh"
    exit 0
  fi
  die "a test cluster with other options is up ($(cat "$STATE/options" 2>/dev/null)); run workflow/slurm/cluster-down.sh first"
fi

# --- packages ---------------------------------------------------------------------
PACKAGES=(slurmctld slurmd slurm-client munge)
[ "$ACCOUNTING" = 1 ] && PACKAGES+=(slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$1" 2>&1; }
  # A fresh machine may have no package lists yet: update only when the install fails.
  if ! apt_install "$STATE/apt.log"; then
    apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
    apt_install "$STATE/apt.log" || { tail -n 20 "$STATE/apt.log" >&2; cannot "apt-get install ${missing[*]} failed (log above, full log: $STATE/apt.log)"; }
  fi
fi

# A cluster that is partly up (a daemon died): stop what is left of it first.
if [ -s "$STARTED" ]; then
  say "a test cluster is partly up; stopping what is left of it first"
  BRCD_SLURM_LOCK_HELD=1 "$(dirname "$0")/cluster-down.sh" 9>&-
  # Job steps of that cluster outlive its slurmd; no Slurm but this one runs here
  # (a foreign slurm.conf stopped us above), so every slurmstepd left is one of them.
  if pkill -KILL -x slurmstepd 2>/dev/null; then say "killed job steps left by that cluster"; fi
fi

# No cluster of ours runs now. A slurmctld that died with jobs running (killed, its
# machine stopped) saved them, and a new one would recover them as running here: the
# node would stay allocated to jobs that no longer exist. The cluster is throwaway,
# so it starts from empty controller and node state every time.
rm -rf "$STATE/slurmctld" "$STATE/slurmd"

# --- from here on, a failing step stops whatever this script started -------------
mkdir -p "$STATE"/{slurmctld,slurmd}
: > "$STARTED"
echo "$OPTIONS" > "$STATE/options"
cleanup() {
  echo "cluster-up: stopping the daemons it started (logs stay in $STATE)" >&2
  BRCD_SLURM_LOCK_HELD=1 "$(dirname "$0")/cluster-down.sh" >&2 9>&- || true
}
trap 'status=$?; echo "cluster-up: failed (line $LINENO)" >&2; cleanup; exit $status' ERR

fail() {  # fail MESSAGE [LOG]: the message, the end of the daemon's log, then clean up
  trap - ERR
  echo "cluster-up: $1" >&2
  if [ -n "${2:-}" ] && [ -e "$2" ]; then echo "--- last lines of $2:" >&2; tail -n 20 "$2" >&2; fi
  cleanup
  exit 1
}

wait_for() {  # wait_for SECONDS COMMAND...: retry until it succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

record() { echo "$1 $2" >> "$STARTED"; }

pid_from() {  # pid_from PIDFILE SECONDS: daemons write their pid file once they run
  wait_for "$2" test -s "$1" || return 1
  cat "$1"
}

# --- munge: authentication between all Slurm daemons and commands -----------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged already running (not started here, left alone)"
else
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged 9>&- </dev/null >>"$STATE/munged.out" 2>&1 \
    || fail "munged did not start" /var/log/munge/munged.log
  pid=$(pid_from /run/munge/munged.pid 10) || fail "munged wrote no pid file" /var/log/munge/munged.log
  record munged "$pid"
  wait_for 10 sh -c 'munge -n | unmunge' || fail "munge credentials do not round-trip" /var/log/munge/munged.log
fi

# --- slurm.conf: one node with this machine's CPUs and memory ------------------------
HOST=$(hostname -s)
# nproc counts the CPUs this process may use, but also obeys OMP_NUM_THREADS and OMP_THREAD_LIMIT,
# which say nothing about the machine (the test suite sets OMP_NUM_THREADS=1: a node of 1 CPU ran
# the test runs one job at a time)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
HW=$(slurmd -C | sed -n 1p)                     # what slurmd itself detects
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
[ -n "$MEM" ] || fail "could not read RealMemory from 'slurmd -C': $HW"
# Use slurmd's own topology when it counts the CPUs we may use; otherwise (CPU
# affinity narrower than the hardware) declare just the count.
if [ "$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$HW")" = "$CPUS" ]; then
  TOPOLOGY=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ RealMemory=.*//' <<<"$HW")
else
  TOPOLOGY="CPUs=$CPUS"
fi
GRES=""
PARTITIONS="PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
if [ "$GPUS" -gt 0 ]; then
  GRES=" Gres=gpu:$GPUS"
  PARTITIONS="$PARTITIONS
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP"
fi
if [ "$ACCOUNTING" = 1 ]; then
  STORAGE="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu"
else
  STORAGE="AccountingStorageType=accounting_storage/none"
fi
mkdir -p /etc/slurm
# Written before slurmdbd starts: sacctmgr finds slurmdbd through it.
cat > /etc/slurm/slurm.conf <<EOF
$MARKER
# Single node, daemons as root, no cgroups (proctrack/linuxproc, task/none).
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes (the plugin's squeue status
# command needs at least 3x its first status-check delay).
MinJobAge=300
KillWait=5
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
$STORAGE
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 $TOPOLOGY RealMemory=$MEM$GRES State=UNKNOWN
$PARTITIONS
EOF
{
  echo "$MARKER"
  echo "AutoDetect=off"
  for ((i = 0; i < GPUS; i++)); do echo "NodeName=$HOST Name=gpu File=${FAKE_GPU_FILES[$i]}"; done
} > /etc/slurm/gres.conf

# --- accounting: MariaDB + slurmdbd (sacct works; the plugin's default) ------------
if [ "$ACCOUNTING" = 1 ]; then
  if mariadb-admin ping >/dev/null 2>&1; then
    say "MariaDB already running (not started here, left alone)"
  else
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/mariadb-install.log" 2>&1 \
      || fail "mariadb-install-db failed" "$STATE/mariadb-install.log"
    install -d -o mysql -g mysql -m 755 /run/mysqld "$STATE/mariadb"
    rm -f "$STATE/mariadb/mariadb.pid"
    # Sockets only (no TCP port): slurmdbd reaches it at "localhost", i.e. the socket.
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
      --socket=/run/mysqld/mysqld.sock --pid-file="$STATE/mariadb/mariadb.pid" --log-error="$STATE/mariadb/mariadb.log" \
      9>&- </dev/null >>"$STATE/mariadb/mariadb.out" 2>&1 &
    pid=$(pid_from "$STATE/mariadb/mariadb.pid" 60) || fail "MariaDB did not start" "$STATE/mariadb/mariadb.log"
    record mariadbd "$pid"
    wait_for 60 mariadb-admin ping || fail "MariaDB does not answer" "$STATE/mariadb/mariadb.log"
  fi
  DBPASS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  mariadb -u root <<SQL || fail "could not create the accounting database" "$STATE/mariadb/mariadb.log"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
  mkdir -p /etc/slurm
  # slurmdbd refuses a config readable by others (it holds the password).
  ( umask 077; cat > /etc/slurm/slurmdbd.conf <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
EOF
  )
  rm -f "$STATE/slurmdbd.pid"
  slurmdbd 9>&- </dev/null >>"$STATE/slurmdbd.out" 2>&1 || fail "slurmdbd did not start" "$STATE/slurmdbd.log"
  pid=$(pid_from "$STATE/slurmdbd.pid" 30) || fail "slurmdbd wrote no pid file" "$STATE/slurmdbd.log"
  record slurmdbd "$pid"
  wait_for 60 sacctmgr -n list cluster || fail "slurmdbd does not answer sacctmgr" "$STATE/slurmdbd.log"
  # Register the cluster before slurmctld starts, and an account the profile can name
  # (the plugin checks a given slurm_account with sacctmgr).
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="brcd test account" Organization=brcd >/dev/null 2>&1 || true
  sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -n -P list associations user=root account="$ACCOUNT" format=account | grep -qx "$ACCOUNT" \
    || fail "account '$ACCOUNT' for root was not created" "$STATE/slurmdbd.log"
else
  rm -f /etc/slurm/slurmdbd.conf
fi

# --- slurmctld and slurmd ------------------------------------------------------------
# With empty controller state job ids would start at 1 again, repeating ids of earlier
# clusters here; continue after the highest one the accounting database or the
# controller's log (which has the jobs slurmctld had not yet reported) knows.
LAST_JOB=$( { sacct -n -X -P -a -D -S 1970-01-01 -o JobIDRaw 2>/dev/null || true
              grep -ho 'JobId=[0-9]*' "$STATE/slurmctld.log" 2>/dev/null | cut -d= -f2 || true; } \
            | grep -xE '[0-9]+' | sort -n | tail -n1 || true)
if [ -n "$LAST_JOB" ]; then echo "FirstJobId=$((LAST_JOB + 1))" >> /etc/slurm/slurm.conf; fi
rm -f "$STATE/slurmctld.pid" "$STATE/slurmd.pid"
slurmctld 9>&- </dev/null >>"$STATE/slurmctld.out" 2>&1 || fail "slurmctld did not start" "$STATE/slurmctld.log"
pid=$(pid_from "$STATE/slurmctld.pid" 30) || fail "slurmctld wrote no pid file" "$STATE/slurmctld.log"
record slurmctld "$pid"
wait_for 30 scontrol ping || fail "slurmctld does not answer" "$STATE/slurmctld.log"
slurmd 9>&- </dev/null >>"$STATE/slurmd.out" 2>&1 || fail "slurmd did not start" "$STATE/slurmd.log"
pid=$(pid_from "$STATE/slurmd.pid" 30) || fail "slurmd wrote no pid file" "$STATE/slurmd.log"
record slurmd "$pid"
node_idle() { sinfo -h -n "$HOST" -o %T | grep -qx idle; }
wait_for 60 node_idle || fail "node $HOST is not idle: $(sinfo -h -N -o '%N %T %E')" "$STATE/slurmd.log"

# --- wait until a job runs (a batch job that starts a job step, like the plugin's) ---
# Polled with squeue, not `sbatch --wait`, which checks only every few seconds.
JOBID=$(sbatch --parsable -t 2 -o "$STATE/test-job.out" --wrap 'srun -n1 true') \
  || fail "sbatch of a test job failed: $(sinfo -h -N -o '%N %T %E')" "$STATE/slurmctld.log"
JOBID=${JOBID%%;*}
job_state() { squeue -h -j "$JOBID" -t all -o %T 2>/dev/null; }
job_ended() { case "$(job_state)" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) true ;; *) false ;; esac; }
wait_for 60 job_ended || fail "test job $JOBID did not finish within 60 s: $(job_state)" "$STATE/slurmd.log"
[ "$(job_state)" = COMPLETED ] || fail "test job $JOBID ended $(job_state) (its output: $STATE/test-job.out)" "$STATE/slurmd.log"
if [ "$ACCOUNTING" = 1 ]; then
  wait_for 30 sh -c "sacct -n -X -P -j $JOBID -o State | grep -qx COMPLETED" \
    || fail "sacct does not report test job $JOBID" "$STATE/slurmdbd.log"
fi
trap - ERR

ACCT_TEXT="none (sacct fails: use --slurm-status-command squeue)"
[ "$ACCOUNTING" = 1 ] && ACCT_TEXT="slurmdbd + MariaDB (sacct works; account '$ACCOUNT')"
say "up: node $HOST, $CPUS CPUs, $MEM MB, $GPUS fake GPUs; partitions: $(sinfo -h -o %P | tr '\n' ' ')"
say "accounting: $ACCT_TEXT; test job $JOBID ran"
say "state and logs: $STATE; take it down with workflow/slurm/cluster-down.sh"
