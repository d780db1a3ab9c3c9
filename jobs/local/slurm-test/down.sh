#!/usr/bin/env bash
# Tear down the single-node SLURM that up.sh started: cancel jobs, stop slurmd and slurmctld,
# stop munged by its pid file. Safe to run twice, or when nothing runs.
set -uo pipefail

DIR=${DECOMP_SLURM_DIR:-/var/lib/decomp-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by decomp jobs/local/slurm-test/up.sh"

say() { echo "slurm-test: $*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
wait_gone() {  # pid file, seconds
    local n=$(( $2 * 5 ))
    while [ $n -gt 0 ] && alive "$1"; do sleep 0.2; n=$((n - 1)); done
    if alive "$1"; then kill -9 "$(cat "$1")" 2>/dev/null || true; fi
}

if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF was not written by up.sh: leaving this SLURM alone"
    exit 0
fi

if alive "$DIR/slurmctld.pid"; then
    timeout 10 scancel --full --quiet --partition=debug 2>/dev/null || true
    timeout 10 scontrol shutdown >/dev/null 2>&1 || true   # stops slurmctld and slurmd
fi
for pf in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if alive "$pf"; then kill "$(cat "$pf" 2>/dev/null)" 2>/dev/null || true; fi  # gone meanwhile: fine
    wait_gone "$pf" 10
done
if alive /run/munge/munged.pid; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    wait_gone /run/munge/munged.pid 5
fi
say "down"
