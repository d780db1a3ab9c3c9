"""A DistributedOptimizer lets go of what it holds (decomp.torch.ownership): dropped, its
watchdog thread stops (peers are told it is done); closed (collective), its duplicate
communicators are freed too. A process that builds many optimizers (a test session, a sweep in
one script) keeps no thread per optimizer it no longer has; a dropped one's communicators stay
(freeing is collective), with a ResourceWarning naming opt.close(), and a bound on them refuses
the next optimizer with a message before MPI runs out.

Results are gathered before asserting so a failing check cannot leave another rank blocked.
"""

from __future__ import annotations

import gc
import threading
import warnings

import pytest
import torch
from torch import nn

from decomp.algorithms import GD
from decomp.errors import UsageError
from decomp.torch import ownership
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
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dropped on purpose
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


@pytest.mark.mpi(min_size=2)
def test_a_dropped_optimizer_warns_and_keeps_its_communicators(comm) -> None:
    """Collected without close(): a ResourceWarning naming opt.close(), and its 3 duplicates
    (check, watchdog, stop vote) still count; a closed one frees all 3 and says nothing."""
    gc.collect()
    held0 = ownership.open_comms()[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = _built(comm, step=True)
        opt.should_stop()  # the stop vote's communicator
        counted = ownership.open_comms()[0] - held0
        opt.close()
        closed = ownership.open_comms()[0] - held0
        del opt
        gc.collect()
        quiet = [str(w.message) for w in caught]
        opt = _built(comm, step=True)
        opt.should_stop()
        del opt
        gc.collect()
        said = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        held, _, dropped = ownership.open_comms()
    got = comm.allgather((counted, closed, quiet, said, held - held0, dropped >= 1))
    msg = ("a DistributedOptimizer was dropped without opt.close(): its 3 MPI communicator(s) "
           "stay allocated until the process exits (freeing one is collective: a garbage "
           "collector must not). Call opt.close() on every rank when done with an optimizer")
    assert all(g == (3, 0, [], [msg], 3, True) for g in got), got


@pytest.mark.mpi(min_size=2)
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # dropped on purpose
def test_too_many_unclosed_optimizers_are_refused_before_mpi_runs_out(comm,
                                                                      monkeypatch) -> None:
    """The bound (DECOMP_MAX_OPEN_COMMS) counts the communicators of optimizers not closed,
    dropped or alive; the optimizer past it is refused on every rank with the fix; closing
    one makes room again. (MPICH's own limit, 2046 duplicates, is measured in docs/torch.md.)"""
    gc.collect()
    held0 = ownership.open_comms()[0]
    monkeypatch.setenv(ownership.MAX_OPEN_COMMS, str(held0 + 4))  # two optimizers of 2 each
    for _ in range(2):
        opt = _built(comm)
        del opt
    gc.collect()
    kept = None
    try:
        _built(comm)
        error = ""
    except UsageError as e:
        error = str(e)
    monkeypatch.setenv(ownership.MAX_OPEN_COMMS, str(held0 + 6))
    kept = _built(comm)  # room for one more
    kept.close()
    again = _built(comm)  # closing made room again
    again.close()
    got = comm.allgather(error)
    assert len(set(got)) == 1, got
    assert error.startswith(f"DistributedOptimizer: this process holds {held0 + 4} MPI "
                            f"communicators of "), error
    assert ("optimizer(s) never closed" in error and "this one needs 2 more, past "
            f"DECOMP_MAX_OPEN_COMMS={held0 + 4}" in error
            and error.endswith("Call opt.close() on every rank when you are done with an "
                               "optimizer (or raise DECOMP_MAX_OPEN_COMMS)")), error
