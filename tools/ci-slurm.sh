#!/usr/bin/env bash
# Single-node SLURM for CI on Debian 12 (root, no systemd), for tests/test_slurm.py:
#   bash tools/ci-slurm.sh install && bash tools/ci-slurm.sh start
#   .venv/bin/python -m pytest tests/test_slurm.py -v
#   bash tools/ci-slurm.sh stop        # cancels any jobs left, stops the daemons
# usage: ci-slurm.sh install|start|stop|status
#   SLURM_CI_DIR         work dir (default /tmp/slurm-ci); wiped on start
#   SLURM_CI_ACCOUNTING  1 = also run MariaDB + slurmdbd so that sacct works (default 0)
#   SLURM_CI_GPUS        number of fake GPUs (gres gpu, File=/dev/null); 0 = none (default 1)
#   SLURM_CI_MEM_MB      memory the node offers to jobs, in MB (default: physical memory - 1 GB, but at
#                        least 16000 so that the workflow's 8-16 GB jobs are accepted on small CI runners;
#                        SLURM does not enforce it here: no cgroups)
# Without accounting, `sacct` does not work: run Snakemake with `--slurm-status-command squeue`.
set -euo pipefail
D=${SLURM_CI_DIR:-/tmp/slurm-ci}
ACCT=${SLURM_CI_ACCOUNTING:-0}
GPUS=${SLURM_CI_GPUS:-1}
H=$(hostname -s)

log() { echo "[ci-slurm] $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || { log "must run as root (it installs packages and starts munged/slurmctld/slurmd)"; exit 1; }
}

do_install() {
  local pkgs="slurmctld slurmd slurm-client munge"
  [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  local p missing=0
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing=1
  done
  if [ "$missing" = 0 ]; then log "already installed: $pkgs"; return 0; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
}

write_conf() {
  local ncpu mem gres_line="" acct_lines
  ncpu=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))
  [ "$mem" -ge 16000 ] || mem=16000
  mem=${SLURM_CI_MEM_MB:-$mem}
  if [ "$GPUS" -gt 0 ]; then
    gres_line="Gres=gpu:$GPUS"
    { echo "AutoDetect=off"
      for i in $(seq 1 "$GPUS"); do echo "NodeName=$H Name=gpu File=/dev/null"; done
    } > "$D/etc/gres.conf"
  else
    : > "$D/etc/gres.conf"
  fi
  if [ "$ACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  else
    acct_lines="AccountingStorageType=accounting_storage/none"
  fi
  cat > "$D/etc/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
MailProg=/bin/true
ReturnToService=2
# Trust the node line below (RealMemory may exceed the physical memory, see SLURM_CI_MEM_MB).
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
$acct_lines
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
MinJobAge=300
KillWait=5
SlurmdTimeout=30
NodeName=$H CPUs=$ncpu Sockets=1 CoresPerSocket=$ncpu ThreadsPerCore=1 RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf"
  # Clients must find the config at the default path: the Snakemake jobstep
  # plugin strips every SLURM_* variable (SLURM_CONF too) before its inner srun.
  mkdir -p /etc/slurm
  ln -sfn "$D/etc/slurm.conf" /etc/slurm/slurm.conf
  ln -sfn "$D/etc/gres.conf" /etc/slurm/gres.conf
}

wait_for() { # wait_for SECONDS CMD...
  local t=$1; shift
  for _ in $(seq 1 $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "timeout waiting for: $*"; return 1
}

node_idle() { [ "$(sinfo -h -n "$H" -o %t 2>/dev/null)" = idle ]; }

do_start() {
  do_stop >/dev/null 2>&1 || true
  rm -rf "$D"; mkdir -p "$D"/{etc,state,spool,log,run}
  write_conf
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 bash -c 'munge -n | unmunge'
  if [ "$ACCT" = 1 ]; then
    mariadb-install-db --user=root --datadir="$D/mysql" --auth-root-authentication-method=socket \
      --skip-test-db > "$D/log/mariadb-install.log" 2>&1
    /usr/sbin/mariadbd --no-defaults --user=root --datadir="$D/mysql" --socket="$D/run/mysqld.sock" \
      --pid-file="$D/run/mysqld.pid" --bind-address=127.0.0.1 --port=3306 \
      --log-error="$D/log/mariadb.err" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb-admin --socket="$D/run/mysqld.sock" ping
    mariadb --socket="$D/run/mysqld.sock" -e "CREATE DATABASE slurm_acct_db;
      CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    SLURM_CONF="$D/etc/slurm.conf" /usr/sbin/slurmdbd   # finds slurmdbd.conf beside SLURM_CONF
    wait_for 30 sacctmgr -n show cluster
  fi
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
  wait_for 60 node_idle
  [ "$ACCT" = 1 ] && wait_for 30 bash -c "sacctmgr -n -P show cluster format=cluster | grep -qx ci"
  srun -t 1 true
  log "SLURM ready (node $H idle)"
}

killpid() { # killpid PIDFILE
  [ -s "$1" ] || return 0
  local p; p=$(cat "$1")
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$p" 2>/dev/null || true
}

do_stop() {
  if [ -s "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  killpid "$D/run/slurmd.pid"
  killpid "$D/run/slurmctld.pid"
  killpid "$D/run/slurmdbd.pid"
  if [ -S "$D/run/mysqld.sock" ]; then mariadb-admin --socket="$D/run/mysqld.sock" shutdown || true; fi
  if [ -S /run/munge/munge.socket.2 ]; then runuser -u munge -- /usr/sbin/munged --stop || true; fi
  rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
}

case "${1:-}" in
  install) need_root; do_install ;;
  start) need_root; do_start ;;
  stop) need_root; do_stop ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
