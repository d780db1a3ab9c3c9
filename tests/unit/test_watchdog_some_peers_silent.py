"""The watchdog's silence rule when several peers, but not all, fall silent
(decomp/comm/watchdog.py, ``_verdict``): only when every live peer is silent at once (more
likely this rank's own reception stalling) does it wait twice the limit; two frozen ranks of
three are reported like one, at the first wake-up after more than the timeout of silence,
naming both and not the rank that goes on. An injected clock, as
tests/unit/test_watchdog_timing.py: no wall-clock luck."""

from __future__ import annotations

import pytest

from decomp.comm.watchdog import Watchdog


class _Four:
    def Get_size(self) -> int:  # noqa: N802 - the mpi4py names
        return 4

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> _Four:  # noqa: N802
        return self


@pytest.mark.parametrize("timeout", [6.0, 12.0, 60.0])
def test_two_frozen_peers_of_three_are_reported_after_the_timeout(timeout: float) -> None:
    now = [0.0]
    alarms: list[tuple[float, str]] = []

    def sleep(seconds: float) -> bool:
        now[0] += seconds
        return now[0] > 10 * timeout or bool(alarms)

    wd = Watchdog(_Four(), timeout, on_silence=lambda m: alarms.append((now[0], m)),
                  clock=lambda: now[0], sleep=sleep)
    wd.enabled = True
    wd._send = lambda: None  # type: ignore[method-assign]

    def drain(t: float) -> None:
        for p in (1, 2, 3):
            if p == 3 or t < 2.0:  # ranks 1 and 2 freeze at t = 2
                wd._heard[p] = t
    wd._drain = drain  # type: ignore[method-assign]
    wd.start()
    assert wd._thread is not None
    wd._thread.join(timeout=30)
    assert alarms, "two frozen peers were never reported"
    when, message = alarms[0]
    assert timeout < when - 2.0 + wd.interval and when <= 2.0 + timeout + wd.interval + 1e-9
    assert "rank 1 (" in message and "rank 2 (" in message and "rank 3" not in message
