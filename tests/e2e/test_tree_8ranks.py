"""tests/mpi/test_tree_aggregation.py at 8 ranks (oversubscribed here), beyond the 4 ranks of
`make test-mpi`: a tree three levels deep, every master–worker method summed over it equal
to the reference bit for bit, sums that turn dense on the way, partial participation and the
node-aware split on an uneven layout (3 + 2 + 3 ranks) too."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import REPO, _tool


def test_tree_aggregation_at_8_ranks() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", DECOMP_PROGRESS="0")
    r = subprocess.run([_tool("mpiexec"), "-n", "8", sys.executable, "-m", "pytest",
                        "--with-mpi", "-p", "no:cacheprovider", "-q", "--timeout=240",
                        "-k", "float64 or long or no_rank or needs_the_master or partial or node",
                        str(REPO / "tests/mpi/test_tree_aggregation.py")],
                       capture_output=True, text=True, timeout=900, cwd=REPO, env=env,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "31 passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
