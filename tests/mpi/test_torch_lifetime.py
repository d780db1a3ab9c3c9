"""A DistributedOptimizer lets go of what it holds (decomp.torch.ownership): dropped, its
watchdog thread stops (peers are told it is done); closed (collective), its duplicate
communicators are freed too. A process that builds many optimizers (a test session, a sweep in
one script) keeps no thread per optimizer it no longer has.

Results are gathered before asserting so a failing check cannot leave another rank blocked.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from torch import nn

from decomp.algorithms import GD
from decomp.torch.optimizer import DistributedOptimizer

BUILT = 50


def _watchdogs() -> int:
    return sum(t.name == "decomp-watchdog" for t in threading.enumerate())


def _built(comm, step: bool = False) -> DistributedOptimizer:
    model = nn.Linear(4, 2)
    opt = DistributedOptimizer(None, model, GD(), comm=comm, lr=0.1, comm_timeout=60)
    if step:
        opt.zero_grad()
        model(torch.ones(3, 4)).sum().backward()
        opt.step()
    return opt


@pytest.mark.mpi(min_size=2)
def test_dropped_optimizers_stop_their_watchdog_threads(comm) -> None:
    gc.collect()
    before = _watchdogs()
    kept = _built(comm, step=True)  # one alive: its thread stays
    for i in range(BUILT):
        opt = _built(comm, step=i == 0)
        del opt
    gc.collect()  # an optimizer is in reference cycles (torch's hooks): collected here
    after = _watchdogs()
    alive = kept._guard.watchdog is not None and kept._guard.watchdog._thread is not None
    kept.close()
    closed = _watchdogs()
    got = comm.allgather((before, after, alive, closed))
    assert all(g == (before, before + 1, True, before) for g in got), got


@pytest.mark.mpi(min_size=2)
def test_closed_optimizers_free_their_communicators(comm) -> None:
    before = _watchdogs()
    states = []
    for _ in range(5):
        opt = _built(comm, step=True)
        opt.close()
        opt.close()  # idempotent
        g = opt._guard
        states.append((g.watchdog is None, g.comm is None))
    got = comm.allgather((before, _watchdogs(), set(states)))
    assert all(g == (before, before, {(True, True)}) for g in got), got
