"""Time-varying mixing: one-peer exponential (and hypercube) schedules, and a static wrapper.

One-peer exponential (Ying et al., "Exponential Graph is Provably Efficient for Decentralized
Deep Training", NeurIPS 2021): with ``tau = ceil(log2 n)`` and ``s_t = 2^(t mod tau)``,

    W_t[i, i] = 1/2,   W_t[i, (i + s_t) mod n] = 1/2,

so at step t node i averages with node ``i + s_t`` (it receives from ``i + s_t`` and sends to
``i - s_t``): one message per node per step. W_t is doubly stochastic but **not symmetric**
unless ``2 s_t = n``, and a single W_t is usually disconnected; for n a power of two the product
of any tau consecutive W_t is exactly ``11^T / n``.

One-peer hypercube (n a power of two): ``W_t[i, i] = W_t[i, i XOR s_t] = 1/2``; symmetric
(pairwise exchanges), and the product over a period is also exactly ``11^T / n``. Use it when an
algorithm requires a symmetric W (DCD/ECD-PSGD, CHOCO-SGD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .errors import TopologyError
from .mixing import MixingMatrix, spectrum

__all__ = [
    "MixingSchedule",
    "OnePeerExponential",
    "StaticSchedule",
    "is_schedule",
    "one_peer_exponential",
    "one_peer_hypercube",
    "one_peer_period",
]


@runtime_checkable
class MixingSchedule(Protocol):
    """W as a function of the step: ``schedule(t)`` for ``t = 0, 1, ...``, periodic."""

    @property
    def n(self) -> int: ...

    @property
    def period(self) -> int: ...

    def __call__(self, t: int) -> MixingMatrix: ...


def is_schedule(obj: object) -> bool:
    """True for a :class:`MixingSchedule` (W as a function of the step), False for one W."""
    return isinstance(obj, MixingSchedule) and not isinstance(obj, MixingMatrix)


@dataclass(frozen=True, eq=False)
class StaticSchedule:
    """The same W at every step (period 1)."""

    mixing: MixingMatrix

    @property
    def n(self) -> int:
        """Number of nodes."""
        return self.mixing.n

    @property
    def name(self) -> str:
        """W's name."""
        return self.mixing.name

    @property
    def symmetric(self) -> bool:
        """W = Wᵀ."""
        return self.mixing.symmetric

    @property
    def rho(self) -> float:
        """W's consensus contraction per step."""
        return self.mixing.rho

    def peers(self, i: int) -> tuple[int, ...]:
        """Node i's neighbours, in and out, ascending."""
        return tuple(sorted({int(j) for j in self.mixing.neighbors(i)[0]}
                            | {int(j) for j in self.mixing.out_neighbors(i)[0]}))

    def validate(self, n_ranks: int | None = None) -> StaticSchedule:
        """W's checks (connected)."""
        self.mixing.validate(n_ranks)
        return self

    @property
    def period(self) -> int:
        """1."""
        return 1

    def __call__(self, t: int) -> MixingMatrix:
        """W (for every t)."""
        return self.mixing


def one_peer_period(n: int) -> int:
    """``tau = ceil(log2 n)`` (1 for n <= 2)."""
    if n < 1:
        raise TopologyError(f"one-peer schedule: n must be >= 1, got n = {n}")
    return max(1, (n - 1).bit_length())


def _check_step(t: int) -> int:
    if isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 0:
        raise TopologyError(f"step t must be a non-negative integer, got {t!r}")
    return int(t)


def one_peer_exponential(n: int, t: int) -> MixingMatrix:
    """W at step t of the one-peer exponential schedule (see the module docstring).

    Returns a doubly stochastic ``MixingMatrix`` with ``symmetric`` True only if ``2 s_t = n``.
    """
    tau = one_peer_period(n)
    t = _check_step(t)
    if n == 1:
        return MixingMatrix(sp.csr_array(np.ones((1, 1))), name="one-peer-exponential(1)")
    s = 1 << (t % tau)
    i = np.arange(n)
    rows = np.concatenate([i, i])
    cols = np.concatenate([i, (i + s) % n])
    w = sp.csr_array((np.full(2 * n, 0.5), (rows, cols)), shape=(n, n))
    return MixingMatrix(w, name=f"one-peer-exponential({n}, t={t}, shift={s})",
                        symmetric=(2 * s == n))


def one_peer_hypercube(n: int, t: int) -> MixingMatrix:
    """W at step t of the symmetric one-peer hypercube schedule (n a power of two)."""
    if n < 1 or n & (n - 1):
        raise TopologyError(f"one-peer hypercube: n must be a power of two, got n = {n}")
    t = _check_step(t)
    if n == 1:
        return MixingMatrix(sp.csr_array(np.ones((1, 1))), name="one-peer-hypercube(1)")
    tau = one_peer_period(n)
    s = 1 << (t % tau)
    i = np.arange(n)
    rows = np.concatenate([i, i])
    cols = np.concatenate([i, i ^ s])
    w = sp.csr_array((np.full(2 * n, 0.5), (rows, cols)), shape=(n, n))
    return MixingMatrix(w, name=f"one-peer-hypercube({n}, t={t}, bit={s})")


@dataclass(frozen=True, eq=False)
class OnePeerExponential:
    """The one-peer exponential schedule as an object: ``sched(t)``, ``sched.period``.

    Attributes:
        n: nodes.
        symmetric: use the symmetric one-peer hypercube variant (n a power of two). False
            means a directed schedule (every W_t is treated as directed, also at n = 2 where
            W_0 happens to be symmetric): the methods that need W = Wᵀ refuse it by name.
    """

    n: int
    symmetric: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.symmetric and (self.n < 1 or self.n & (self.n - 1)):
            raise TopologyError(f"one-peer hypercube: n must be a power of two, got n = {self.n}")
        one_peer_period(self.n)

    @property
    def period(self) -> int:
        """``ceil(log2 n)``."""
        return one_peer_period(self.n)

    @property
    def kind(self) -> str:
        """The config name: ``one-peer-hypercube`` or ``one-peer-exponential``."""
        return "one-peer-hypercube" if self.symmetric else "one-peer-exponential"

    @property
    def name(self) -> str:
        """E.g. ``one-peer-hypercube(16)``."""
        return f"{self.kind}({self.n})"

    @cached_property
    def rho(self) -> float:
        """The consensus contraction over one period, :meth:`period_rho` (a schedule has no
        per-step spectral gap: a single W_t is usually disconnected)."""
        return self.period_rho()

    def peers(self, i: int) -> tuple[int, ...]:
        """Every node j != i that node i exchanges with (either direction) in some step of a
        period, ascending: the slots of per-edge replicas (``log2 n`` for the hypercube)."""
        out: set[int] = set()
        for m in self._steps:
            out.update(int(j) for j in m.neighbors(i)[0])
            out.update(int(j) for j in m.out_neighbors(i)[0])
        return tuple(sorted(out))

    @cached_property
    def _steps(self) -> tuple[MixingMatrix, ...]:
        f = one_peer_hypercube if self.symmetric else one_peer_exponential
        return tuple(f(self.n, k) for k in range(self.period))

    def __call__(self, t: int) -> MixingMatrix:
        """W_t (the matrices of one period are built once and reused)."""
        return self._steps[_check_step(t) % self.period]

    def period_rho(self) -> float:
        """``||W_{tau-1} ... W_1 W_0 - 11^T/n||_2``: the consensus contraction over one period
        (0 for n a power of two: exact averaging)."""
        prod = self._steps[0].W
        for m in self._steps[1:]:
            prod = m.W @ prod
        return spectrum(sp.csr_array(prod), symmetric=False)[2]

    def validate(self, n_ranks: int | None = None) -> OnePeerExponential:
        """Every step doubly stochastic and non-negative; the union over a period connected."""
        union = None
        for m in self._steps:
            m.validate(n_ranks, connected=False)
            union = m.W if union is None else union + m.W
        assert union is not None
        k, labels = csgraph.connected_components(union, directed=True, connection="strong")
        if k > 1:
            other = int(np.flatnonzero(labels != labels[0])[0])
            raise TopologyError(f"one-peer schedule on n = {self.n}: the union over a period is "
                                f"disconnected (node 0 cannot reach node {other})")
        return self
