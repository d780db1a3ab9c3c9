"""Threads per rank (decomp.launch.configure_threads, `decomp run --threads`): the limit it
returns is the one the BLAS pools, OMP_NUM_THREADS (for libraries imported later) and torch
actually get; without --threads, OMP_NUM_THREADS wins, else cores // ranks on this node
(at least 1); bad values are refused. The process's own limits are restored after each test."""

from __future__ import annotations

import os

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from decomp import launch
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


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before_env = os.environ.get("OMP_NUM_THREADS")
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the pools on exit
        yield
    if before_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before_env
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
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert launch.configure_threads(FakeComm(1)) == 2
    assert blas_threads() == {2} and torch.get_num_threads() == 2


@pytest.mark.parametrize("cores,local,want", [(4, 2, 2), (8, 8, 1), (2, 4, 1), (2, 1, 2)])
def test_automatic_limit_is_cores_over_ranks_on_the_node(monkeypatch, cores: int, local: int,
                                                          want: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert launch.configure_threads(FakeComm(local)) == want
    assert blas_threads() == {want} and os.environ["OMP_NUM_THREADS"] == str(want)
    assert torch.get_num_threads() == want


@pytest.mark.parametrize("env", ["0", "abc", ""])
def test_a_useless_omp_num_threads_falls_back_to_the_automatic_limit(monkeypatch,
                                                                     env: str) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert launch.configure_threads(FakeComm(2)) == 2


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_bad_thread_counts_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="--threads must be a whole number >= 1"):
        launch.configure_threads(FakeComm(1), bad)  # type: ignore[arg-type]
