"""Shared fixtures: the repository's shared LIBSVM data directory; MPICH segments that killed
test ranks left in /dev/shm are removed at the end of a (non-MPI) session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import shm_leftovers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data" / "libsvm").resolve()


def libsvm_dir() -> Path:
    """Where tests find LIBSVM files: $DECOMP_DATA, else ../shared/data/libsvm."""
    env = os.environ.get("DECOMP_DATA")
    return Path(env) if env else SHARED_DATA


@pytest.fixture
def data_dir() -> Path:
    d = libsvm_dir()
    if not (d / "a9a.gz").is_file():
        pytest.fail(f"LIBSVM test data not found in {d}: set DECOMP_DATA or keep ../shared")
    return d


_SEGMENTS_BEFORE = pytest.StashKey[set]()  # /dev/shm/mpich_* at the session's start


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SEGMENTS_BEFORE] = shm_leftovers.segments()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the MPICH segments this session's killed ranks left (tests/shm_leftovers.py).
    Not in an xdist worker (the controller does it once every worker has ended) and not under
    MPI (``--with-mpi``: every rank would scan while its peers still run)."""
    config = session.config
    if hasattr(config, "workerinput") or config.getoption("with_mpi", default=False):
        return
    before = config.stash.get(_SEGMENTS_BEFORE, None)
    if before is None:
        return
    removed = shm_leftovers.remove_leftovers(before)
    if removed:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"removed {len(removed)} MPI shared-memory segment(s) that "
                                "killed test ranks left in /dev/shm")

