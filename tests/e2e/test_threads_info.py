"""`mpiexec -n 2 decomp info` in a shell without thread variables: every rank reports what its
pools got, and each is max(1, cores // 2) — torch's intra- and inter-op pools, every
BLAS/OpenMP library threadpoolctl sees and numba — the rule computed here from this machine's
affinity mask (the two ranks share it). With OMP_NUM_THREADS=3 set by the user, every pool
gets 3 instead (OpenBLAS: at most the cores)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from decomp.threads import THREAD_VARS
from tests.e2e.conftest import _tool

LINE = re.compile(r"^  rank (\d+) +(\S+): (\d+) rank\(s\) on (\d+) core\(s\) -> (\d+): torch "
                  r"intra/inter-op (\d+)/(\d+), BLAS/OpenMP (.*), numba (\d+)$")


def info(env_threads: str | None) -> list[tuple[str, ...]]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if env_threads is not None:
        env["OMP_NUM_THREADS"] = env_threads
    done = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("decomp"), "info"],
                          capture_output=True, text=True, timeout=400, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [m.groups() for m in map(LINE.match, done.stdout.splitlines()) if m]
    assert len(rows) == 2, done.stdout
    return rows


@pytest.mark.parametrize("user", [None, "3"])
def test_every_rank_s_pools_follow_the_rule(user: str | None) -> None:
    cores = len(os.sched_getaffinity(0))
    want = int(user) if user else max(1, cores // 2)
    for rank, (r, _host, ranks, seen_cores, n, intra, inter, pools, numba) in enumerate(
            info(user)):
        assert (int(r), int(ranks), int(seen_cores)) == (rank, 2, cores)
        assert int(n) == int(intra) == int(inter) == int(numba) == want
        for pool in pools.split(", "):  # OpenBLAS never starts more threads than cores
            api, size = pool.rsplit(" ", 1)
            assert int(size) == (min(want, cores) if api == "openblas" else want), pools
