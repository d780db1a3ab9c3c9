"""``decomp bench link``: one link's latency α and bandwidth β, measured through decomp's transport.

Run under MPI (every rank the same command; on the emulated cluster of ``jobs/local/emulate/``
rank 0 and rank ``size // 2`` sit on different hosts)::

    mpiexec -n 2 decomp bench link --delay-ms 1 --expect-rate 100mbit --json link.json

Rank 0 and rank ``peer`` (default ``size // 2``) form a two-node graph and exchange uint8
payloads of each size through :class:`decomp.comm.Neighborhood` -- the path every
decentralized method's bytes take -- wrapped in :class:`decomp.comm.delay.DelayedTransport`
when ``--delay-ms`` is given, exactly as ``[network] delay_ms`` does in a run. Both directions
are sent at once (full duplex, each shaped by its sender's link), so one exchange of ``s`` bytes
takes ``α + s/β``. From the median over ``repeat`` exchanges per size (:func:`fit_line`): β
(bytes/s) from the slope over the large sizes, α (seconds: the emulated delay plus the stack's
own latency) from the smallest. With ``--expect-rate``/``--delay-ms`` the fit is checked against the
configuration: the check the emulated cluster's rate and delay are what they say, and the
calibration of the cost model (:mod:`decomp.netmodel`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: default payload sizes (bytes): latency-bound to bandwidth-bound
SIZES = (8, 65_536, 1_048_576, 4_194_304, 8_388_608)


@dataclass
class LinkFit:
    """The measured link. times_s: median seconds per exchange, one per size."""

    sizes: list[int]
    times_s: list[float]
    alpha_s: float
    beta_Bps: float
    delay_ms: float
    expect_rate_Bps: float | None
    rank_a: int
    rank_b: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, tol: float = 0.2, slack_s: float = 5e-3) -> list[str]:
        """Disagreements with the configured rate and delay (empty: the link is as set).

        β within ``tol`` of the expected rate; α at least the configured delay and within
        ``tol`` of it plus ``slack_s`` (the stack's own latency and, on a loaded machine, the
        late wake-up of the sleep that emulates the delay) when a delay is set."""
        bad = []
        if self.expect_rate_Bps:
            err = self.beta_Bps / self.expect_rate_Bps - 1
            if abs(err) > tol:
                bad.append(f"measured rate {self.beta_Bps * 8 / 1e6:.1f} Mbit/s is {err:+.0%} "
                           f"off the configured {self.expect_rate_Bps * 8 / 1e6:.1f} Mbit/s")
        if self.delay_ms > 0:
            d = self.delay_ms / 1e3
            if not d * (1 - tol) <= self.alpha_s <= d * (1 + tol) + slack_s:
                bad.append(f"measured latency {self.alpha_s * 1e3:.3f} ms does not match the "
                           f"configured delay {self.delay_ms:g} ms")
        return bad


def fit_line(sizes: np.ndarray, times: np.ndarray) -> tuple[float, float]:
    """``t = α + s/β`` from measured (size, seconds) pairs, sizes ascending: β from the slope
    of a least-squares line through the sizes of at least 1 MiB (bandwidth-bound; smaller ones
    pass within tbf's burst at line speed and would bend the line), α = t − s/β at the
    smallest size (latency-bound). Returns (α seconds, β bytes/s)."""
    big = sizes >= 1 << 20
    if big.sum() < 2:
        big = np.arange(len(sizes)) >= len(sizes) - 2
    slope = float(np.polyfit(sizes[big], times[big], 1)[0])
    beta = 1.0 / slope if slope > 0 else float("inf")
    return float(max(times[0] - sizes[0] / beta, 0.0)), beta


def run_link_bench(comm: Any, *, sizes: tuple[int, ...] = SIZES, repeat: int = 5,
                   delay_ms: float = 0.0, peer: int | None = None,
                   expect_rate_Bps: float | None = None) -> LinkFit | None:
    """Measure the link between rank 0 and ``peer`` (collective over ``comm``); the fit on
    rank 0, None elsewhere."""
    from decomp.comm import Neighborhood
    from decomp.comm.delay import DelayedTransport
    from decomp.topologies import mixing_matrix

    size, rank = comm.Get_size(), comm.Get_rank()
    if size < 2:
        raise ValueError("decomp bench link needs at least 2 ranks (mpiexec -n 2)")
    peer = size // 2 if peer is None else peer
    if not 0 < peer < size:
        raise ValueError(f"--peer must be a rank in 1..{size - 1}, got {peer}")
    inside = rank in (0, peer)
    pair = comm.Split(0 if inside else 1, rank)
    times: list[float] = []
    if inside:
        tp: Any = Neighborhood(mixing_matrix("complete", 2), pair)
        if delay_ms > 0:
            tp = DelayedTransport(tp, delay_ms / 1e3, 2)
        for s in sizes:
            buf = np.ones(s, dtype=np.uint8)
            tp.exchange(buf, s)  # warm-up: connections and persistent requests
            one = []
            for _ in range(repeat):
                pair.Barrier()
                t0 = time.perf_counter()
                tp.exchange(buf, s)
                one.append(time.perf_counter() - t0)
            times.append(float(np.median(one)))
        tp.close()
    pair.Free()
    comm.Barrier()
    if rank != 0:
        return None
    alpha, beta = fit_line(np.asarray(sizes, float), np.asarray(times))
    return LinkFit(list(sizes), times, alpha, beta, delay_ms, expect_rate_Bps, 0, peer)


def format_fit(fit: LinkFit) -> str:
    lines = [f"# link rank {fit.rank_a} <-> rank {fit.rank_b}: median of exchanges, both "
             "directions at once", f"{'bytes':>10}  {'ms':>10}  {'MB/s':>8}"]
    for s, t in zip(fit.sizes, fit.times_s, strict=True):
        lines.append(f"{s:>10}  {t * 1e3:>10.3f}  {s / t / 1e6:>8.2f}")
    lines.append(f"fit t = alpha + s/beta: alpha = {fit.alpha_s * 1e3:.3f} ms, beta = "
                 f"{fit.beta_Bps / 1e6:.2f} MB/s ({fit.beta_Bps * 8 / 1e6:.1f} Mbit/s)")
    return "\n".join(lines)
