"""The watchdog's timing against its contract (decomp/comm/watchdog.py), with an injected
clock — no wall-clock luck, so it holds on a loaded machine (issue 25, item 2):

- the thread wakes every interval = min(5 s, timeout / 6), exactly (a factor on the interval,
  either way, changes the waits it asks for);
- a frozen peer is reported at the first wake-up after more than ``timeout`` of silence: never
  before (no false alarm: a peer quiet for just under the timeout is not reported), and no
  later than timeout + one interval after the last heartbeat this rank received
  (timeout + two intervals after the peer froze: its last heartbeat may wait one interval).

The real thread loop runs (``start`` / ``_run``); the clock, the sleep and the network (which
peer's heartbeat has arrived by a wake-up) are simulated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.comm.watchdog import Watchdog


class _Comm:
    """What the constructor asks of a communicator: 3 ranks, this one rank 0."""

    def Get_size(self) -> int:  # noqa: N802 - the mpi4py names
        return 3

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> _Comm:  # noqa: N802
        return self


class _Sim:
    """A simulated run of rank 0's watchdog against peers 1 and 2, which send a heartbeat
    every ``interval`` from ``phase[p]`` on, except in their silent windows ``[a, b)``."""

    def __init__(self, timeout: float, phase: dict[int, float],
                 silent: dict[int, list[tuple[float, float]]], horizon: float) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.alarm: tuple[float, str] | None = None
        self.horizon = horizon
        self.wd = Watchdog(_Comm(), timeout, on_silence=self._alarm, clock=lambda: self.now,
                           sleep=self._sleep)
        self.wd.enabled = True  # whatever thread level this MPI gives: timing is under test
        self.phase, self.silent = phase, silent
        self.last_drain = 0.0
        self.heard_at: dict[int, list[float]] = {1: [], 2: []}
        self.wd._send = lambda: None  # type: ignore[method-assign]
        self.wd._drain = self._drain  # type: ignore[method-assign]

    def _sleep(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return self.now > self.horizon

    def _alarm(self, message: str) -> None:
        self.alarm = (self.now, message)

    def sends(self, p: int, a: float, b: float) -> bool:
        """Did peer p send a heartbeat in (a, b]?"""
        I = self.wd.interval
        k0 = int(np.floor((a - self.phase[p]) / I)) + 1
        for k in range(max(k0, 0), int(np.floor((b - self.phase[p]) / I)) + 1):
            t = self.phase[p] + k * I
            if a < t <= b and not any(lo <= t < hi for lo, hi in self.silent.get(p, [])):
                return True
        return False

    def _drain(self, now: float) -> None:
        for p in (1, 2):
            if self.sends(p, self.last_drain, now):
                self.wd._heard[p] = now
                self.heard_at[p].append(now)
        self.last_drain = now

    def run(self) -> None:
        self.wd.start()
        assert self.wd._thread is not None
        self.wd._thread.join(timeout=30)
        assert not self.wd._thread.is_alive()
        self.wd._thread = None


@pytest.mark.parametrize("timeout", [0.6, 3.0, 12.0, 30.0, 31.0, 120.0])
def test_the_thread_wakes_every_interval(timeout: float) -> None:
    sim = _Sim(timeout, {1: 0.1, 2: 0.2}, {}, horizon=3 * timeout)
    run_interval = min(5.0, timeout / 6)
    assert sim.wd.interval == pytest.approx(run_interval)
    sim.run()
    assert sim.alarm is None, sim.alarm
    assert len(sim.waits) >= 18 and all(w == pytest.approx(run_interval) for w in sim.waits)


def _freeze_cases() -> list[tuple[float, float, float]]:
    out = []
    for timeout in (3.0, 12.0, 60.0):
        I = min(5.0, timeout / 6)
        for phase in np.linspace(0.0, I, 5, endpoint=False):
            for frac in np.linspace(0.0, 1.0, 5, endpoint=False):
                out.append((timeout, float(phase) + 0.013 * I, 4 * timeout + frac * I))
    return out


@pytest.mark.parametrize("timeout,phase,freeze", _freeze_cases())
def test_a_frozen_peer_is_reported_within_timeout_plus_one_interval(
        timeout: float, phase: float, freeze: float) -> None:
    """Peer 2 freezes at ``freeze``; peer 1 goes on. Reported: peer 2 only, once, after more
    than ``timeout`` of silence since its last heartbeat arrived, at most one interval late."""
    sim = _Sim(timeout, {1: 0.37 * phase, 2: phase}, {2: [(freeze, 1e9)]}, horizon=10 * timeout)
    sim.run()
    I = sim.wd.interval
    assert sim.alarm is not None, "a frozen peer was never reported"
    when, message = sim.alarm
    last = sim.heard_at[2][-1]
    assert timeout < when - last <= timeout + I + 1e-9, (when - last, timeout, I)
    assert when - freeze <= timeout + 2 * I + 1e-9
    assert "rank 2" in message and "rank 1" not in message


@pytest.mark.parametrize("timeout", [3.0, 12.0, 60.0])
@pytest.mark.parametrize("gap_frac", [0.5, 0.8])
def test_silence_below_the_timeout_is_no_alarm(timeout: float, gap_frac: float) -> None:
    """A peer whose heartbeats stop for gaps up to timeout − one interval (a busy node, a slow
    network) is never reported, however many such gaps."""
    I = min(5.0, timeout / 6)
    gap = min(gap_frac * timeout, timeout - I)
    gaps = [(k * 2 * timeout + 0.5 * I, k * 2 * timeout + 0.5 * I + gap) for k in range(5)]
    sim = _Sim(timeout, {1: 0.3 * I, 2: 0.6 * I}, {1: gaps, 2: gaps}, horizon=10 * timeout)
    sim.run()
    assert sim.alarm is None, sim.alarm
    heard: list[Any] = sim.heard_at[1]
    assert max(np.diff(heard)) >= gap  # the gaps did happen
