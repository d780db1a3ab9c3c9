"""Threads per rank (decomp.threads, `decomp run --threads`): the limit configure_threads
returns is the one the BLAS pools, the thread variables (for libraries imported later) and
torch actually get; without --threads, OMP_NUM_THREADS wins, else cores // ranks on this node
(at least 1); bad values are refused. The process's own limits are restored after each test.
preset_threads (before any import) reads the launcher's ranks per node; in a fresh interpreter,
torch imported after configure_threads and numba's pool get the count too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from decomp import launch, threads
from decomp.errors import ConfigError


class FakeComm:
    """A communicator whose shared-memory split reports ``local`` ranks on this node."""

    def __init__(self, local: int) -> None:
        self.local = local

    def Split_type(self, *_: object, **__: object) -> FakeComm:  # noqa: N802 (MPI's name)
        return self

    def Get_size(self) -> int:  # noqa: N802
        return self.local

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Free(self) -> None:  # noqa: N802
        pass

    def allgather(self, value: object) -> list[object]:  # every local rank: the same host/mask
        return [value] * self.local


def cores(monkeypatch, n: int) -> None:
    """This process may run on ``n`` CPUs."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before_env = {name: os.environ.get(name) for name in threads.THREAD_VARS}
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the pools on exit
        yield
    for name, value in before_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    torch.set_num_threads(before_torch)


def blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.mark.parametrize("n", [1, 2])
def test_explicit_threads_reach_blas_env_and_torch(n: int) -> None:
    assert launch.configure_threads(FakeComm(4), n) == n
    assert blas_threads() == {n}  # numpy's BLAS (threadpoolctl sees it in this process)
    assert os.environ["OMP_NUM_THREADS"] == str(n)
    assert torch.get_num_threads() == n


def test_omp_num_threads_wins_when_no_threads_given(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    cores(monkeypatch, 64)
    assert launch.configure_threads(FakeComm(1)) == 2
    assert blas_threads() == {2} and torch.get_num_threads() == 2


@pytest.mark.parametrize("cores,local,want", [(4, 2, 2), (8, 8, 1), (2, 4, 1), (2, 1, 2)])
def test_automatic_limit_is_cores_over_ranks_on_the_node(monkeypatch, cores: int, local: int,
                                                          want: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert launch.configure_threads(FakeComm(local)) == want
    assert blas_threads() == {want} and os.environ["OMP_NUM_THREADS"] == str(want)
    assert torch.get_num_threads() == want


@pytest.mark.parametrize("env", ["0", "abc", ""])
def test_a_useless_omp_num_threads_falls_back_to_the_automatic_limit(monkeypatch,
                                                                     env: str) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    cores(monkeypatch, 4)
    assert launch.configure_threads(FakeComm(2)) == 2


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_bad_thread_counts_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="--threads must be a whole number >= 1"):
        launch.configure_threads(FakeComm(1), bad)  # type: ignore[arg-type]


LAUNCHERS = [({"MPI_LOCALNRANKS": "4"}, 2), ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 4),
             ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),8", "SLURM_NODEID": "3"}, 1),
             ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),8", "SLURM_NODEID": "1"}, 4)]


@pytest.mark.parametrize("env,want", LAUNCHERS)
def test_preset_divides_the_cores_by_the_launcher_s_ranks_on_the_node(monkeypatch, env, want):
    cores(monkeypatch, 8)
    assert threads.preset_threads(env) == want
    assert {name: env[name] for name in threads.THREAD_VARS} == \
        dict.fromkeys(threads.THREAD_VARS, str(want))


def test_preset_leaves_the_user_s_choice_and_an_unknown_launch_alone(monkeypatch) -> None:
    cores(monkeypatch, 8)
    env = {"MPI_LOCALNRANKS": "4", "OMP_NUM_THREADS": "3"}
    assert threads.preset_threads(env) is None and env["OMP_NUM_THREADS"] == "3"
    assert "NUMBA_NUM_THREADS" not in env
    env = {"NUMBA_NUM_THREADS": "1"}  # no launcher variable: nothing is known
    assert threads.preset_threads(env) is None and env == {"NUMBA_NUM_THREADS": "1"}
    env = {"MPI_LOCALNRANKS": "2", "NUMBA_NUM_THREADS": "1"}  # a variable set by the user stays
    assert threads.preset_threads(env) == 4 and env["NUMBA_NUM_THREADS"] == "1"
    env = {"OMP_NUM_THREADS": "1"}  # --threads wins over everything
    assert threads.preset_threads(env, threads=3) == 3
    assert set(env) == set(threads.THREAD_VARS) and set(env.values()) == {"3"}


FRESH = """
import os, sys
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.pop(name, None)
import numpy, numba                  # their pools are sized before decomp is asked
from decomp.threads import apply_threads, thread_report
apply_threads(3)
assert "torch" not in sys.modules
import torch                         # after: the hook gives it 3 intra- and inter-op threads
print(thread_report())
"""


def test_a_fresh_process_gets_the_count_in_torch_blas_and_numba() -> None:
    """The pools a fresh rank starts (numpy and numba imported first, torch after) all get the
    count, including torch's inter-op pool, which can only be set before its first use."""
    done = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    got = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 (a dict literal we printed)
    assert got["torch"] == (3, 3) and got["numba"] == 3
    assert {k for _, k in got["pools"]} == {3}, got["pools"]
    assert {got[name] for name in threads.THREAD_VARS} == {"3"}
