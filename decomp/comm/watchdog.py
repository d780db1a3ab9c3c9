"""The watchdog: a rank that stops answering (frozen, SIGSTOP, lost node), or ranks that are all
alive but stuck in different collective calls, end the job instead of hanging it.

A blocking MPI call cannot time out, so a frozen peer, or a peer that skipped (or added) a
collective the others are in, would leave every other rank waiting forever. Each rank runs one
daemon thread that, every ``interval`` seconds, sends its state to its watch peers (all other
ranks up to 16 ranks, else its two ring neighbours) on a private duplicate communicator, and
drains what its peers sent. The state is 64 bytes: the last step this rank finished, how many
watched calls it has completed, the call it is in (its name, or none) and its phase
(starting, ready, done). The thread ends the job (prints why, then ``MPI_Abort`` with 124,
since the main thread may be blocked inside a collective) on the first of:

- **silence**: a peer heard from last more than ``timeout_s`` ago (``startup_s`` while that
  peer has not yet said it is ready: importing, loading data or compiling may hold the
  interpreter for long on a loaded machine, and must not read as a frozen rank);
- **no progress**: this rank has been inside one watched call (:meth:`Watchdog.enter` ..
  :meth:`Watchdog.leave`) for more than ``timeout_s`` while every peer is alive (heard within
  the last two intervals; a peer quiet for longer is left to the silence rule) — counted
  from when every rank was ready, so a slow start does not count against the first step. The
  message names each rank's call and step, and the ranks that are not in the call most ranks
  are in;
- **a peer that finished** (:meth:`Watchdog.finish`, at exit) before reaching the call this
  rank is in: that call can never complete (one extra batch on one rank), so at once.

When every peer (two or more) falls silent at once, this rank waits twice the limit before
blaming them: under MPICH 4, a rank whose main thread is blocked outside MPI (a hung file
system) while a nonblocking collective of its own is pending (the stop vote) stops receiving
heartbeats, though its peers are alive; they hear it, and their progress rule names it first.

The heartbeats need ``MPI_THREAD_MULTIPLE``, which mpi4py asks for by default; with less the
watchdog is off and says so.

Cost: a wake-up and at most 16 64-byte messages per interval; on the step path only a few
attribute stores (:meth:`Watchdog.beat`, :meth:`Watchdog.enter`, :meth:`Watchdog.leave`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_TAG = 7171
#: up to this world size every rank watches every other; above it, its two ring neighbours
ALL_PEERS_UP_TO = 16
#: a rank's phase, sent with every heartbeat
STARTING, READY, DONE = 0, 1, 2
_NAME = 32  # bytes of the call's name in a heartbeat
_WORDS = 4 + _NAME // 8


def watch_peers(rank: int, size: int) -> list[int]:
    """The ranks ``rank`` exchanges heartbeats with (sorted, without itself)."""
    if size <= ALL_PEERS_UP_TO:
        return [r for r in range(size) if r != rank]
    return sorted({(rank - 1) % size, (rank + 1) % size})


def _pack(buf: np.ndarray, step: int, calls: int, call: str | None, phase: int) -> None:
    buf[0], buf[1], buf[2], buf[3] = step, calls, call is not None, phase
    name = (call or "").encode()[:_NAME].ljust(_NAME, b"\0")
    buf[4:] = np.frombuffer(name, dtype=np.int64)


class PeerState:
    """What a rank last said about itself."""

    __slots__ = ("step", "calls", "call", "phase")

    def __init__(self, step: int = 0, calls: int = 0, call: str | None = None,
                 phase: int = STARTING) -> None:
        self.step, self.calls, self.call, self.phase = step, calls, call, phase

    @classmethod
    def unpack(cls, buf: np.ndarray) -> PeerState:
        name = buf[4:].tobytes().rstrip(b"\0").decode(errors="replace")
        return cls(int(buf[0]), int(buf[1]), name if buf[2] else None, int(buf[3]))

    def where(self) -> str:
        if self.phase == DONE:
            return f"finished (after {self.calls} calls, step {self.step})"
        if self.call is None:
            return (f"in no collective call (after {self.calls} calls, step {self.step}: "
                    f"working on its own)" if self.phase == READY else
                    "still starting (before its first call)")
        return f"in {self.call} (its call {self.calls + 1}, after step {self.step})"


class Watchdog:
    """Heartbeats over ``comm`` with a silence limit of ``timeout_s`` seconds.

    ``beat(step)`` records this rank's progress (called by the loop after every step);
    ``enter(call)`` / ``leave()`` bracket a watched collective call (progress rule);
    ``ready()`` says start-up is over (the first call's deadline counts from when every rank
    said so); ``finish()`` tells the peers this rank is done; ``start()`` / ``stop()``
    bracket a run. ``on_silence(message)`` (default: print to stderr and ``MPI_Abort`` with
    exit code 124) is called once from the thread when it ends the job, whatever the rule.

    setting: how the message names the limit (``run.comm_timeout_s`` for ``decomp run``,
    ``comm_timeout`` for :class:`decomp.torch.DistributedOptimizer`). startup_s: the
    silence limit for a peer that has not said it is ready (None: ``timeout_s``).

    Contract (tests/unit/test_watchdog_timing.py, with an injected clock): the thread wakes
    every ``interval`` = min(5 s, timeout_s / 6) seconds; a peer is reported at the first
    wake-up at which it has been silent (nothing received from it) for more than
    ``timeout_s`` — so never before ``timeout_s`` of silence, and at most one interval after;
    a call that has not completed is reported at the first wake-up more than ``timeout_s``
    after it was entered and every rank was ready (tests/unit/test_watchdog_progress.py).
    ``clock`` (default ``time.monotonic``) and ``sleep`` (wait that long or until stopped;
    True = stopped; default the stop event's ``wait``) are there for those tests.
    """

    def __init__(self, comm: Any, timeout_s: float, *, interval: float | None = None,
                 on_silence: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], bool] | None = None,
                 setting: str = "run.comm_timeout_s", startup_s: float | None = None) -> None:
        from mpi4py import MPI

        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.startup_s = max(self.timeout_s, float(startup_s or 0.0))
        self.setting = setting
        self.interval = interval if interval is not None else min(5.0, self.timeout_s / 6)
        self.enabled = comm.Get_size() > 1 and MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self.rank = comm.Get_rank()
        self.peers = watch_peers(self.rank, comm.Get_size())
        self.comm = comm.Dup() if self.enabled else None
        self.step = 0
        self.calls = 0  # watched calls completed
        self.call: str | None = None  # the watched call this rank is in
        self.entered = 0.0  # when it entered it (clock)
        self.phase = STARTING
        self._out = {p: np.zeros(_WORDS, dtype=np.int64) for p in self.peers}
        self._in = np.zeros(_WORDS, dtype=np.int64)
        self._heard = dict.fromkeys(self.peers, 0.0)
        self._last_step = dict.fromkeys(self.peers, 0)
        self._peer = {p: PeerState() for p in self.peers}
        self._all_ready_at: float | None = None
        self._blamed: set[int] = set()  # the silent ranks the verdict names
        self._reqs: list[Any] = []
        self._stop = threading.Event()
        self._wake = threading.Event()  # ready() sends the news at once, not an interval later
        self._thread: threading.Thread | None = None
        self._on_silence = on_silence or self._abort
        self._clock = clock
        self._sleep = sleep or self._wait

    def beat(self, step: int) -> None:
        """This rank has finished ``step`` (a plain store; the thread sends it)."""
        self.step = step

    def ready(self) -> None:
        """Start-up is over on this rank (imports, data, compilation). The thread sends it
        at once: a peer that has not heard it grants this rank the start-up limit, so a rank
        frozen within one interval of its first step would otherwise be reported only after
        ``startup_s``."""
        if self.phase == STARTING:
            self.phase = READY
            self._wake.set()

    def enter(self, call: str) -> None:
        """This rank enters the watched collective ``call`` (e.g. ``"opt.step()"``)."""
        self.entered = self._clock()
        self.call = call

    def leave(self) -> None:
        """The call entered last has completed."""
        self.calls += 1
        self.call = None

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        now = self._clock()
        self._heard = dict.fromkeys(self.peers, now)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="decomp-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread; the duplicate communicator stays until :meth:`close`."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._thread = None

    def finish(self) -> None:
        """Not collective (this rank is leaving; e.g. at exit): stop the thread and tell every
        peer this rank is done, with the calls it completed, so a peer still waiting in a
        call this rank never made ends the job at once."""
        self.stop()
        if self.comm is None:
            return
        _settle(self._reqs)
        self.phase = DONE
        self.call = None
        self._reqs = []
        self._send()
        _settle(self._reqs)
        self._reqs = []

    def close(self) -> None:
        """Collective: stop the thread, let every heartbeat in flight arrive, free the
        duplicate communicator."""
        self.stop()
        if self.comm is not None:
            from mpi4py import MPI

            MPI.Request.Waitall(self._reqs)  # eager sends: these are complete
            self._reqs = []
            self.comm.Barrier()
            self._drain(self._clock())
            self.comm.Free()
            self.comm = None

    # --- the thread -------------------------------------------------------------------------
    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until woken (stop, ready); True once stopped."""
        self._wake.wait(seconds)
        self._wake.clear()
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._sleep(self.interval):
            now = self._clock()
            self._send()
            self._drain(now)
            message = self._verdict(now)
            if message:
                self._on_silence(message)
                return

    def _limit(self, p: int) -> float:
        return self.timeout_s if self._peer[p].phase != STARTING else self.startup_s

    def _verdict(self, now: float) -> str:
        """Why the job must end now ("" = it need not)."""
        alive = [p for p in self.peers if self._peer[p].phase != DONE]
        silent = [p for p in alive if now - self._heard[p] > self._limit(p)]
        if len(silent) > 1 and silent == alive:  # all at once: more likely this rank's own
            silent = [p for p in alive  # reception stalls (see the module doc): twice the
                      if now - self._heard[p] > 2 * self._limit(p)]  # limit, so theirs first
        if silent:
            self._blamed = set(silent)
            return self._message(silent, now)
        if self._all_ready_at is None and self.phase != STARTING and all(
                self._peer[p].phase != STARTING for p in self.peers):
            self._all_ready_at = now
        call = self.call
        if call is None:
            return ""
        index = self.calls + 1
        gone = [p for p in self.peers if self._peer[p].phase == DONE
                and self._peer[p].calls < index]
        if gone:
            return self._stuck(now, f"rank(s) {_ranks(gone)} finished without making this call")
        if self._all_ready_at is None:  # a slow start does not count against a call
            return ""
        stale = [p for p in alive if now - self._heard[p] > 2 * self.interval]
        if stale:  # maybe frozen: the silence rule decides (within timeout_s)
            return ""
        if now - max(self.entered, self._all_ready_at) > self.timeout_s:
            return self._stuck(now, f"no watched call completed for more than {self.setting}"
                                    f" = {self.timeout_s:g} s while every rank is alive")
        return ""

    def _stuck(self, now: float, why: str) -> str:
        states = {self.rank: PeerState(self.step, self.calls, self.call, self.phase)}
        states.update(self._peer)
        groups: dict[str, list[int]] = {}
        for r in sorted(states):
            groups.setdefault(states[r].where(), []).append(r)
        table = "; ".join(f"rank{'s' if len(rs) > 1 else ''} {_ranks(rs)} "
                          f"{where}" for where, rs in groups.items())
        mine = states[self.rank].where()
        others = [r for r in sorted(states) if states[r].where() != mine]
        hint = (f"rank(s) {_ranks(others)} are not in the call this rank is in: every rank "
                f"must make the same collective calls in the same order (e.g. `with "
                f"opt.averaged():` on every rank, not only on rank 0; the same number of "
                f"batches on every rank)" if others else
                "every rank is in the same call, which does not complete: a rank blocked "
                "inside it (in a collective of its own, a hung file system, a lock) or a "
                "lost network")
        return (f"[rank {self.rank}] ERROR: watchdog: {why} — {table}; {hint}; ending the "
                f"job")

    def _send(self) -> None:
        from mpi4py import MPI

        assert self.comm is not None
        if self._reqs:  # the previous round's sends must be done before reusing the buffers
            done = MPI.Request.Testall(self._reqs)
            if not done:
                return
        self._reqs = []
        for p, buf in self._out.items():
            _pack(buf, self.step, self.calls, self.call, self.phase)
            self._reqs.append(self.comm.Isend(buf, dest=p, tag=_TAG))

    def _drain(self, now: float) -> None:
        from mpi4py import MPI

        assert self.comm is not None
        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG, status=status):
            src = status.Get_source()
            self.comm.Recv(self._in, source=src, tag=_TAG)
            if src in self._heard:
                self._heard[src] = now
                self._peer[src] = PeerState.unpack(self._in)
                self._last_step[src] = self._peer[src].step

    def _message(self, silent: list[int], now: float) -> str:
        def last(p: int) -> str:
            call = self._peer[p].call
            return f"{self._last_step[p]}" + ("" if call is None else f" in {call}")

        who = ", ".join(f"rank {p} (silent {now - self._heard[p]:.0f} s, last heard at step "
                        f"{last(p)})" for p in silent)
        return (f"[rank {self.rank}] ERROR: watchdog: no sign of life from {who} for more "
                f"than {self.setting} = {self.timeout_s:g} s while this rank is at step "
                f"{self.step}; a frozen or lost rank — ending the job")

    def _abort(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        # One rank aborts for all: every live rank reaches the same verdict within an
        # interval, and several MPI_Abort at once make the launcher's exit status whichever
        # process it reaps first (124, or 9/11 of a rank it killed). The lowest live rank not
        # blamed aborts at once; the others only if the job is still there a moment later.
        if any(p < self.rank for p in self.peers
               if p not in self._blamed and self._peer[p].phase != DONE):
            time.sleep(max(2.0, 2 * self.interval))
        try:
            assert self.comm is not None
            self.comm.Abort(124)
        finally:  # Abort does not return; if it ever does, leave anyway
            os._exit(124)


def _settle(reqs: list[Any], seconds: float = 2.0) -> None:
    """Wait up to ``seconds`` for heartbeat sends, then let them go: at exit a peer may
    already be in ``MPI_Finalize`` and receive nothing more, and with many watchdogs in one
    process (a test session's optimizers) the 64-byte eager sends fill the shared-memory
    queue, so an unbounded ``Waitall`` held this rank's exit, and the peer's finalize, for ever."""
    from mpi4py import MPI

    deadline = time.monotonic() + seconds
    while reqs and not MPI.Request.Testall(reqs):
        if time.monotonic() > deadline:
            for req in reqs:
                if req != MPI.REQUEST_NULL:
                    req.Free()  # legal on an active send: it completes, or not, on its own
            return
        time.sleep(0.001)


def _ranks(ranks: list[int]) -> str:
    """``0, 2, 3`` (or ``1-7`` for a run of consecutive ranks)."""
    if len(ranks) > 2 and ranks[-1] - ranks[0] == len(ranks) - 1:
        return f"{ranks[0]}-{ranks[-1]}"
    return ", ".join(map(str, ranks))
