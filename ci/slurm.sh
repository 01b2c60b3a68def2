#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine (Debian 12, Slurm 22.05, as root), idempotently.
# Used by CI (.ci/run) and by the Slurm tests' fixture. Exit 0 when `sinfo` shows the node idle;
# exit 3 with one line on stderr when this machine cannot run it (not root, no apt-get).
# `bash ci/slurm.sh stop` stops the three daemons it starts (munged, slurmctld, slurmd), by their pid files.
set -euo pipefail

if [ "${1:-}" = stop ]; then
  for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  echo "slurm: stopped slurmd, slurmctld and munged"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then echo "slurm: needs root to install and start slurmctld/slurmd" >&2; exit 3; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if ! command -v apt-get >/dev/null; then echo "slurm: not installed and no apt-get to install it" >&2; exit 3; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
node=$(slurmd -C | head -1)  # NodeName=host CPUs=.. Boards=.. ... RealMemory=..
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
conf=/etc/slurm/slurm.conf
want=$(cat <<EOF
# written by ci/slurm.sh: single-node cluster for the project's tests
ClusterName=reproduce
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( memory / cpus ))
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=10
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
restart=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" > "$conf"
  restart=1
fi
rm -f /etc/slurm/cgroup.conf  # 22.05 has no "disabled" cgroup plugin; with task/none none is needed

if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
fi
chown munge:munge /run/munge 2>/dev/null || true
pgrep -x munged >/dev/null || munged --force
if [ "$restart" = 1 ]; then
  for d in slurmd slurmctld; do
    [ -f /run/$d.pid ] && kill "$(cat /run/$d.pid)" 2>/dev/null || true
  done
  for _ in $(seq 30); do  # wait until both have exited, or the new config would not be read
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 0.5
  done
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated) echo "slurm: node $host $state"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm: node $host not up after 60 s (state '${state:-none}'); see /var/log/slurm/" >&2
exit 1
