#!/usr/bin/env bash
# decomp without SLURM: a parameter sweep, one mpiexec run per grid point, one after another.
# The grid is the sweep file's (config + [grid], e.g. jobs/configs/ef21_a9a_sweep.toml): the
# same tasks as `decomp slurm SWEEP` (a job array) and `decomp sim SWEEP` (the reference), read
# by `decomp slurm SWEEP --list-tasks`. Task i writes $OUT/<sweep name>/i/.
#
#   bash jobs/local/sweep.sh [SWEEP] [decomp run args for every task...]
#   NP=2 bash jobs/local/sweep.sh jobs/configs/ef21_a9a_sweep.toml --steps 300
#   TASKS="0 3" bash jobs/local/sweep.sh      # only some tasks
#   decomp compare $OUT/ef21-a9a-sweep --best grad_norm_sq --over lr_multiplier
#
# NP, HOSTFILE, VENV, OUT as in jobs/local/run.sh.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SWEEP=$REPO/jobs/configs/ef21_a9a_sweep.toml
if [ $# -gt 0 ]; then SWEEP=$1; shift; fi
source "$REPO/jobs/local/env.sh"  # NP, OUT, VENV, threads, launch=(mpiexec ...)
list=$(decomp slurm "$SWEEP" --list-tasks --out "$OUT")  # fails here on a bad sweep or config
failed=0
out_dir=
while IFS= read -r line; do
    eval "words=($line)"  # shell-quoted by decomp: TASK CONFIG --out DIR --set ...
    task=${words[0]}
    out_dir=${words[3]}
    if [ -n "${TASKS:-}" ] && [[ " $TASKS " != *" $task "* ]]; then continue; fi
    echo "+ task $task: ${launch[*]} decomp run ${words[*]:1} $*"
    "${launch[@]}" decomp run "${words[@]:1}" "$@" \
        || { echo "task $task failed (exit $?)" >&2; failed=$((failed + 1)); }
done <<< "$list"
echo "sweep $(basename "$out_dir"): ${failed} failed; results in $out_dir/<task>/"
[ "$failed" -eq 0 ]
