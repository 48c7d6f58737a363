#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the sharding tests and examples/slurm: installs
# Debian's slurm-wlm and munge when missing, writes a one-node configuration into a folder of its
# own (never /etc/slurm/slurm.conf) and starts munged, slurmctld and slurmd. Root only: the
# daemons need it. Prints `export SLURM_CONF=...` for the caller; idempotent (a running cluster
# of this script is reused). `scripts/slurm-up.sh down` stops it.
set -euo pipefail
state="${FANOUT_SLURM_DIR:-/var/tmp/slurm-one-node}"
conf="$state/slurm.conf"

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up.sh: the Slurm daemons need root (run it as root, or with sudo)" >&2
  exit 2
fi

stop() {
  for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
}

if [ "${1:-}" = down ]; then
  stop
  exit 0
fi

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-up.sh: installing Debian's slurm-wlm and munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

# munge: one key for the node, its daemon running.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
  else
    munged --force
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)"
mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log"
cat >"$conf.new" <<CONF
# Written by fanout's scripts/slurm-up.sh: one node, for tests and examples.
ClusterName=fanout
SlurmctldHost=$host
SlurmctldPort=${FANOUT_SLURMCTLD_PORT:-6817}
SlurmdPort=${FANOUT_SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MaxArraySize=10001
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$conf.new" "$conf" 2>/dev/null; then
  mv "$conf.new" "$conf"
  stop
else
  rm -f "$conf.new"
fi
export SLURM_CONF="$conf"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$state/slurmctld.pid" || slurmctld -f "$conf"
running "$state/slurmd.pid" || slurmd -f "$conf"

# Ready when the node takes jobs.
for _ in $(seq 150); do
  if sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-up.sh: the node did not come up; logs in $state/log" >&2
sinfo >&2 || true
tail -n 20 "$state/log/"*.log >&2 || true
exit 1
