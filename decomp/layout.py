"""A model as a list of tensors: the :class:`Layout` of a flat vector x ∈ R^d.

Algorithms and kernels see one flat vector; a ``Layout`` says which tensor lives where in it:
an immutable tuple of :class:`Slot` (name, offset, shape), in order, tiling ``[0, d)`` with no
gap or overlap (``slot.offset == previous.offset + previous.size``). A numpy problem has one
slot (:meth:`Layout.flat`); a torch model has one slot per trainable parameter
(``decomp.torch.flat.FlatModel.layout``). Per-tensor compressors
(:class:`decomp.compress.PerTensor`) compress each slot on its own; checkpoints record the
layout and a resume refuses a different one.

This module imports nothing from decomp, so every layer may use it. Layouts are immutable,
hashable, compare by value and round-trip through JSON (:meth:`Layout.to_dict` /
:meth:`Layout.from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slot:
    """One tensor: ``x[offset:offset + size].reshape(shape)``; ``size = prod(shape)``
    (1 for a scalar, shape ())."""

    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        """One past the slot's last entry: ``offset + size``."""
        return self.offset + self.size


def _slot(s: Slot | Sequence[Any] | Any) -> Slot:
    """A Slot from a Slot, a (name, offset, shape) triple, or any object with those attributes
    (e.g. ``FlatModel``'s slots); shape entries must be non-negative integers."""
    if isinstance(s, Slot):
        name, offset, shape = s.name, s.offset, s.shape
    elif isinstance(s, (tuple, list)):
        if len(s) != 3:
            raise ValueError(f"a layout slot is (name, offset, shape), got {s!r}")
        name, offset, shape = s
    else:
        try:
            name, offset, shape = s.name, s.offset, s.shape
        except AttributeError:
            raise TypeError(f"a layout slot is a Slot or (name, offset, shape), got "
                            f"{type(s).__name__}") from None
    if not isinstance(name, str):
        raise TypeError(f"layout slot name must be a str, got {name!r}")
    try:
        shape = tuple(int(n) for n in shape)
        offset_i = int(offset)
    except (TypeError, ValueError):
        raise TypeError(f"layout slot {name!r}: offset must be an int and shape a sequence of "
                        f"ints, got offset={offset!r}, shape={shape!r}") from None
    if offset_i != offset or any(n < 0 for n in shape):
        raise ValueError(f"layout slot {name!r}: offset {offset!r} / shape {shape} must be "
                         "non-negative integers")
    return Slot(name, offset_i, shape)


class Layout:
    """An immutable tuple of :class:`Slot` tiling ``[0, d)`` in order.

    Args:
        slots: Slots, (name, offset, shape) triples or objects with those attributes; the first
            offset is 0 and each next one starts where the previous one stops. Names are unique.

    Attributes:
        slots: tuple of Slot; d: the total size (sum of the slot sizes).
    """

    __slots__ = ("_hash", "d", "slots")

    def __init__(self, slots: Iterable[Slot | Sequence[Any] | Any]) -> None:
        ss = tuple(_slot(s) for s in slots)
        if not ss:
            raise ValueError("a layout needs at least one slot")
        pos = 0
        names: set[str] = set()
        for s in ss:
            if s.offset != pos:
                raise ValueError(f"layout slot {s.name!r} starts at offset {s.offset}, expected "
                                 f"{pos}: slots must tile [0, d) in order with no gap or "
                                 "overlap")
            if s.name in names:
                raise ValueError(f"layout slot name {s.name!r} appears twice")
            names.add(s.name)
            pos = s.stop
        object.__setattr__(self, "slots", ss)
        object.__setattr__(self, "d", pos)
        object.__setattr__(self, "_hash", hash(ss))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Layout is immutable")

    # --- constructors ------------------------------------------------------------------------
    @classmethod
    def flat(cls, d: int, name: str = "x") -> Layout:
        """One slot of shape (d,): the layout of a numpy problem's vector."""
        if isinstance(d, bool) or int(d) != d or d < 1:
            raise ValueError(f"Layout.flat needs a length d >= 1, got {d!r}")
        return cls([Slot(name, 0, (int(d),))])

    @classmethod
    def from_shapes(cls, shapes: Iterable[tuple[str, Sequence[int]]]) -> Layout:
        """Consecutive slots from (name, shape) pairs (offsets computed)."""
        slots, pos = [], 0
        for name, shape in shapes:
            s = _slot((name, pos, shape))
            slots.append(s)
            pos = s.stop
        return cls(slots)

    # --- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)

    def __getitem__(self, t: int) -> Slot:
        return self.slots[t]

    @property
    def sizes(self) -> tuple[int, ...]:
        """The slot sizes d_t, in order (sum = d)."""
        return tuple(s.size for s in self.slots)

    @property
    def bounds(self) -> tuple[int, ...]:
        """(offset_0 = 0, offset_1, ..., d): slot t is ``x[bounds[t]:bounds[t + 1]]``."""
        return (*(s.offset for s in self.slots), self.d)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    def check(self, d: int, who: str = "layout") -> None:
        """Raise ValueError if this layout does not describe length-d vectors."""
        if d != self.d:
            raise ValueError(f"{who}: the layout covers d = {self.d} entries "
                             f"({len(self)} tensors), the vector has d = {d}")

    # --- value semantics ---------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.slots == other.slots

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if len(self) == 1:
            s = self.slots[0]
            return f"Layout.flat({self.d}, name={s.name!r})" if s.shape == (self.d,) else \
                f"Layout([{s!r}])"
        return f"Layout({len(self)} tensors, d={self.d})"

    def describe(self, limit: int = 4) -> str:
        """A short human description naming the first ``limit`` tensors (for messages)."""
        head = ", ".join(f"{s.name}{list(s.shape)}" for s in self.slots[:limit])
        more = f", ... ({len(self) - limit} more)" if len(self) > limit else ""
        return f"d={self.d} in {len(self)} tensor(s): {head}{more}"

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"d": d, "slots": [{"name", "offset", "shape"}, ...]}`` (JSON-serialisable)."""
        return {"d": self.d, "slots": [{"name": s.name, "offset": s.offset,
                                        "shape": list(s.shape)} for s in self.slots]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Layout:
        """The inverse of :meth:`to_dict`; a malformed document is a ValueError naming why."""
        try:
            slots = [(s["name"], s["offset"], s["shape"]) for s in doc["slots"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a layout document ({e!r}): expected "
                             "{'d': ..., 'slots': [{'name', 'offset', 'shape'}, ...]}") from None
        layout = cls(slots)
        if "d" in doc and int(doc["d"]) != layout.d:
            raise ValueError(f"layout document says d = {doc['d']}, its slots cover {layout.d}")
        return layout


def layout_of(d: int, layout: Layout | None) -> Layout:
    """``layout`` (checked against d), or the one-slot layout of length d when None."""
    if layout is None:
        return Layout.flat(d)
    layout.check(d)
    return layout


__all__ = ["Layout", "Slot", "layout_of"]
