"""Scaled(C): an unbiased compressor turned contractive, C'(x) = C(x) / (omega + 1).

If E C(x) = x and E||C(x) - x||^2 <= omega ||x||^2, then with lambda = 1/(omega + 1):
E||lambda C(x) - x||^2 = lambda^2 E||C(x)||^2 - 2 lambda ||x||^2 + ||x||^2
<= (lambda^2 (omega + 1) - 2 lambda + 1)||x||^2 = (1 - 1/(omega + 1))||x||^2,
so C' is contractive with alpha = 1/(omega + 1) (EF21 paper, Lemma/Example on unbiased
compressors). The wire format is the inner compressor's (same kind, same bytes): the factor is
applied by the receiver, which knows d and hence omega(d).

Exactness: decode forms the inner C(x) densely, multiplies it by lambda rounded to the output
dtype (one rounding per entry), then adds; ``reference`` does the same on the inner reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from decomp.compress.base import Compressor
from decomp.compress.registry import make_compressor, register
from decomp.errors import ConfigError
from decomp.rng import Key


class Scaled(Compressor):
    """C/(omega + 1) for an unbiased inner C (an object, a kind name or a config table)."""

    name = "scaled"
    is_unbiased = False

    def __init__(self, inner: Compressor | str | Mapping[str, Any]) -> None:
        if not isinstance(inner, Compressor):
            inner = make_compressor(inner)
        if getattr(inner, "layout", False) is None:  # an unbound per-tensor recipe
            raise ConfigError(f"Scaled({inner!r}): put per_tensor on the scaled table instead "
                              "(compressor = { kind = \"scaled\", inner = ..., per_tensor = true "
                              "}), which scales each tensor by its own 1/(omega_t + 1)")
        if not inner.is_unbiased:
            raise ConfigError(f"Scaled(C) needs an unbiased C (one with omega); {inner!r} is "
                              "not unbiased")
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]  # same wire format as the inner C
        self.is_random = inner.is_random  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Scaled({self.inner!r})"

    def factor(self, d: int) -> float:
        """lambda = 1/(omega(d) + 1)."""
        return 1.0 / (self.inner.omega(d) + 1.0)

    def alpha(self, d: int) -> float:
        return self.factor(d)

    def check(self, d: int) -> None:
        self.inner.check(d)

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return self.inner.payload_bytes(d, dtype)

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        return self.inner.encode(x, key)

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        dense = self.inner.decode(payload, d=out.size)  # checks d before allocating
        dense *= dense.dtype.type(self.factor(dense.size))
        if scale == 1.0:
            out += dense
        else:
            out += scale * dense

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        r = self.inner.reference(x, key)
        r = r.astype(self.inner.decode_dtype(np.asarray(x).dtype), copy=False)
        return r * r.dtype.type(self.factor(r.size))


register("scaled", Scaled)
