"""Emulated network latency: a per-message delay injected around the transport's calls.

On one machine (or the emulated cluster of ``jobs/local/emulate/``, whose links ``tbf`` shapes
to a rate but cannot delay: there is no ``netem``) messages arrive in microseconds. To study
methods on a high-latency network, :class:`DelayedTransport` makes every communication call
take ``rounds × delay`` longer, where ``rounds`` is the number of dependent message
hops of the call (:func:`rounds`): the time a real network's propagation delay would add.
This is **emulation**: the bytes still cross MPI at the machine's (or the shaped link's)
speed, and the delay is added on top, on every rank alike. Off by default
(``[network] delay_ms = 0``).

Message hops per call (``n`` ranks, ``L = ceil(log2 n)``), the same table the cost model
(:mod:`decomp.netmodel`) uses for its α term:

============================================  =====  ==============================================
call                                           hops   why
============================================  =====  ==============================================
``exchange`` (neighbours, all posted at once)  1      sends to every neighbour leave together
``gather`` / ``gather_subset*`` (to master)    1      every worker sends to the master directly
``broadcast`` / ``broadcast_bytes``            L      binomial tree from the master
``allgather``                                  L      recursive doubling
``allreduce_sum``                              2L     reduce-scatter + all-gather (Rabenseifner)
============================================  =====  ==============================================

A split call (``exchange_start`` / ``exchange_finish``, ``gather_start`` / ``gather_finish``)
starts the clock when it is posted and waits at ``finish`` only for what is left of the delay,
so computation done in between hides latency as it would on a real network.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

__all__ = ["DelayedTransport", "rounds"]

_clock = time.perf_counter

#: hops of a call as a function of L = ceil(log2 n)
_HOPS = {"exchange": lambda L: 1, "gather": lambda L: 1, "broadcast": lambda L: L,
         "allgather": lambda L: L, "allreduce": lambda L: 2 * L}


def rounds(call: str, n: int) -> int:
    """Dependent message hops of one ``call`` (``exchange``, ``gather``, ``broadcast``,
    ``allgather``, ``allreduce``) among ``n`` ranks (0 when ``n`` is 1: nothing is sent)."""
    if n <= 1:
        return 0
    return _HOPS[call](math.ceil(math.log2(n)))


def _wait_until(deadline: float) -> None:
    """Sleep to ``deadline`` (perf_counter seconds); the last 0.2 ms spin (sleep overshoots)."""
    left = deadline - _clock()
    if left > 2e-4:
        time.sleep(left - 2e-4)
    while _clock() < deadline:
        pass


class DelayedTransport:
    """``inner`` (a Neighborhood, TimeVaryingNeighborhood or MasterWorker) whose calls take
    ``rounds(call, n) × delay_s`` longer (module docstring). Every other attribute reads
    through unchanged. Allocates nothing per call.

    inner: the transport; delay_s: the one-way delay of one message hop, seconds (> 0);
    n: ranks taking part (the communicator's size).
    """

    __slots__ = ("_hops", "_started", "delay_s", "inner")

    def __init__(self, inner: Any, delay_s: float, n: int) -> None:
        if not (delay_s > 0 and math.isfinite(delay_s)):
            raise ValueError(f"delay_s must be a positive number of seconds, got {delay_s!r}")
        self.inner = inner
        self.delay_s = float(delay_s)
        self._hops = {call: rounds(call, n) * self.delay_s for call in _HOPS}
        self._started = 0.0

    def __getattr__(self, name: str) -> Any:
        if name in DelayedTransport.__slots__:  # not yet set (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"DelayedTransport({self.inner!r}, delay_s={self.delay_s})"

    def _after(self, call: str) -> None:
        """Blocking call: the hops' delay comes on top of the call's own time (a message
        that took ``t`` to cross the link arrives ``hops × delay`` later)."""
        _wait_until(_clock() + self._hops[call])

    # --- decentralized ------------------------------------------------------------------------
    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        out = self.inner.exchange(payload, nbytes)
        self._after("exchange")
        return out

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        self._started = _clock()
        self.inner.exchange_start(payload, nbytes)

    def exchange_finish(self) -> dict[int, np.ndarray]:
        _wait_until(self._started + self._hops["exchange"])
        return self.inner.exchange_finish()

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        out = self.inner.allgather(payload, nbytes)
        self._after("allgather")
        return out

    def allreduce_sum(self, vec: np.ndarray) -> None:
        self.inner.allreduce_sum(vec)
        self._after("allreduce")

    # --- master-worker ------------------------------------------------------------------------
    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        out = self.inner.gather(payload, nbytes)
        self._after("gather")
        return out

    def gather_subset(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner.gather_subset(*args, **kwargs)
        self._after("gather")
        return out

    def gather_subset_group(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner.gather_subset_group(*args, **kwargs)
        self._after("gather")
        return out

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        self._started = _clock()
        self.inner.gather_start(payload, nbytes)

    def gather_finish(self) -> list[np.ndarray] | None:
        _wait_until(self._started + self._hops["gather"])
        return self.inner.gather_finish()

    def broadcast(self, x: np.ndarray) -> None:
        self.inner.broadcast(x)
        self._after("broadcast")

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        out = self.inner.broadcast_bytes(payload)
        self._after("broadcast")
        return out
