"""Emulated latency (decomp.comm.delay, [network] delay_ms): hops per call, additive delay on
blocking calls, latency hidden by work between a split call's start and finish, config checks."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from decomp.comm.delay import DelayedTransport, rounds
from decomp.config import load_config
from decomp.errors import ConfigError


class _Fake:
    """A transport whose calls take no time and record their order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bytes = 123

    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        self.calls.append("exchange")
        return {1: payload}

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        self.calls.append("exchange_start")

    def exchange_finish(self) -> dict[int, np.ndarray]:
        self.calls.append("exchange_finish")
        return {}

    def gather(self, payload: Any, nbytes: int | None = None) -> list[np.ndarray]:
        self.calls.append("gather")
        return [payload]

    def broadcast(self, x: np.ndarray) -> None:
        self.calls.append("broadcast")

    def broadcast_bytes(self, payload: Any) -> np.ndarray:
        self.calls.append("broadcast_bytes")
        return np.zeros(1, np.uint8)

    def allreduce_sum(self, vec: np.ndarray) -> None:
        self.calls.append("allreduce_sum")

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        self.calls.append("allgather")
        return [payload]


@pytest.mark.parametrize(("n", "L"), [(2, 1), (4, 2), (5, 3), (8, 3), (1024, 10)])
def test_hops_follow_the_documented_table(n: int, L: int) -> None:
    assert rounds("exchange", n) == 1
    assert rounds("gather", n) == 1
    assert rounds("broadcast", n) == L
    assert rounds("allgather", n) == L
    assert rounds("allreduce", n) == 2 * L


def test_one_rank_sends_nothing_and_waits_nothing() -> None:
    assert all(rounds(c, 1) == 0 for c in ("exchange", "gather", "broadcast", "allreduce"))


class FakeClock:
    """The delay module's clock and sleep, in simulated seconds: ``sleep`` advances it exactly,
    and each reading advances it by ``tick`` (so the final spin loop ends). The delays are
    then exact, whatever the machine's load."""

    tick = 1e-6

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        self.now += self.tick
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    from decomp.comm import delay

    fake = FakeClock()
    monkeypatch.setattr(delay, "_clock", fake.clock)
    monkeypatch.setattr(delay.time, "sleep", fake.sleep)
    return fake


def _timed(clock: FakeClock, fn: Any) -> float:
    t0 = clock.now
    fn()
    return clock.now - t0


#: the spin after sleeping reads the clock at most 0.2 ms / tick times more
SPIN = 2e-4 + 10 * FakeClock.tick


@pytest.mark.parametrize(("call", "hops"), [("exchange", 1), ("gather", 1), ("broadcast", 2),
                                            ("broadcast_bytes", 2), ("allgather", 2),
                                            ("allreduce_sum", 4)])
def test_a_blocking_call_takes_hops_times_the_delay_longer(clock, call: str, hops: int) -> None:
    delay = 0.02
    tp = DelayedTransport(_Fake(), delay, n=4)
    x = np.zeros(3)
    dt = _timed(clock, lambda: getattr(tp, call)(x))
    assert tp.inner.calls == [call]
    assert hops * delay <= dt < hops * delay + SPIN


def test_work_between_start_and_finish_hides_the_latency(clock) -> None:
    delay = 0.05
    tp = DelayedTransport(_Fake(), delay, n=2)
    x = np.zeros(3)
    t0 = clock.now
    tp.exchange_start(x)
    clock.sleep(0.03)  # "computation" overlapping the message's flight
    tp.exchange_finish()
    total = clock.now - t0
    assert delay <= total < delay + SPIN  # not 0.03 + 0.05: the delay ran during the work
    tp.exchange_start(x)
    clock.sleep(0.07)  # work longer than the delay: finish does not wait
    assert _timed(clock, tp.exchange_finish) < 10 * FakeClock.tick
    assert tp.inner.calls == ["exchange_start", "exchange_finish"] * 2


def test_the_real_clock_never_waits_less_than_the_delay() -> None:
    """With the real clock and sleep: at least the delay (sleep never returns early; no upper
    bound, which would depend on the machine's load)."""
    tp = DelayedTransport(_Fake(), 0.01, n=4)
    t0 = time.perf_counter()
    tp.allreduce_sum(np.zeros(3))
    assert time.perf_counter() - t0 >= 4 * 0.01


def test_other_attributes_read_through() -> None:
    tp = DelayedTransport(_Fake(), 0.001, n=2)
    assert tp.bytes == 123


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_delay_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        DelayedTransport(_Fake(), bad, n=2)


def test_the_network_table_is_off_by_default_and_typed() -> None:
    base = {"methods": [{"algorithm": "gd"}]}
    assert load_config(base).network.delay_ms == 0.0
    assert load_config({**base, "network": {"delay_ms": 2.5}}).network.delay_ms == 2.5
    with pytest.raises(ConfigError, match="delay"):
        load_config({**base, "network": {"delay": 2.5}})
    with pytest.raises(ConfigError, match="network.delay_ms"):
        load_config({**base, "network": {"delay_ms": "1ms"}})


def test_the_link_fit_recovers_alpha_and_beta_of_an_exact_line() -> None:
    from decomp.bench.link import SIZES, fit_line

    s = np.asarray(SIZES, float)
    alpha, beta = fit_line(s, 0.004 + s / 12.5e6)
    assert alpha == pytest.approx(0.004, rel=1e-9)
    assert beta == pytest.approx(12.5e6, rel=1e-9)


def test_the_link_fit_ignores_the_burst_of_small_payloads() -> None:
    from decomp.bench.link import fit_line

    # 64 KiB passes within tbf's burst at line speed: it must not bend β
    s = np.array([8.0, 65536.0, 1 << 20, 4 << 20, 8 << 20])
    t = 0.010 + s / 12.5e6
    t[1] = 0.010 + s[1] / 1e9
    alpha, beta = fit_line(s, t)
    assert beta == pytest.approx(12.5e6, rel=1e-9) and alpha == pytest.approx(0.010, rel=1e-6)


def test_the_link_check_names_a_wrong_rate_or_delay() -> None:
    from decomp.bench.link import LinkFit

    ok = LinkFit([8], [0.01], alpha_s=0.0102, beta_Bps=11.9e6, delay_ms=10.0,
                 expect_rate_Bps=12.5e6, rank_a=0, rank_b=1)
    assert ok.check() == []
    slow = LinkFit([8], [0.01], alpha_s=0.0102, beta_Bps=6e6, delay_ms=10.0,
                   expect_rate_Bps=12.5e6, rank_a=0, rank_b=1)
    assert any("rate" in m for m in slow.check())
    no_delay = LinkFit([8], [0.01], alpha_s=0.0001, beta_Bps=12.5e6, delay_ms=10.0,
                       expect_rate_Bps=None, rank_a=0, rank_b=1)
    assert any("delay" in m for m in no_delay.check())


@pytest.mark.parametrize(("text", "bps"), [("100mbit", 12.5e6), ("1gbit", 1.25e8),
                                           ("10Gbit", 1.25e9), ("64kbit", 8e3)])
def test_bench_link_reads_rates_in_tc_units(text: str, bps: float) -> None:
    from decomp.netmodel.calibrate import parse_rate

    assert parse_rate(text) == pytest.approx(bps)
    with pytest.raises(ConfigError, match="rate"):
        parse_rate("fast")
