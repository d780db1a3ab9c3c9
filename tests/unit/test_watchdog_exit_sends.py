"""At exit the watchdog's last heartbeat sends are waited for a bounded time only
(decomp/comm/watchdog.py, ``_settle``): a peer already in ``MPI_Finalize`` receives nothing,
so a send that has not completed by then is freed (left to complete, or not, on its own) and
the rank leaves; an unbounded wait held the exit, and the peer's finalize, for ever.

A synchronous send (``Issend``) to this rank on a private communicator that nobody receives
plays the peer that no longer listens."""

from __future__ import annotations

import time

import numpy as np
import pytest

from decomp.comm.watchdog import _settle


def test_a_heartbeat_send_nobody_receives_is_freed_after_the_settle_time() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_SELF.Dup()
    out = np.arange(8, dtype=np.int64)
    reqs = [comm.Issend(out, dest=0, tag=5), MPI.REQUEST_NULL]
    try:
        t0 = time.monotonic()
        _settle(reqs, 0.2)
        took = time.monotonic() - t0
        assert took >= 0.2  # it did wait for the send first
        assert took < 30  # and then let it go (a wait for ever would hang here)
        assert reqs[0] == MPI.REQUEST_NULL, "the pending send was not freed"
    finally:
        got = np.zeros(8, dtype=np.int64)  # the message is still delivered to a receive
        comm.Recv(got, source=0, tag=5)
        assert (got == out).all()
        comm.Free()


def test_completed_heartbeat_sends_are_settled_at_once() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_SELF.Dup()
    got = np.zeros(8, dtype=np.int64)
    recv = comm.Irecv(got, source=0, tag=6)
    reqs = [comm.Isend(np.full(8, 3, dtype=np.int64), dest=0, tag=6)]
    t0 = time.monotonic()
    _settle(reqs, 20.0)
    assert time.monotonic() - t0 < 10
    recv.Wait()
    assert (got == 3).all()
    comm.Free()


class _Two:
    def __init__(self, comm: object) -> None:
        self.comm = comm

    def Get_size(self) -> int:  # noqa: N802 - the mpi4py names
        return 2

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> object:  # noqa: N802
        return self.comm


class _Synchronous:
    """Sends that complete only when received (``Issend``), all to rank 0 (this one)."""

    def __init__(self, comm: object) -> None:
        self.comm = comm

    def Isend(self, buf: np.ndarray, dest: int, tag: int) -> object:  # noqa: N802
        return self.comm.Issend(buf, dest=0, tag=tag)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.comm, name)


def test_at_exit_the_done_heartbeat_is_waited_for_two_seconds_then_let_go() -> None:
    """finish(): the peers are told this rank is done (phase DONE, no call, its counts); a
    peer that does not receive is waited for 2 s (the documented bound), not less, not for
    ever."""
    from mpi4py import MPI

    from decomp.comm.watchdog import _TAG, _WORDS, DONE, PeerState, Watchdog

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        pytest.skip("the watchdog needs MPI_THREAD_MULTIPLE")
    comm = MPI.COMM_SELF.Dup()
    wd = Watchdog(_Two(_Synchronous(comm)), 60.0)
    wd.peers, wd._out = [0], {0: np.zeros(_WORDS, dtype=np.int64)}
    wd.beat(17)
    wd.calls = 4
    wd.enter("opt.step()")
    try:
        t0 = time.monotonic()
        wd.finish()
        took = time.monotonic() - t0
        assert 2.0 <= took < 60, took
        assert wd._reqs == []
    finally:
        got = np.zeros(_WORDS, dtype=np.int64)
        comm.Recv(got, source=0, tag=_TAG)
        wd.comm = None
        comm.Free()
    said = PeerState.unpack(got)
    assert (said.step, said.calls, said.call, said.phase) == (17, 4, None, DONE)
