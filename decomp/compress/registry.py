"""The compressor registry: config name -> constructor, and :func:`make_compressor`.

``make_compressor(spec)`` builds a compressor from a config value such as
``{kind = "topk", k = 1}``. Imports point one way: this module imports the concrete compressors;
a wrapper that itself builds its inner compressor from a spec (:class:`~decomp.compress.Scaled`)
imports this module and adds itself with :func:`register` (``decomp.compress`` imports it, so
the table is complete as soon as the package is imported).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from decomp.compress.base import Compressor
from decomp.compress.identity import Identity
from decomp.compress.natural import Natural
from decomp.compress.per_tensor import per_tensor
from decomp.compress.qsgd import QSGD
from decomp.compress.randk import RandK
from decomp.compress.sign import ScaledSign, Sign
from decomp.compress.topk import TopK
from decomp.errors import ConfigError

#: name in configs -> constructor taking the table's other keys as keyword arguments
#: ("scaled" is added by :mod:`decomp.compress.scaled`)
REGISTRY: dict[str, Callable[..., Compressor]] = {
    "identity": Identity,
    "topk": TopK,
    "randk": RandK,
    "qsgd": QSGD,
    "natural": Natural,
    "sign": Sign,
    "scaled_sign": ScaledSign,
}


def register(name: str, factory: Callable[..., Compressor]) -> None:
    """Make a compressor available to configs under ``name``."""
    REGISTRY[name] = factory


def make_compressor(spec: Compressor | str | Mapping[str, Any] | None) -> Compressor:
    """Build a compressor from a config value: a name, a table with ``kind``, or an object.

    ``per_tensor = true`` in a table gives the per-tensor form (an unbound
    :class:`~decomp.compress.per_tensor.PerTensor`, bound to the model's layout by
    ``env.codec``; Identity stays Identity)."""
    if spec is None:
        return Identity()
    if isinstance(spec, Compressor):
        return spec
    if isinstance(spec, str):
        spec = {"kind": spec}
    opts = dict(spec)
    kind = opts.pop("kind", None)
    split = opts.pop("per_tensor", False)
    if not isinstance(split, bool):
        raise ConfigError(f"compressor option per_tensor must be true or false, got {split!r}")
    if kind is None:
        raise ConfigError(f"compressor table needs a 'kind' (one of {sorted(REGISTRY)})")
    if kind not in REGISTRY:
        close = difflib.get_close_matches(str(kind), list(REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown compressor {kind!r}{hint} (known: {known})")
    try:
        c = REGISTRY[kind](**opts)
    except TypeError as e:  # an unknown option name
        raise ConfigError(f"compressor {kind!r}: {e}") from None
    if split:
        return per_tensor(c)
    return c
