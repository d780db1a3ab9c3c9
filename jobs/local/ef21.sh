#!/usr/bin/env bash
# decomp without SLURM: EF21 (master–worker) with mpiexec. The same run as jobs/slurm/master_worker.sbatch.
#
#   bash jobs/local/ef21.sh [CONFIG] [decomp run args...]
#   NP=8 bash jobs/local/ef21.sh jobs/configs/ef21_a9a.toml --steps 500
#   NP=16 HOSTFILE=jobs/local/hostfile bash jobs/local/ef21.sh    # several machines (see hostfile.example)
#
# NP, HOSTFILE, VENV, OUT: see run.sh.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEFAULT_CONFIG=$HERE/../configs/ef21_a9a.toml exec bash "$HERE/run.sh" "$@"
