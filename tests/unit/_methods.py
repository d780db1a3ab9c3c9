"""Building any registered method for a test: the values of options a class takes without a
default, and the first compressor its analysis accepts (shared by the registry contract test
and the thread-transport specification test)."""

from __future__ import annotations

import inspect
from typing import Any

from decomp.algorithms import AlgorithmSpec
from decomp.compress import QSGD, TopK
from decomp.errors import ConfigError

#: values for the options a class takes without a default (by option, not by method)
REQUIRED = {"consensus_step": 0.5}


def required_options(spec: AlgorithmSpec) -> dict[str, Any]:
    """The options ``spec`` needs (no default in its class: empty or None), from
    :data:`REQUIRED`; a new required option fails here, naming itself."""
    need = [k for k, v in spec.options.items()
            if v is inspect.Parameter.empty or (v is None and k in REQUIRED)]
    missing = [k for k in need if k not in REQUIRED]
    assert not missing, f"{spec.name}: give the tests a value for {missing} in REQUIRED"
    return {k: REQUIRED[k] for k in need}


def build_any(spec: AlgorithmSpec, d: int, batch_size: int) -> Any:
    """The method with the first compressor its analysis accepts for length-d vectors (its
    default, Top-2, else QSGD-8; none for the dense methods); ``batch_size`` τ where the
    method needs one."""
    last: Exception | None = None
    candidates = ((None if spec.default_compressor else TopK(2), QSGD(levels=8))
                  if spec.uses_compressor else (None,))
    for C in candidates:
        try:
            alg = spec.build(compressor=C, batch_size=batch_size if spec.needs_batch else None,
                             options=required_options(spec))
            alg.check(d)
            return alg
        except ConfigError as e:
            last = e
    raise AssertionError(f"{spec.name}: no compressor accepted: {last}")
