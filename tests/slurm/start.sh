#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine for tests/test_slurm_cluster.py:
# munged, mariadb (accounting database), slurmdbd, slurmctld, slurmd, all as root, state and logs
# under $JUDGEFLOW_SLURM_STATE (default /tmp/judgeflow-slurm). Partitions match tests/slurm/site.yaml:
# jf_cpu (default), jf_gpu, jf_train; the node has 4 count-only GPUs (gres with AutoDetect=off and
# placeholder files; no GPU needed). Idempotent: does nothing when this cluster already answers.
# Stop it with tests/slurm/stop.sh (kills exactly the daemons whose pid files are in the state dir).
set -euo pipefail
STATE=${JUDGEFLOW_SLURM_STATE:-/tmp/judgeflow-slurm}
MARK="# judgeflow test cluster (tests/slurm/start.sh)"
HOST=$(hostname -s)
CPUS=${JUDGEFLOW_SLURM_NODE_CPUS:-8}     # declared, not real: SlurmdParameters=config_overrides

[ "$(id -u)" = 0 ] || { echo "start.sh: needs root" >&2; exit 1; }
for b in munged mariadbd slurmdbd slurmctld slurmd sinfo sacctmgr; do
  command -v "$b" >/dev/null || { echo "start.sh: $b not installed (run tests/slurm/install.sh)" >&2; exit 1; }
done
if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
  echo "start.sh: /etc/slurm/slurm.conf belongs to another SLURM set-up; not touching it" >&2; exit 1
fi
if grep -qF "$MARK" /etc/slurm/slurm.conf 2>/dev/null && timeout 10 sinfo -h -o %P 2>/dev/null | grep -q jf_gpu; then
  echo "start.sh: already running"; exit 0
fi

mkdir -p "$STATE"/{ctld,d,gpu,mysql-run,munge-run}
for i in 0 1 2 3; do : > "$STATE/gpu/gpu$i"; done

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "start.sh: $what did not come up in ${t}s" >&2; return 1
}

# --- munge ---
chown munge:munge "$STATE/munge-run"
if ! pid_alive "$STATE/munged.pid"; then
  runuser -u munge -- munged --socket="$STATE/munge-run/munge.socket.2" \
      --pid-file="$STATE/munge-run/munged.pid" --log-file="$STATE/munge-run/munged.log"
  wait_for 10 munged test -s "$STATE/munge-run/munged.pid"
  cp "$STATE/munge-run/munged.pid" "$STATE/munged.pid"
fi
# SLURM's auth/munge plugin uses the default socket path.
mkdir -p /run/munge && ln -sfn "$STATE/munge-run/munge.socket.2" /run/munge/munge.socket.2

# --- mariadb (accounting: without it the plugin's status checks with sacct hang) ---
chown mysql:mysql "$STATE/mysql-run"
if ! pid_alive "$STATE/mariadbd.pid"; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
      --socket="$STATE/mysql-run/mysqld.sock" --pid-file="$STATE/mysql-run/mariadbd.pid" \
      --innodb-buffer-pool-size=32M --performance-schema=OFF \
      --log-error="$STATE/mysql-run/mariadbd.log" &
  wait_for 60 mariadb mariadb --socket="$STATE/mysql-run/mysqld.sock" -e "select 1"
  cp "$STATE/mysql-run/mariadbd.pid" "$STATE/mariadbd.pid"
fi
mariadb --socket="$STATE/mysql-run/mysqld.sock" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;"

# --- configuration ---
cat > /etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=judgeflow
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=32000 Gres=gpu:4 State=UNKNOWN
PartitionName=jf_cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=jf_gpu Nodes=$HOST MaxTime=INFINITE State=UP
PartitionName=jf_train Nodes=$HOST MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/gres.conf <<EOF
$MARK
AutoDetect=off
NodeName=$HOST Name=gpu File=$STATE/gpu/gpu[0-3]
EOF
cat > /etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=0
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf
# slurmdbd reaches mariadb through the default socket path
mkdir -p /run/mysqld && ln -sfn "$STATE/mysql-run/mysqld.sock" /run/mysqld/mysqld.sock

# --- daemons ---
pid_alive "$STATE/slurmdbd.pid" || slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster judgeflow >/dev/null 2>&1 || true
sacctmgr -i add account judgeflow Cluster=judgeflow Description=tests Organization=judgeflow >/dev/null 2>&1 || true
for u in root ${SUDO_USER:-}; do  # root, and the user who ran this through sudo (.ci/run)
  sacctmgr -i add user "$u" Account=judgeflow Cluster=judgeflow >/dev/null 2>&1 || true
done
pid_alive "$STATE/slurmctld.pid" || slurmctld
wait_for 30 slurmctld scontrol ping
pid_alive "$STATE/slurmd.pid" || slurmd
node_ready() { sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'; }
wait_for 30 "slurmd (node idle)" node_ready || { scontrol update NodeName="$HOST" State=RESUME || true; wait_for 15 "node" node_ready; }
echo "start.sh: SLURM $(sinfo -V | awk '{print $2}') up: $(sinfo -h -o '%P' | tr '\n' ' ')"
