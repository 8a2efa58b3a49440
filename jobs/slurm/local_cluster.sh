#!/usr/bin/env bash
# A one-node SLURM cluster in a folder, to try the job scripts on one machine (the tests use it).
#
#   sudo jobs/slurm/local_cluster.sh start /tmp/slurm    # munged, slurmctld and slurmd
#   export SLURM_CONF=/tmp/slurm/slurm.conf               # what start prints: sbatch, squeue ...
#   sbatch jobs/slurm/baseline.sbatch                     # after editing its first lines
#   sudo jobs/slurm/local_cluster.sh stop /tmp/slurm
#
# Needs root and Debian's packages (apt-get install slurmctld slurmd slurm-client munge). The
# node has this machine's cores and memory, and up to 4 jobs share each core (so a few small
# jobs run at once); no cgroups (proctrack/linuxproc, task/none), no
# accounting database, no GPUs. Everything it writes (key, state, logs) stays in the folder.
set -eu
action=${1:-}
dir=${2:-}
if [ -z "$action" ] || [ -z "$dir" ] || { [ "$action" != start ] && [ "$action" != stop ]; }; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

stop() {
  if [ -f "$dir/slurmctld.pid" ]; then  # the jobs first, then the daemons
    SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
  fi
  pids=""
  for name in slurmd slurmctld munged; do
    [ -f "$dir/$name.pid" ] && pids="$pids $(cat "$dir/$name.pid")"
    rm -f "$dir/$name.pid"
  done
  [ -n "$pids" ] || return 0
  kill $pids 2>/dev/null || true
  for _ in $(seq 50); do kill -0 $pids 2>/dev/null || return 0; sleep 0.1; done
  kill -9 $pids 2>/dev/null || true
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi

for cmd in munged slurmctld slurmd sinfo; do
  if ! command -v "$cmd" >/dev/null; then
    echo "error: $cmd not found: apt-get install slurmctld slurmd slurm-client munge" >&2
    exit 2
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "error: SLURM's daemons run as root here: run this with sudo" >&2
  exit 2
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir"
mkdir -p "$dir/state" "$dir/spool"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # MiB, some left to the OS

# munge authenticates the daemons and the commands to each other: a fresh key, its own socket
head -c 1024 /dev/urandom > "$dir/munge.key"
chmod 400 "$dir/munge.key"
munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"

cat > "$dir/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

# ready when the node takes jobs
state=none
for _ in $(seq 100); do
  for name in munged slurmctld slurmd; do
    if ! pgrep -f -- "$name .*$dir/" >/dev/null; then
      echo "error: $name stopped: $(tail -n 1 "$dir/$name.log" 2>/dev/null)" >&2
      stop
      exit 1
    fi
  done
  state=$(timeout 5 sinfo -h -N -o %t 2>/dev/null || true)
  case "$state" in idle*|mix*|alloc*) echo "SLURM_CONF=$SLURM_CONF"; exit 0;; esac
  sleep 0.2
done
echo "error: the node did not come up (state '$state'); see $dir/*.log" >&2
stop
exit 1
