"""Degree and spectral gap of the cost model's topologies, without building W.

Ring, 2-D torus, exponential graph and complete graph are vertex-transitive circulants (the
torus a 2-D circulant): every node has the same degree k, so Metropolis–Hastings weights
``1/(1 + max(d_i, d_j))`` and max-degree weights ``1/(d_max + 1)`` coincide, ``w = 1/(k + 1)``
on every edge and on the diagonal. W is then diagonalised by the (2-D) discrete Fourier
transform: its eigenvalues are the FFT of its first row (of its kernel on the rows × cols
grid), ``O(n log n)`` — no dense 16,384² matrix. ``rho = max |lambda|`` over the non-zero
frequencies and the spectral gap is ``1 - rho`` (as :attr:`decomp.topologies.MixingMatrix.
spectral_gap`; tests check both agree at small n). Lazy weights map lambda to (1 + lambda)/2.

The graphs are those of :mod:`decomp.topologies.graphs`: ring i -- i±1, torus of
:func:`~decomp.topologies.near_square` shape (the cost model itself asks for a square n),
exponential i -- i ± 2^j (2^j < n), complete.
"""

from __future__ import annotations

import math

import numpy as np

from decomp.errors import ConfigError
from decomp.topologies.graphs import canonical_kind, near_square
from decomp.topologies.weights import canonical_scheme

__all__ = ["TOPOLOGIES", "canonical_topology", "check_ranks", "degree", "eigenvalues",
           "mixing_rho", "spectral_gap"]

#: topologies the cost model prices (circulant: closed-form spectrum)
TOPOLOGIES = ("ring", "torus", "exponential", "complete")


def canonical_topology(kind: str) -> str:
    """The registry name of a topology the model covers (aliases such as ``exp`` accepted);
    :class:`ConfigError` for any other."""
    try:
        key = canonical_kind(kind)
    except Exception as e:  # TopologyError: unknown name
        raise ConfigError(f"topology {kind!r}: {e}") from None
    if key not in TOPOLOGIES:
        raise ConfigError(f"the cost model covers the topologies {', '.join(TOPOLOGIES)} "
                          f"(circulant W, spectrum by FFT); got {kind!r}")
    return key


def check_ranks(kind: str, n: int) -> None:
    """Refuse a rank count the model cannot price: n < 2, or a torus of non-square n."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ConfigError(f"ranks must be an integer >= 2, got {n!r}")
    if canonical_topology(kind) == "torus":
        r = math.isqrt(int(n))
        if r * r != n:
            lo, hi = r * r, (r + 1) ** 2
            raise ConfigError(f"a 2-D torus needs a square number of ranks, got {n} "
                              f"(nearest: {lo} = {r}x{r} or {hi} = {r + 1}x{r + 1})")


def _offsets_1d(n: int, steps: list[int]) -> list[int]:
    """Distinct non-zero offsets mod n of ±s for s in steps (a simple graph: +s and −s may
    coincide, e.g. n/2)."""
    return sorted({o % n for s in steps for o in (s, -s)} - {0})


def _kernel(kind: str, n: int) -> np.ndarray:
    """W's first row (1-D) or its kernel on the rows × cols grid (torus), unit edge weights
    not yet normalised: 1 on each neighbour offset, 0 elsewhere (diagonal included)."""
    key = canonical_topology(kind)
    if key == "torus":
        rows, cols = near_square(n)
        k = np.zeros((rows, cols))
        for o in _offsets_1d(rows, [1]) if rows > 1 else []:
            k[o, 0] = 1.0
        for o in _offsets_1d(cols, [1]) if cols > 1 else []:
            k[0, o] = 1.0
        return k
    if key == "ring":
        offs = _offsets_1d(n, [1])
    elif key == "exponential":
        offs = _offsets_1d(n, [1 << j for j in range(max(1, (n - 1).bit_length()))
                               if (1 << j) < n])
    else:  # complete
        offs = list(range(1, n))
    k = np.zeros(n)
    k[offs] = 1.0
    return k


def degree(kind: str, n: int) -> int:
    """Neighbours of every node (the graph is regular): ring 2, torus 4 (sides >= 3),
    exponential about 2 log2 n, complete n − 1."""
    return int(_kernel(kind, n).sum())


def eigenvalues(kind: str, n: int, weights: str = "metropolis") -> np.ndarray:
    """All n eigenvalues of W (float64, unordered; the trivial 1 first), by FFT.

    weights: metropolis, max-degree (the same on these regular graphs) or their lazy
    variants (I + W)/2."""
    scheme = canonical_scheme(weights)
    k = _kernel(kind, n)
    deg = k.sum()
    w = k / (deg + 1.0)
    w.flat[0] = 1.0 - deg / (deg + 1.0)
    lam = np.real(np.fft.fftn(w)).ravel()  # W symmetric: the spectrum is real
    if scheme.startswith("lazy"):
        lam = 0.5 * (1.0 + lam)
    return lam


def mixing_rho(kind: str, n: int, weights: str = "metropolis") -> float:
    """rho = max(|lambda_2|, |lambda_n|) = ||W − 11ᵀ/n||₂."""
    lam = eigenvalues(kind, n, weights)
    return float(np.max(np.abs(lam[1:]))) if lam.size > 1 else 0.0


def spectral_gap(kind: str, n: int, weights: str = "metropolis") -> float:
    """delta = 1 − rho (1 for the complete graph)."""
    return 1.0 - mixing_rho(kind, n, weights)
