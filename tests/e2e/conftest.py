"""E2E helpers: run the `decomp` command under mpiexec as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    p = BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


def run_cli(args: list[str], *, np: int | None = None, timeout: float = 240,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`[mpiexec -n np] decomp ARGS`, with one thread per rank and no progress bar."""
    cmd = [_tool("decomp"), *args]
    if np is not None:
        cmd = [_tool("mpiexec"), "-n", str(np), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env, check=False)


@pytest.fixture(scope="session")
def startup_s() -> float:
    """Seconds a 2-rank MPI job that only imports decomp's engine takes on this machine now:
    the unit of the wall-time limits of jobs that must end "promptly" (a loaded machine
    stretches every start-up alike, so a limit of a few start-ups holds at any load while a
    hang still fails it). Measured once per session."""
    import time

    code = "import decomp.runner; from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
    t0 = time.monotonic()
    subprocess.run([_tool("mpiexec"), "-n", "2", sys.executable, "-c", code], check=True,
                   timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return time.monotonic() - t0


#: the MPI test files run again at 8 ranks (oversubscribed here), each with its selection
#: (-k on the file's own tests); one launch for all: 8 interpreters start once, not per file
EIGHT_RANK_FILES = {
    "test_decentralized_vs_sim": "iterates_equal_reference or replicas or gossip",
    "test_directed_mixing": "",
    "test_time_varying": "",
    "test_tree_aggregation": "float64 or long or no_rank or needs_the_master or partial or node",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test-e2e`` runs two workers), a fixture wider than one test
    runs once per worker that needs it: the tests sharing :func:`at_8_ranks` (one 8-rank launch)
    are kept on one worker (``--dist loadgroup``), as are the tests of a module whose module
    fixture runs jobs (``E2E_SHARED_MODULES``)."""
    for item in items:
        if "at_8_ranks" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("at_8_ranks"))
        elif item.module is not None and item.module.__name__ in E2E_SHARED_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


#: modules whose module-scoped fixtures launch jobs the module's tests share
E2E_SHARED_MODULES = {"tests.e2e.test_torch_preemption", "tests.e2e.test_slurm"}


@pytest.fixture(scope="session")
def at_8_ranks() -> dict[str, tuple[int, int, str]]:
    """``mpiexec -n 8 pytest`` of :data:`EIGHT_RANK_FILES` once per session: per file (passed,
    not passed, the job's output tail) from rank 0's ``-rA`` summary; the job's exit code
    must be 0."""
    keys = " or ".join(f"({f} and ({k}))" if k else f for f, k in EIGHT_RANK_FILES.items())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", DECOMP_PROGRESS="0")
    r = subprocess.run([_tool("mpiexec"), "-n", "8", sys.executable, "-m", "pytest",
                        "--with-mpi", "-p", "no:cacheprovider", "-q", "-rA", "--timeout=240",
                        "-k", keys, *(str(REPO / f"tests/mpi/{f}.py") for f in EIGHT_RANK_FILES)],
                       capture_output=True, text=True, timeout=1200, cwd=REPO, env=env,
                       check=False)
    tail = r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0, tail
    # every rank prints its -rA summary (interleaved): count distinct test ids per outcome
    seen: dict[str, set[str]] = {}
    for ln in r.stdout.splitlines():
        word, _, test = ln.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS") and "::" in test:
            seen.setdefault(word, set()).add(test.split(" ", 1)[0])
    out = {}
    for f in EIGHT_RANK_FILES:
        mine = {w: {t for t in ts if t.startswith(f"tests/mpi/{f}.py::")}
                for w, ts in seen.items()}
        ok = len(mine.get("PASSED", set()))
        skips = sum(ln.startswith("SKIPPED [") and f"tests/mpi/{f}.py:" in ln
                    for ln in r.stdout.splitlines())  # "SKIPPED [n] file:line: reason"
        out[f] = (ok, skips + sum(len(ts) for w, ts in mine.items() if w != "PASSED"), tail)
    return out
