"""The watchdog: a rank that stops answering (frozen, SIGSTOP, lost node) ends the job.

A blocking MPI call cannot time out, so a frozen peer would leave every other rank waiting
forever. Each rank runs one daemon thread that, every ``interval`` seconds, sends its current
step to its watch peers (all other ranks up to 16 ranks, else its two ring neighbours) on a
private duplicate communicator, and drains what its peers sent. A peer heard from last more
than ``timeout_s`` ago is silent: the thread prints which rank(s) and at which step they were
last heard, and this rank's step, then aborts the job (``MPI_Abort``), since the main thread
may be blocked inside a collective with it. The heartbeats need ``MPI_THREAD_MULTIPLE``, which
mpi4py asks for by default; with less the watchdog is off and says so.

Cost: a wake-up and at most 16 eight-byte messages per interval; nothing on the step path but
one integer store (:meth:`Watchdog.beat`).
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


def watch_peers(rank: int, size: int) -> list[int]:
    """The ranks ``rank`` exchanges heartbeats with (sorted, without itself)."""
    if size <= ALL_PEERS_UP_TO:
        return [r for r in range(size) if r != rank]
    return sorted({(rank - 1) % size, (rank + 1) % size})


class Watchdog:
    """Heartbeats over ``comm`` with a silence limit of ``timeout_s`` seconds.

    ``beat(step)`` records this rank's progress (called by the loop after every step);
    ``start()`` / ``stop()`` bracket a run. ``on_silence(message)`` (default: print to stderr
    and ``MPI_Abort`` with exit code 124) is called once from the thread when peers fall silent.

    Contract (tests/unit/test_watchdog_timing.py, with an injected clock): the thread wakes
    every ``interval`` = min(5 s, timeout_s / 6) seconds; a peer is reported at the first
    wake-up at which it has been silent (nothing received from it) for more than
    ``timeout_s`` — so never before ``timeout_s`` of silence, and at most one interval after.
    ``clock`` (default ``time.monotonic``) and ``sleep`` (wait that long or until stopped;
    True = stopped; default the stop event's ``wait``) are there for that test.
    """

    def __init__(self, comm: Any, timeout_s: float, *, interval: float | None = None,
                 on_silence: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], bool] | None = None) -> None:
        from mpi4py import MPI

        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.interval = interval if interval is not None else min(5.0, self.timeout_s / 6)
        self.enabled = comm.Get_size() > 1 and MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self.rank = comm.Get_rank()
        self.peers = watch_peers(self.rank, comm.Get_size())
        self.comm = comm.Dup() if self.enabled else None
        self.step = 0
        self._out = {p: np.zeros(1, dtype=np.int64) for p in self.peers}
        self._in = np.zeros(1, dtype=np.int64)
        self._heard = dict.fromkeys(self.peers, 0.0)
        self._last_step = dict.fromkeys(self.peers, 0)
        self._reqs: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_silence = on_silence or self._abort
        self._clock = clock
        self._sleep = sleep or self._stop.wait

    def beat(self, step: int) -> None:
        """This rank has finished ``step`` (a plain store; the thread sends it)."""
        self.step = step

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
        self._thread.join()
        self._thread = None

    def close(self) -> None:
        """Collective: stop the thread, let every heartbeat in flight arrive, free the
        duplicate communicator."""
        self.stop()
        if self.comm is not None:
            from mpi4py import MPI

            MPI.Request.Waitall(self._reqs)  # 8-byte sends go eagerly: these are complete
            self._reqs = []
            self.comm.Barrier()
            self._drain(self._clock())
            self.comm.Free()
            self.comm = None

    # --- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._sleep(self.interval):
            now = self._clock()
            self._send()
            self._drain(now)
            silent = [p for p in self.peers if now - self._heard[p] > self.timeout_s]
            if silent:
                self._on_silence(self._message(silent, now))
                return

    def _send(self) -> None:
        from mpi4py import MPI

        assert self.comm is not None
        if self._reqs:  # the previous round's sends must be done before reusing the buffers
            done = MPI.Request.Testall(self._reqs)
            if not done:
                return
        self._reqs = []
        for p, buf in self._out.items():
            buf[0] = self.step
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
                self._last_step[src] = int(self._in[0])

    def _message(self, silent: list[int], now: float) -> str:
        who = ", ".join(f"rank {p} (silent {now - self._heard[p]:.0f} s, last heard at step "
                        f"{self._last_step[p]})" for p in silent)
        return (f"[rank {self.rank}] ERROR: watchdog: no sign of life from {who} for more "
                f"than run.comm_timeout_s = {self.timeout_s:g} s while this rank is at step "
                f"{self.step}; a frozen or lost rank — ending the job")

    def _abort(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        try:
            assert self.comm is not None
            self.comm.Abort(124)
        finally:  # Abort does not return; if it ever does, leave anyway
            os._exit(124)
