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
``exchange`` / ``swap`` (all posted at once)   1      sends to every neighbour leave together
``gather`` / ``gather_subset*`` (to master)    1      every worker sends to the master directly
``broadcast`` / ``broadcast_bytes``            L      binomial tree from the master
``allgather``                                  L      recursive doubling
``allreduce_sum``                              2L     reduce-scatter + all-gather (Rabenseifner)
``reduce`` (cost model)                        1      a subtree's sum to its parent
``scatter`` (cost model)                       L      binomial scatter from rank 0
``sendrecv`` (cost model: one tree round)      1      every rank's message of the round at once
``tree_sum``                                   2L     reduce-scatter + all-gather rounds
============================================  =====  ==============================================

A split call (``exchange_start`` / ``exchange_finish``, ``gather_start`` / ``gather_finish``)
starts the clock when it is posted and waits at ``finish`` only for what is left of the delay,
so computation done in between hides latency as it would on a real network.
"""

from __future__ import annotations

import math
import time
from typing import Any

from decomp.comm.protocols import COUNTED_CALLS
from decomp.comm.proxy import CallProxy

__all__ = ["DelayedTransport", "rounds"]

_clock = time.perf_counter

#: hops of a call as a function of L = ceil(log2 n)
_HOPS = {"exchange": lambda L: 1, "gather": lambda L: 1, "broadcast": lambda L: L,
         "allgather": lambda L: L, "allreduce": lambda L: 2 * L, "reduce": lambda L: 1,
         "scatter": lambda L: L, "sendrecv": lambda L: 1}


#: the hop kind of each counted call (:data:`~decomp.comm.protocols.COUNTED_CALLS`)
_KIND = {"exchange": "exchange", "exchange_start": "exchange", "exchange_finish": "exchange",
         "swap": "exchange",
         "gather": "gather", "gather_start": "gather", "gather_finish": "gather",
         "gather_subset": "gather", "gather_subset_group": "gather",
         "broadcast": "broadcast", "broadcast_bytes": "broadcast",
         "allgather": "allgather", "allreduce_sum": "allreduce", "allreduce_chunks": "allreduce",
         "tree_sum": "allreduce"}


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


class DelayedTransport(CallProxy):
    """``inner`` (any transport of :mod:`decomp.comm.protocols`) whose counted calls take
    ``rounds(call, n) × delay_s`` longer (module docstring). Every other attribute reads
    through unchanged. Allocates nothing per call.

    inner: the transport; delay_s: the one-way delay of one message hop, seconds (> 0);
    n: ranks taking part (the communicator's size).
    """

    __slots__ = ("_hops", "_started", "delay_s")
    calls = COUNTED_CALLS

    def __init__(self, inner: Any, delay_s: float, n: int) -> None:
        if not (delay_s > 0 and math.isfinite(delay_s)):
            raise ValueError(f"delay_s must be a positive number of seconds, got {delay_s!r}")
        super().__init__(inner)
        self.delay_s = float(delay_s)
        self._hops = {call: rounds(kind, n) * self.delay_s for call, kind in _KIND.items()}
        self._started = 0.0

    def __repr__(self) -> str:
        return f"DelayedTransport({self.inner!r}, delay_s={self.delay_s})"

    def _enter(self, call: str) -> None:
        if call.endswith("_start"):  # the clock starts when the split call is posted
            self._started = _clock()
        elif call.endswith("_finish"):  # wait only for what is left of the delay
            _wait_until(self._started + self._hops[call])

    def _exit(self, call: str, token: None) -> None:
        """Blocking call: the hops' delay comes on top of the call's own time (a message
        that took ``t`` to cross the link arrives ``hops × delay`` later)."""
        if not call.endswith(("_start", "_finish")):
            _wait_until(_clock() + self._hops[call])
