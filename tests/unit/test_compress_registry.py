"""The compressor registry: every registered compressor writes a wire ``kind`` of its own.

A decoder refuses a payload whose header kind is not its own, so two compressors sharing a kind
would accept each other's payloads and decode garbage. ``Scaled(C)`` is the one exception by
design: it sends C's payload unchanged (same kind, same bytes) and applies its factor on receipt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.compress import (
    HEADER_BYTES,
    REGISTRY,
    Compressor,
    PerTensor,
    Scaled,
    bind_layout,
    make_compressor,
    read_header,
)
from decomp.compress.per_tensor import PER_TENSOR
from decomp.errors import PayloadError
from decomp.layout import Layout

#: options for registered kinds that cannot be built from their name alone
OPTIONS: dict[str, dict[str, Any]] = {
    "topk": {"k": 3},
    "randk": {"k": 3},
    "qsgd": {"levels": 4},
    "scaled": {"inner": "natural"},
}
D = 17


def _build(name: str) -> Compressor:
    return make_compressor({"kind": name, **OPTIONS.get(name, {})})


def _header_kind(c: Compressor) -> int:
    x = np.random.default_rng(0).standard_normal(D)
    p = c.encode(x, (1, 0, 0))
    assert p.size >= HEADER_BYTES
    read_header(p, c.kind, D)  # the header carries the compressor's own kind
    return int(p[1])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_compressor_writes_its_kind(name: str) -> None:
    c = _build(name)
    assert 0 <= c.kind <= 255
    assert _header_kind(c) == c.kind


def test_wire_kinds_are_unique_across_the_registry() -> None:
    owner: dict[int, str] = {}
    for name in sorted(REGISTRY):
        c = _build(name)
        if isinstance(c, Scaled):  # the inner's wire format, by design
            assert c.kind == c.inner.kind == _header_kind(c.inner)
            continue
        kind = _header_kind(c)
        assert kind not in owner, (f"compressors {owner[kind]!r} and {name!r} both write wire "
                                   f"kind {kind}")
        owner[kind] = name
    assert len(owner) == len(REGISTRY) - 1  # all but "scaled"


def test_a_payload_of_another_kind_is_refused() -> None:
    names = [n for n in sorted(REGISTRY) if n != "scaled"]
    payloads = {n: _build(n).encode(np.linspace(-1.0, 1.0, D), (2, 0, 0)) for n in names}
    for a in names:
        for b in names:
            if a != b:
                with pytest.raises(PayloadError, match="kind"):
                    _build(a).decode(payloads[b])


#: a layout of several tensors, for the per-tensor forms (``per_tensor = true``)
LAYOUT = Layout.from_shapes([("w", (3, 4)), ("b", (4,)), ("s", ())])


def _build_per_tensor(name: str) -> Compressor:
    opts = {**OPTIONS.get(name, {}), **({"k": 1} if name in ("topk", "randk") else {})}
    return bind_layout(make_compressor({"kind": name, **opts, "per_tensor": True}), LAYOUT)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_per_tensor_forms_write_their_own_kind(name: str) -> None:
    """``per_tensor = true`` of every registered kind: Identity stays Identity (same wire);
    the others write kind 0x80 | the flat kind and refuse the flat payload (and vice versa)."""
    c = _build_per_tensor(name)
    x = np.random.default_rng(0).standard_normal(LAYOUT.d)
    p = c.encode(x, (1, 0, 0))
    flat = _build(name)
    if name == "identity":
        assert type(c) is type(flat) and c.kind == flat.kind
        return
    assert isinstance(c, PerTensor) and c.kind == PER_TENSOR | flat.kind == int(p[1])
    with pytest.raises(PayloadError, match="kind"):
        flat.decode(p)
    with pytest.raises(PayloadError, match="kind"):
        c.decode(flat.encode(x, (1, 0, 0)))
