"""The watchdog's progress, finished-peer and start-up rules (decomp/comm/watchdog.py), with an
injected clock as tests/unit/test_watchdog_timing.py: the real thread loop runs, the clock, the
sleep and what the peers say (their phase, call and calls completed) are simulated.

- progress: a watched call not completed more than ``timeout`` after it was entered (and
  after every rank was ready) is reported at the first wake-up after that, never before, with
  every rank's call; calls that complete in time never are; a peer that is still starting
  holds the deadline back; a peer not heard lately (maybe frozen) is left to the silence rule;
- a peer that finished before making this rank's call is reported at the next wake-up; one
  that finished after making it is not;
- start-up: a peer that has not said it is ready may be silent up to ``startup_s``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pytest

from decomp.comm.watchdog import DONE, READY, STARTING, PeerState, Watchdog, _pack
from decomp.config import RunConfig


class _Comm:
    def Get_size(self) -> int:  # noqa: N802 - the mpi4py names
        return 4

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> _Comm:  # noqa: N802
        return self


class _Sim:
    """Rank 0's watchdog; ``peers(now)`` gives each peer's state (None: nothing arrives)."""

    def __init__(self, timeout: float, peers: Callable[[float], dict[int, PeerState | None]],
                 horizon: float, startup: float | None = None,
                 on_wake: Callable[[_Sim], None] | None = None) -> None:
        self.now = 0.0
        self.alarm: tuple[float, str] | None = None
        self.horizon = horizon
        self.peers = peers
        self.on_wake = on_wake
        self.wd = Watchdog(_Comm(), timeout, on_silence=self._alarm, clock=lambda: self.now,
                           sleep=self._sleep, setting="comm_timeout", startup_s=startup)
        self.wd.enabled = True
        self.wd._send = lambda: None  # type: ignore[method-assign]
        self.wd._drain = self._drain  # type: ignore[method-assign]

    def _sleep(self, seconds: float) -> bool:
        self.now += seconds
        if self.on_wake is not None:
            self.on_wake(self)
        return self.now > self.horizon

    def _alarm(self, message: str) -> None:
        self.alarm = (self.now, message)

    def _drain(self, now: float) -> None:
        for p, state in self.peers(now).items():
            if state is not None:
                self.wd._heard[p] = now
                self.wd._peer[p] = state
                self.wd._last_step[p] = state.step

    def run(self) -> _Sim:
        self.wd.start()
        assert self.wd._thread is not None
        self.wd._thread.join(timeout=30)
        assert not self.wd._thread.is_alive()
        self.wd._thread = None
        return self


def _in_call(call: str, calls: int = 6, step: int = 5) -> PeerState:
    return PeerState(step, calls, call, READY)


@pytest.mark.parametrize("timeout", [3.0, 12.0, 60.0])
@pytest.mark.parametrize("frac", [1.0, 1.37, 3.5])
def test_a_call_that_never_completes_is_reported_after_the_timeout(timeout: float,
                                                                   frac: float) -> None:
    """Every rank ready from the first wake-up on; this rank enters a call at ``entered``
    (between two wake-ups) that never completes."""
    entered = frac * min(5.0, timeout / 6)

    def wake(sim: _Sim) -> None:
        sim.wd.ready()
        if sim.wd.call is None and sim.now >= entered:
            sim.wd.enter("opt.averaged()")
            sim.wd.entered = entered  # entered at that moment, between two wake-ups

    peers = {1: _in_call("opt.step()"), 2: _in_call("opt.step()"), 3: _in_call("opt.step()")}
    sim = _Sim(timeout, lambda now: dict(peers), horizon=entered + 10 * timeout,
               on_wake=wake).run()
    assert sim.alarm is not None
    when, msg = sim.alarm
    assert timeout < when - entered <= timeout + sim.wd.interval + 1e-9, (when, entered)
    assert msg.startswith("[rank 0] ERROR: watchdog: no watched call completed for more than "
                          f"comm_timeout = {timeout:g} s while every rank is alive")
    assert "rank 0 in opt.averaged() (its call 1, after step 0)" in msg
    assert "ranks 1-3 in opt.step() (its call 7, after step 5)" in msg
    assert "rank(s) 1-3 are not in the call this rank is in" in msg


def test_calls_that_complete_in_time_are_never_reported() -> None:
    timeout = 6.0

    def wake(sim: _Sim) -> None:  # a call of 0.9 x timeout, then the next one
        wd = sim.wd
        wd.ready()
        if wd.call is not None and sim.now - wd.entered >= 0.9 * timeout:
            wd.leave()
        if wd.call is None:
            wd.enter("a step")

    peers = {p: _in_call("a step") for p in (1, 2, 3)}
    sim = _Sim(timeout, lambda now: dict(peers), horizon=20 * timeout, on_wake=wake).run()
    assert sim.alarm is None, sim.alarm
    assert sim.wd.calls >= 15


def test_the_deadline_counts_from_when_every_rank_is_ready() -> None:
    """Peer 3 compiles (alive, still starting) until t = 100; this rank is in its first call
    from t = 0. Reported only more than ``timeout`` after peer 3 is ready."""
    timeout = 6.0

    def peers(now: float) -> dict[int, PeerState | None]:
        late = PeerState(0, 0, "opt.step()", STARTING if now < 100 else READY)
        return {1: _in_call("opt.step()", 0, 0), 2: _in_call("opt.step()", 0, 0), 3: late}

    def wake(sim: _Sim) -> None:
        if sim.wd.call is None and sim.wd.calls == 0:
            sim.wd.ready()
            sim.wd.enter("opt.step()")
            sim.wd.entered = 0.0

    sim = _Sim(timeout, peers, horizon=200, on_wake=wake).run()
    assert sim.alarm is not None
    assert 100 + timeout < sim.alarm[0] <= 100 + timeout + sim.wd.interval + 1e-9


def test_a_peer_not_heard_lately_is_left_to_the_silence_rule() -> None:
    """Peer 2 stops sending at t = 5 (frozen) while this rank is in a call from t = 4: the
    report is the silence one, naming rank 2, not the progress one."""
    timeout = 12.0

    def peers(now: float) -> dict[int, PeerState | None]:
        return {1: _in_call("a step"), 2: _in_call("a step") if now < 5 else None,
                3: _in_call("a step")}

    def wake(sim: _Sim) -> None:
        sim.wd.ready()
        if sim.wd.call is None and sim.now >= 4:
            sim.wd.enter("a step")

    sim = _Sim(timeout, peers, horizon=100, on_wake=wake).run()
    assert sim.alarm is not None
    assert sim.alarm[1].startswith("[rank 0] ERROR: watchdog: no sign of life from rank 2 ")


@pytest.mark.parametrize("their_calls,reported", [(5, True), (6, False), (9, False)])
def test_a_peer_that_finished_before_this_call_is_reported_at_once(their_calls: int,
                                                                    reported: bool) -> None:
    """This rank is in its 6th call from t = 1; the others finish at t = 2 after
    ``their_calls`` calls: fewer than 6 means this call can never complete."""
    timeout = 60.0

    def peers(now: float) -> dict[int, PeerState | None]:
        state = PeerState(their_calls, their_calls, None, DONE if now >= 2 else READY)
        return {1: state, 2: state, 3: state}

    def wake(sim: _Sim) -> None:
        wd = sim.wd
        if wd.call is None and sim.now >= 1 and wd.calls == 0:
            wd.ready()
            wd.calls = 5
            wd.step = 5
            wd.enter("opt.step()")

    sim = _Sim(timeout, peers, horizon=2 + timeout / 2, on_wake=wake).run()
    if not reported:
        assert sim.alarm is None, sim.alarm
        return
    assert sim.alarm is not None
    when, msg = sim.alarm
    assert when <= 2 + sim.wd.interval + 1e-9
    assert msg.startswith("[rank 0] ERROR: watchdog: rank(s) 1-3 finished without making "
                          "this call — rank 0 in opt.step() (its call 6, after step 5); ranks "
                          "1-3 finished (after 5 calls, step 5)"), msg


@pytest.mark.parametrize("phase,silence,reported", [
    (STARTING, 50.0, False), (STARTING, 130.0, True), (READY, 17.0, True)])
def test_a_starting_peer_may_be_silent_up_to_the_start_up_limit(phase: int, silence: float,
                                                               reported: bool) -> None:
    """Peer 1 said it is starting (or ready), then is silent for ``silence`` s (importing,
    compiling: the interpreter is held). timeout 12 s, start-up limit 120 s."""
    timeout, startup = 12.0, 120.0

    def peers(now: float) -> dict[int, PeerState | None]:
        quiet = 3.0 <= now < 3.0 + silence
        return {1: None if quiet else PeerState(0, 0, None, phase),
                2: PeerState(), 3: PeerState()}

    sim = _Sim(timeout, peers, horizon=3.0 + silence + 10, startup=startup).run()
    assert (sim.alarm is not None) == reported, sim.alarm
    if reported:
        assert "no sign of life from rank 1 " in sim.alarm[1]  # type: ignore[index]


def test_the_heartbeat_carries_phase_call_and_counts() -> None:
    buf = np.zeros(8, dtype=np.int64)
    _pack(buf, 41, 42, "opt.averaged()", READY)
    s = PeerState.unpack(buf)
    assert (s.step, s.calls, s.call, s.phase) == (41, 42, "opt.averaged()", READY)
    _pack(buf, 7, 8, None, DONE)
    s = PeerState.unpack(buf)
    assert (s.step, s.calls, s.call, s.phase) == (7, 8, None, DONE)
    _pack(buf, 1, 1, "x" * 80, READY)  # a long name is cut, not an error
    assert PeerState.unpack(buf).call == "x" * 32


def test_distributed_optimizer_default_timeout_is_decomp_runs() -> None:
    from decomp.torch import DistributedOptimizer
    from decomp.torch.guard import DEFAULT_COMM_TIMEOUT_S

    default = inspect.signature(DistributedOptimizer).parameters["comm_timeout"].default
    assert default == DEFAULT_COMM_TIMEOUT_S == RunConfig().comm_timeout_s


def test_every_peer_silent_at_once_waits_twice_the_limit() -> None:
    """Peers 1-3 all stop arriving at t = 2 (this rank's own reception stalling looks like
    that): reported only after more than twice the timeout; one peer alone after the timeout."""
    timeout = 12.0
    sim = _Sim(timeout, lambda now: {p: (_in_call("a step") if now < 2 else None)
                                     for p in (1, 2, 3)}, horizon=100).run()
    assert sim.alarm is not None
    assert 2 * timeout < sim.alarm[0] <= 2 + 2 * timeout + 2 * sim.wd.interval + 1e-9
    one = _Sim(timeout, lambda now: {1: _in_call("a step") if now < 2 else None,
                                     2: _in_call("a step"), 3: _in_call("a step")},
               horizon=100).run()
    assert one.alarm is not None and one.alarm[0] <= 2 + timeout + 2 * one.wd.interval + 1e-9
