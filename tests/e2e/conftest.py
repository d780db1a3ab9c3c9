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


def hang_guard_s(startup_s: float, quiet_s: float) -> float:
    """A hang guard for a job that takes about ``quiet_s / 4`` on the quiet 2-core machine:
    ``quiet_s``, or more on a loaded machine, which stretches the job as it stretches
    ``startup_s`` (about 1.2 s quiet): a hang still ends, a slow machine does not fail."""
    return quiet_s * max(1.0, startup_s / 1.2)


#: the MPI test files run again at 8 ranks (oversubscribed here), each with its selection
#: (-k on the file's own tests); one launch for all: 8 interpreters start once, not per file
EIGHT_RANK_FILES = {
    "test_decentralized_vs_sim": "iterates_equal_reference or replicas or gossip",
    "test_directed_mixing": "",
    "test_time_varying": "",
    "test_tree_aggregation": "float64 or long or no_rank or needs_the_master or partial or node",
}


#: tests that share a job, kept on one pytest-xdist worker (``make test-e2e`` runs two): the
#: tests of :func:`at_8_ranks` (one 8-rank launch) and of the modules whose module fixture
#: runs jobs; node-id prefix -> group. Elsewhere a wider fixture would run once per worker.
E2E_GROUPS = {
    "tests/e2e/test_decentralized_cli.py::test_iterates_at_8_ranks": "at_8_ranks",
    "tests/e2e/test_directed_mixing_8ranks.py::": "at_8_ranks",
    "tests/e2e/test_time_varying_8ranks.py::": "at_8_ranks",
    "tests/e2e/test_tree_8ranks.py::": "at_8_ranks",
    "tests/e2e/test_torch_preemption.py::": "torch_preemption",  # straight(): module fixture
    "tests/e2e/test_slurm.py::": "slurm",  # pace: module fixture (run by make test-slurm)
}


def e2e_group(nodeid: str) -> str:
    """The test's group: its :data:`E2E_GROUPS` entry, else its own node id."""
    return next((g for prefix, g in E2E_GROUPS.items() if nodeid.startswith(prefix)), nodeid)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share a module or session fixture of a test module, or :func:`at_8_ranks`,
    are in one group of :data:`E2E_GROUPS`."""
    users: dict[object, list[pytest.Item]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for defs in item._fixtureinfo.name2fixturedefs.values():
            for d in defs:
                if (d.scope in ("module", "session") and d.baseid == module) or \
                        d.argname == "at_8_ranks":
                    users.setdefault(d, []).append(item)
    for shared in (its for its in users.values() if len(its) > 1):
        groups = {e2e_group(item.nodeid) for item in shared}
        if len(groups) > 1 or groups == {shared[0].nodeid}:
            raise pytest.UsageError(f"{shared[0].nodeid} and {len(shared) - 1} other test(s) "
                                    "share a job: give them one group in E2E_GROUPS "
                                    "(tests/e2e/conftest.py)")


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own; xdist may be off
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` with the groups of :data:`E2E_GROUPS`: xdist 3.8 reads its
    ``xdist_group`` marks through ``item._nodeid``, which pytest 9 no longer uses, so its
    own grouping silently sends a group's tests to both workers. Groups go out first (the
    most tests first, xdist's reordering), then the single tests in collection order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class E2EScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return e2e_group(nodeid)

    return E2EScheduling(config, log)


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
