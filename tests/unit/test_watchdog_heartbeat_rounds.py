"""The watchdog's heartbeat rounds over a real communicator (decomp/comm/watchdog.py,
``_send`` / ``_drain``), on one process: a rank watching itself through a private duplicate
of COMM_SELF. A round sends this rank's step, completed calls, current call and phase to each
watched peer; draining records, per peer heard, when it was heard and what it said; a message
from a rank that is not watched is consumed and ignored. A round waits for the previous
round's sends: while one is still in flight (a peer that does not receive) the next round
posts nothing, so a buffer is never rewritten under a send and sends never pile up."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.comm.watchdog import _TAG, _WORDS, READY, PeerState, Watchdog


class _Two:
    """The constructor's view: 2 ranks (the watchdog is on), this one rank 0."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def Get_size(self) -> int:  # noqa: N802 - the mpi4py names
        return 2

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> Any:  # noqa: N802
        return self.comm


class _Synchronous:
    """A communicator whose sends complete only when received (``Issend``), to rank 0."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.sent: list[np.ndarray] = []

    def Isend(self, buf: np.ndarray, dest: int, tag: int) -> Any:  # noqa: N802
        self.sent.append(buf.copy())
        return self.comm.Issend(buf, dest=0, tag=tag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)


def _self_watching(comm: Any) -> Watchdog:
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        pytest.skip("the watchdog needs MPI_THREAD_MULTIPLE")
    wd = Watchdog(_Two(comm), 60.0)
    wd.peers = [0]  # this rank is its own peer: its heartbeats come back to it
    wd._out = {0: np.zeros(_WORDS, dtype=np.int64)}
    wd._heard, wd._last_step, wd._peer = {0: 0.0}, {0: 0}, {0: PeerState()}
    return wd


def test_a_heartbeat_round_carries_this_ranks_state_to_its_peers() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_SELF.Dup()
    wd = _self_watching(comm)
    try:
        wd.ready()
        wd.beat(41)
        wd.calls = 2
        wd.enter("opt.step()")
        wd._send()
        wd._drain(12.5)
        MPI.Request.Waitall(wd._reqs)
        got = wd._peer[0]
        assert (got.step, got.calls, got.call, got.phase) == (41, 2, "opt.step()", READY)
        assert wd._heard[0] == 12.5 and wd._last_step[0] == 41
        wd.leave()
        wd.beat(42)
        wd._send()
        wd._drain(13.0)
        MPI.Request.Waitall(wd._reqs)
        got = wd._peer[0]
        assert (got.step, got.calls, got.call) == (42, 3, None) and wd._heard[0] == 13.0
        wd._drain(20.0)  # nothing new arrived: when it was last heard stays
        assert wd._heard[0] == 13.0
    finally:
        wd.comm = None
        comm.Free()


def test_a_message_from_a_rank_not_watched_is_consumed_and_ignored() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_SELF.Dup()
    wd = _self_watching(comm)
    wd._heard, wd._last_step, wd._peer = {}, {}, {}  # rank 0 not among the watched
    try:
        req = comm.Isend(np.full(_WORDS, 7, dtype=np.int64), dest=0, tag=_TAG)
        wd._drain(5.0)
        req.Wait()
        assert wd._heard == {} and wd._peer == {}
        assert not comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG)  # consumed
    finally:
        wd.comm = None
        comm.Free()


def test_a_round_is_skipped_while_the_previous_rounds_send_is_in_flight() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_SELF.Dup()
    sync = _Synchronous(comm)
    wd = _self_watching(sync)
    try:
        wd.beat(1)
        wd._send()
        first = list(wd._reqs)
        wd.beat(2)
        wd._send()  # the first send is not received yet: nothing is posted
        wd._send()
        assert len(sync.sent) == 1 and wd._reqs == first
        got = np.zeros(_WORDS, dtype=np.int64)
        comm.Recv(got, source=0, tag=_TAG)
        assert PeerState.unpack(got).step == 1  # the buffer was not rewritten in flight
        wd._send()  # now the round goes, with the newer step
        assert len(sync.sent) == 2 and PeerState.unpack(sync.sent[1]).step == 2
        comm.Recv(got, source=0, tag=_TAG)
        MPI.Request.Waitall(wd._reqs)
        assert PeerState.unpack(got).step == 2
    finally:
        wd.comm = None
        comm.Free()
