"""Per-tensor compression: one compressor run on each tensor of a :class:`~decomp.layout.Layout`.

``PerTensor(inner)`` (config: ``compressor = { kind = "topk", ratio = 0.01, per_tensor = true }``)
is a *recipe*: it needs the model's layout before it can compress, and ``bind(layout)`` returns
the concrete compressor (``env.codec(C)`` binds to ``env.layout``; ``decomp.sim`` references
take ``layout=``). Using an unbound one is a :class:`UsageError` naming the fix.

Operator: for the slots t = 0..T-1 of the layout (x_t = x[offset_t : offset_t + d_t]),
C(x) = (C_0(x_0), ..., C_{T-1}(x_{T-1})), each C_t the inner compressor on a length-d_t vector:
Top-k / Rand-k keep k_t = max(1, round(ratio · d_t)) entries of tensor t (a fixed ``k`` keeps
k of every tensor, so k <= every d_t; ``check`` names the tensor that is too small); QSGD and
scaled sign compute one norm / scale per tensor; natural compression and the unscaled sign are
element-wise (per tensor they differ from the flat ones only in the draws / the byte padding).
Empty tensors (size 0) are skipped.

Constants (the per-tensor errors add up: E||C(x) - x||^2 = Σ_t E||C_t(x_t) - x_t||^2):

* contractive inner: alpha = min_t alpha_inner(d_t)  (Top-k: min_t k_t / d_t);
* unbiased inner:    omega = max_t omega_inner(d_t);  ``is_unbiased`` / ``is_random`` = inner's.

Randomness: the call's stream seed s = ``derive_seed(key)`` as for a flat compressor; tensor t
uses s for t = 0 and splitmix64(s, t) for t >= 1 (:func:`~decomp.compress._rng.tensor_seed`),
so per-tensor compression on a one-slot layout is the flat compressor, draw for draw.

Wire format (little endian): one 16-byte header (kind = 0x80 | inner kind, vdtype = the input's
dtype code, flags = 0, count = T' = number of non-empty tensors, d) followed by the inner
payloads of the non-empty tensors in layout order, each starting on an 8-byte boundary (each
is a complete inner payload with its own 16-byte header and its tensor's d_t, zero bytes pad
the gaps)::

    payload_bytes = 16 + Σ_t align8(inner.payload_bytes(d_t, dtype))

``reference`` concatenates the inner references (same per-tensor seeds): equal to
decode(encode(x)) bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from decomp.compress._rng import derive_seed, tensor_seed
from decomp.compress._wire import VDTYPE_CODE
from decomp.compress.base import (
    HEADER_BYTES,
    Compressor,
    Header,
    align8,
    check_out,
    check_vector,
    out_dtype,
    read_header,
    write_header,
)
from decomp.compress.identity import Identity
from decomp.errors import ConfigError, PayloadError, UsageError
from decomp.layout import Layout
from decomp.rng import Key

#: header kind bit of a per-tensor payload: kind = PER_TENSOR | inner kind
PER_TENSOR = 0x80


class PerTensor(Compressor):
    """``inner`` applied to each tensor of a layout; unbound until :meth:`bind`.

    Args:
        inner: the compressor of one tensor (an object; not Identity, which is already
            per-tensor, nor another PerTensor).
        layout: the layout to bind to (or call :meth:`bind` later).
    """

    name = "per_tensor"

    def __init__(self, inner: Compressor, layout: Layout | None = None) -> None:
        if isinstance(inner, PerTensor):
            raise ConfigError(f"PerTensor({inner!r}): the inner compressor is per-tensor already")
        if not isinstance(inner, Compressor):
            raise ConfigError(f"PerTensor needs a Compressor object, got {type(inner).__name__}")
        self.inner = inner
        self.layout = layout
        self.kind = PER_TENSOR | inner.kind  # type: ignore[misc]
        self.is_unbiased = inner.is_unbiased  # type: ignore[misc]
        self.is_random = inner.is_random  # type: ignore[misc]
        self.value_dtype = getattr(inner, "value_dtype", None)
        # the non-empty slots as (t, start, stop)
        self._parts: tuple[tuple[int, int, int], ...] = () if layout is None else tuple(
            (t, s.offset, s.stop) for t, s in enumerate(layout) if s.size > 0)
        self._pos: dict[np.dtype, list[int]] = {}
        if layout is not None and not self._parts:
            raise ConfigError(f"PerTensor: the layout ({layout.describe()}) has no non-empty "
                              "tensor")

    def __repr__(self) -> str:
        where = "" if self.layout is None else f", {self.layout!r}"
        return f"PerTensor({self.inner!r}{where})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PerTensor) and repr(other.inner) == repr(self.inner)
                and other.layout == self.layout)

    def __hash__(self) -> int:
        return hash((repr(self.inner), self.layout))

    # --- binding -----------------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.layout is not None

    def bind(self, layout: Layout | None) -> PerTensor:
        """This recipe on ``layout`` (a new object; ``self`` when bound to an equal layout
        already). Every tensor must suit the inner compressor (``check``)."""
        if not isinstance(layout, Layout):
            raise UsageError(f"{self!r}.bind needs a decomp.layout.Layout, got "
                             f"{type(layout).__name__} (numpy problems: Layout.flat(d))")
        if layout == self.layout:
            return self
        b = PerTensor(self.inner, layout)
        b.check(layout.d)
        return b

    def _need(self, d: int | None = None) -> Layout:
        if self.layout is None:
            raise UsageError(f"{self!r} is not bound to a layout: per-tensor compression needs "
                             "the model's tensors; call C.bind(layout) (env.codec(C) binds to "
                             "env.layout; decomp.sim references take layout=)")
        if d is not None and d != self.layout.d:
            raise ConfigError(f"{self!r}: the layout covers d = {self.layout.d}, got a vector "
                              f"of length {d}")
        return self.layout

    # --- constants ---------------------------------------------------------------------------
    def alpha(self, d: int) -> float:
        self._need(d)
        try:
            return min(self.inner.alpha(b - a) for _, a, b in self._parts)
        except ConfigError as e:
            hint = (" (per tensor: compressor = { kind = \"scaled\", inner = ..., "
                    "per_tensor = true })" if self.inner.is_unbiased else "")
            raise ConfigError(f"{e}{hint}") from None

    def omega(self, d: int) -> float:
        self._need(d)
        return max(self.inner.omega(b - a) for _, a, b in self._parts)

    def check(self, d: int) -> None:
        super().check(d)
        layout = self._need(d)
        for t, a, b in self._parts:
            try:
                self.inner.check(b - a)
            except ConfigError as e:
                raise ConfigError(f"per-tensor {self.inner!r} cannot compress tensor "
                                  f"{layout[t].name!r} of shape {list(layout[t].shape)}: {e}"
                                  ) from None

    # --- wire format -------------------------------------------------------------------------
    def _offsets(self, dtype: Any) -> list[int]:
        """Start of each part's inner payload, then the total (len = parts + 1); computed
        once per input dtype."""
        dtype = np.dtype(dtype)
        pos = self._pos.get(dtype)
        if pos is None:
            pos = [HEADER_BYTES]
            for _, a, b in self._parts:
                pos.append(pos[-1] + align8(self.inner.payload_bytes(b - a, dtype)))
            self._pos[dtype] = pos
        return pos

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        self._need(d)
        return self._offsets(np.dtype(dtype))[-1]

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        self._need(x.size)
        base = derive_seed(key, repr(self)) if self.inner.is_random else None
        pos = self._offsets(x.dtype)
        payload = np.zeros(pos[-1], dtype=np.uint8)
        write_header(payload, Header(self.kind, VDTYPE_CODE[x.dtype.name], 0, len(self._parts),
                                     x.size))
        self._encode_parts(x, base, payload, 0, len(self._parts))
        return payload

    def _encode_parts(self, x: np.ndarray, base: int | None, payload: np.ndarray, first: int,
                      stop: int) -> None:
        pos = self._offsets(x.dtype)
        for i in range(first, stop):
            t, a, b = self._parts[i]
            p = self.inner.encode(x[a:b], None if base is None else tensor_seed(base, t))
            payload[pos[i]:pos[i] + p.size] = p

    # --- a slice of the tensors at a time (overlap with backward: decomp.torch.overlap_compressed)
    def part_span(self, first_slot: int, last_slot: int) -> tuple[int, int]:
        """(first, stop): the parts (non-empty tensors, in layout order) of the slots
        first_slot..last_slot."""
        ts = [t for t, _, _ in self._parts]
        return (int(np.searchsorted(ts, first_slot, "left")),
                int(np.searchsorted(ts, last_slot, "right")))

    def part_bytes(self, first: int, stop: int, dtype: Any) -> tuple[int, int]:
        """The bytes [lo, hi) of :meth:`encode`'s payload that parts first..stop-1 fill."""
        pos = self._offsets(np.dtype(dtype))
        return pos[first], pos[stop]

    def encode_parts(self, x: np.ndarray, key: Key | tuple[int, int, int] | None,
                     payload: np.ndarray, first: int, stop: int) -> None:
        """Write parts first..stop-1 of ``encode(x, key)`` into ``payload`` (a buffer of
        ``payload_bytes``): the same bytes at the same places (the header is
        :meth:`write_payload_header`'s); raises FloatingPointError as encode does."""
        self._need(x.size)
        base = derive_seed(key, repr(self)) if self.inner.is_random else None
        self._encode_parts(x, base, payload, first, stop)

    def write_payload_header(self, payload: np.ndarray, dtype: Any) -> None:
        """The 16-byte header :meth:`encode` writes for an input of ``dtype``."""
        layout = self._need()
        write_header(payload, Header(self.kind, VDTYPE_CODE[np.dtype(dtype).name], 0,
                                     len(self._parts), layout.d))

    def _sections(self, payload: np.ndarray, d: int | None) -> tuple[Header, list[np.ndarray]]:
        """The header and each part's inner payload (views), after checking the sizes."""
        layout = self._need()
        h = read_header(payload, self.kind, d)
        if h.d != layout.d:
            raise PayloadError(f"{self!r}: payload is for a vector of length {h.d}, the layout "
                               f"covers {layout.d}")
        if h.count != len(self._parts) or h.vdtype not in (0, 1) or h.flags != 0:
            raise PayloadError(f"{self!r} payload header (count={h.count}, flags={h.flags}) "
                               f"does not match its layout ({len(self._parts)} tensors)")
        dtype = out_dtype(h.vdtype)
        pos = self._offsets(dtype)
        if payload.size != pos[-1]:
            raise PayloadError(f"{self!r} payload has {payload.size} bytes, its header implies "
                               f"{pos[-1]} (truncated or corrupted)")
        return h, [payload[pos[i]:pos[i] + self.inner.payload_bytes(b - a, dtype)]
                   for i, (_, a, b) in enumerate(self._parts)]

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        _, secs = self._sections(payload, out.size)
        for sec, (_, a, b) in zip(secs, self._parts, strict=True):
            self.inner.decode_add(sec, out[a:b], scale)

    def decode(self, payload: np.ndarray, out: np.ndarray | None = None, *,
               d: int | None = None) -> np.ndarray:
        if out is not None:
            check_out(out)
        h, secs = self._sections(payload, d if out is None else out.size)
        if out is None:
            out = np.zeros(h.d, dtype=self.decode_dtype(out_dtype(h.vdtype)))
        elif len(self._parts) < len(self.layout or ()):
            out[:] = 0  # empty tensors are nothing to decode
        for sec, (_, a, b) in zip(secs, self._parts, strict=True):
            self.inner.decode(sec, out=out[a:b])
        return out

    def parts(self, payload: np.ndarray, d: int) -> list[tuple[int, np.ndarray]]:
        """(offset of the tensor in x, its inner payload) per non-empty tensor: for a caller
        that handles each tensor's sparse payload itself (the downlink sum)."""
        _, secs = self._sections(payload, d)
        return [(a, sec) for sec, (_, a, _b) in zip(secs, self._parts, strict=True)]

    # --- reference ---------------------------------------------------------------------------
    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """The inner references on each tensor (same seeds), concatenated in decode's dtype."""
        x = check_vector(x)
        self._need(x.size)
        base = derive_seed(key, repr(self)) if self.inner.is_random else None
        out = np.zeros(x.size, dtype=self.decode_dtype(x.dtype))
        for t, a, b in self._parts:
            out[a:b] = self.inner.reference(x[a:b], None if base is None else
                                            tensor_seed(base, t))
        return out


def per_tensor(inner: Compressor) -> Compressor:
    """The per-tensor form of ``inner``: Identity stays Identity (it is per-tensor already);
    anything else becomes an unbound :class:`PerTensor`."""
    if isinstance(inner, (Identity, PerTensor)):
        return inner
    return PerTensor(inner)


def bind_layout(compressor: Any, layout: Layout | None) -> Any:
    """``compressor`` bound to ``layout`` when it is a per-tensor recipe (a
    :class:`PerTensor`), else unchanged. ``layout=None`` means one slot of the vector's length,
    which is only known at use: an unbound PerTensor then stays unbound."""
    if isinstance(compressor, PerTensor) and layout is not None:
        return compressor.bind(layout)
    return compressor


def bind_attributes(obj: Any, layout: Layout | None) -> Any:
    """``obj`` (e.g. an algorithm) with every :class:`PerTensor` attribute bound to ``layout``:
    a shallow copy when some attribute changes (the caller's object is never mutated), ``obj``
    itself otherwise (or when ``layout`` is None)."""
    if layout is None or not hasattr(obj, "__dict__"):
        return obj
    changed = {k: v.bind(layout) for k, v in vars(obj).items()
               if isinstance(v, PerTensor) and v.layout != layout}
    if not changed:
        return obj
    new = copy.copy(obj)
    new.__dict__.update(changed)
    return new


__all__ = ["PER_TENSOR", "PerTensor", "UsageError", "bind_attributes", "bind_layout",
           "per_tensor"]
