#!/usr/bin/env bash
# `make test-slurm`: stand up the local single-node SLURM (up.sh), run the SLURM end-to-end tests
# (tests/e2e/test_slurm.py and test_slurm_torch.py: real sbatch jobs) against it, and tear it
# down (down.sh) afterwards, also when a test fails or the run is interrupted.
#
# Without root, or without SLURM and apt to install it, the tests are skipped with a message
# saying so; with DECOMP_TEST_SLURM=1 (as .ci/run sets) that is a failure instead.
# PYTHON: the interpreter with decomp and pytest (default: the repository's .venv). Arguments
# go to pytest, e.g. `bash jobs/local/slurm-test/test.sh -k requeue`.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
REQUIRED=${DECOMP_TEST_SLURM:-0}

unavailable() {
    if [ "$REQUIRED" = 1 ]; then
        echo "test-slurm: FAILED: $1; DECOMP_TEST_SLURM=1 requires the SLURM tests" >&2
        exit 1
    fi
    echo "test-slurm: SKIPPED the SLURM end-to-end tests: $1" \
         "(set DECOMP_TEST_SLURM=1 to make this a failure)"
    exit 0
}

[ "$(uname -s)" = Linux ] || unavailable "not Linux"
[ "$(id -u)" -eq 0 ] || unavailable "not root (standing up a local SLURM needs root)"
if ! command -v slurmctld >/dev/null && ! command -v apt-get >/dev/null; then
    unavailable "SLURM (slurm-wlm) is not installed and there is no apt-get to install it"
fi
if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "written by decomp" /etc/slurm/slurm.conf; then
    unavailable "this machine has its own /etc/slurm/slurm.conf (a real SLURM: not touched)"
fi

# One run at a time on a machine: a second one waits here instead of tearing down the first's SLURM.
LOCK=${TMPDIR:-/tmp}/decomp-slurm-test.lock
if command -v flock >/dev/null && exec 9>"$LOCK"; then
    flock -w 900 9 || unavailable "another SLURM test run holds $LOCK"
fi

t0=$SECONDS
trap 'bash "$HERE/down.sh"' EXIT
timeout 300 bash "$HERE/up.sh" || unavailable "could not stand up SLURM (messages above)"
echo "test-slurm: SLURM up after $((SECONDS - t0)) s; running tests/e2e/test_slurm.py and test_slurm_torch.py"
DECOMP_SLURM_UP=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
    "$PY" -m pytest -q -p no:cacheprovider --timeout=300 -rs "$REPO/tests/e2e/test_slurm.py" \
    "$REPO/tests/e2e/test_slurm_torch.py" "$@"
status=$?
echo "test-slurm: exit $status after $((SECONDS - t0)) s (stand-up, tests; teardown follows)"
exit "$status"
