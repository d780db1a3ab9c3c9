#!/usr/bin/env bash
# Stand up a single-node SLURM on this Debian machine, for the SLURM end-to-end tests and for
# trying the templates in jobs/slurm/ before a real cluster. Needs root (and apt if slurm-wlm
# and munge are not installed). Idempotent: a SLURM this script started and that still answers
# is reused. Tear it down with jobs/local/slurm-test/down.sh.
#
#   sudo bash jobs/local/slurm-test/up.sh          # installs slurm-wlm + munge if missing
#   sbatch ... / decomp slurm CONFIG --submit
#   sudo bash jobs/local/slurm-test/down.sh
#
# Environment: DECOMP_SLURM_CPUS (CPUs the node declares, default 8: more than the real cores,
# so a 4-task job and a job array fit side by side), DECOMP_SLURM_DIR (state, logs, pid files;
# default /var/lib/decomp-slurm), DECOMP_SLURM_TIMEOUT (seconds to wait for the node, 60).
#
# Facts this relies on (Debian 12, no systemd): slurm-wlm 22.05 and munge install in ~10 s with
# --no-install-recommends; /run/munge must be created (owned by munge) and munged started as the
# munge user; proctrack/linuxproc + task/none avoid cgroups; SlurmdParameters=config_overrides
# lets the node declare more CPUs than it has; `slurmctld -i` and `slurmd -N localhost`
# daemonize. MpiDefault=pmi2: the PyPI MPICH wheel runs under `srun --mpi=pmi2`.
set -euo pipefail

CPUS=${DECOMP_SLURM_CPUS:-8}
DIR=${DECOMP_SLURM_DIR:-/var/lib/decomp-slurm}
TIMEOUT=${DECOMP_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by decomp jobs/local/slurm-test/up.sh"

say() { echo "slurm-test: $*"; }
die() { echo "slurm-test: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (installs packages, starts munged, slurmctld, slurmd)"

# ---- install --------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge with apt"
    t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed"
    say "installed in $((SECONDS - t0)) s"
fi

# ---- configuration --------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: not touching a real SLURM set-up"
fi
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" /etc/slurm
cat > "$CONF.new" <<CONF
$MARK
# A single-node test cluster: node 'localhost' with $CPUS CPUs (config_overrides: may exceed
# the real cores), everything runs as root, no cgroups, no accounting database.
ClusterName=decomp-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=pmi2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
# job ids that do not repeat across stand-ups (the state is new each time, so SLURM would count
# from 1 again): a killed job of an earlier stand-up can leave /dev/shm/mpich_shm_<hash of
# job id.step>, which a new job of the same id would open in MPI_Init (docs/reliability.md)
FirstJobId=$(( $(date +%s) % 60000000 + 1000 ))
# SIGTERM to SIGKILL: time for ranks to checkpoint, MPI_Finalize (which removes MPICH's
# /dev/shm segment) and exit on a loaded machine (SLURM's default; 5 s killed them mid-exit)
KillWait=30
# step credential lifetime, also how long a requeued job waits before it may start again
# (cred_expire + 1 s; default 120 s): shorter, so the requeue tests do not idle for two minutes.
# 10 s still covers srun's step launch (credential made by slurmctld, checked by slurmd) on a
# machine at load 30; the minimum SLURM accepts is 5
AuthInfo=cred_expire=10
# the main scheduling loop every second (default 60 s): a requeued job whose wait has passed
# becomes eligible by the clock, not by an event, and waited for the next full pass (55 s of
# the 86 s between requeue and restart, measured)
SchedulerParameters=sched_interval=1
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
changed=1
if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then changed=0; fi
mv "$CONF.new" "$CONF"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

# ---- munge ----------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
fi
for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n | unmunge >/dev/null || die "munge does not answer (see /var/log/munge/munged.log)"

# ---- slurmctld, slurmd ----------------------------------------------------------------------
if [ "$changed" = 1 ]; then  # a new configuration: restart what runs
    for pf in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
        if alive "$pf"; then kill "$(cat "$pf")"; fi
    done
    for _ in $(seq 1 50); do
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || break; sleep 0.2
    done
fi
# A daemon of the previous stand-up may still be exiting (its pid file gone, its port still
# bound): starting then fails at once; seen once right after a teardown. Try again for 10 s.
start() {
    local try
    for try in 1 2 3 4 5; do
        "$@" && return 0
        say "'$*' failed (try $try of 5): trying again in 2 s"; sleep 2
    done
    die "'$*' failed 5 times (see $DIR/log)"
}
if ! alive "$DIR/slurmctld.pid"; then
    say "starting slurmctld"
    start slurmctld -i
fi
if ! alive "$DIR/slurmd.pid"; then
    say "starting slurmd"
    start slurmd -N localhost
fi

say "waiting (<= ${TIMEOUT} s) for node localhost to be idle"
deadline=$((SECONDS + TIMEOUT))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mixed|allocated) break ;;
        down*|drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated) ;;
    *) tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       die "node localhost is '${state:-not reported}' after ${TIMEOUT} s" ;;
esac
say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %T')  (logs in $DIR/log)"
