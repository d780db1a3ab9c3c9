"""What every algorithm of either family gets: this rank's resources for one run (:class:`Env`).

One :class:`Env` serves the master–worker and the decentralized family: the transport (one of
the protocols of :mod:`decomp.comm.protocols`), the local problem f_i, n, the seed, the
resolved step size γ, a per-section :class:`~decomp.comm.timing.Stopwatch` and a scratch
:class:`Workspace`. None of it is algorithm state.

Random streams (:meth:`Env.key`): every compressor draw is ``Key(seed, slot, step)``. The rank
slots are split into blocks of n, one block per *stream*; worker (node) i's key on a per-worker
stream s is ``Key(seed, i + s·n, step)``, and a *shared* stream (one draw for the whole run at
a step, e.g. the master's own compression) is ``Key(seed, s·n, step)``. Streams therefore never
collide. The allocator (:class:`Stream`) names every purpose in use:

=================  ======  ==========  ==================================================
stream             number  kind        used by
=================  ======  ==========  ==================================================
``PAYLOAD``        0       per worker  the (first) payload a worker / node compresses
``SECOND``         1       per worker  a second payload of the same step (EF21+'s
                                       broadcast candidate, BEER's g-payload)
``MASTER``         2       shared      the master's downlink compression (EF21-BC's C_M)
``LOWRANK``        3       shared      a low-rank method's common random start (PowerSGD's
                                       initial Q, the same on every rank)
``EDGE``           4       per edge    what both ends of an edge {a, b} (a < b) draw alike
                                       (PowerGossip's P, Q): :func:`edge_key`,
                                       ``Key(seed, 4·n + a, step·n + b)``
=================  ======  ==========  ==================================================

A new purpose takes the next number (and says whether it is shared in :data:`SHARED`); the
reference (:mod:`decomp.sim`) uses the same slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from decomp.comm.protocols import MasterWorkerTransport, NeighborTransport
from decomp.comm.timing import Stopwatch, TimedCodec, TimedTransport
from decomp.compress import Compressor, PerTensor, bind_layout
from decomp.errors import UsageError
from decomp.layout import Layout
from decomp.problems import GradientOracle
from decomp.rng import Key

__all__ = ["SHARED", "Env", "Stream", "Workspace", "edge_key", "scratch", "stream_key"]


class Stream(IntEnum):
    """The compressor key streams (module doc): purpose -> stream number."""

    PAYLOAD = 0
    SECOND = 1
    MASTER = 2
    LOWRANK = 3
    EDGE = 4


#: streams with one key per step for the whole run (not per worker)
SHARED = frozenset({Stream.MASTER, Stream.LOWRANK})


def stream_key(seed: int, worker: int | None, n: int, step: int, stream: int = 0) -> Key:
    """The key of ``worker`` (0..n−1; ignored for a shared stream) at ``step`` on ``stream``:
    ``Key(seed, worker + stream·n, step)``, or ``Key(seed, stream·n, step)`` for a stream in
    :data:`SHARED`."""
    if stream in SHARED:
        return Key(seed, int(stream) * n, step)
    if worker is None:
        raise UsageError(f"key(step, stream={stream}): a dedicated master has no worker index; "
                         "only a shared stream (Stream.MASTER) has a key there")
    return Key(seed, worker + int(stream) * n, step)


def edge_key(seed: int, n: int, i: int, j: int, step: int) -> Key:
    """The key both ends of the edge {i, j} (i != j, nodes of n) use at ``step`` (module doc:
    slot 4·n + min(i, j), step field step·n + max(i, j), unique per edge and step)."""
    a, b = min(i, j), max(i, j)
    return Key(seed, int(Stream.EDGE) * n + a, step * n + b)


class Workspace:
    """Scratch arrays of one run, by name: made on first use, then reused (no per-step
    allocation). A name asked for with another shape or dtype gets a fresh array.

    Contents are undefined on every request: a step writes a scratch array before reading it,
    and nothing in it outlives the step — what must survive belongs in the state.
    """

    __slots__ = ("_arrays", "_objects")

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._objects: dict[str, Any] = {}

    def keep(self, name: str, make: Callable[[], Any]) -> Any:
        """A helper object of this run (buffers that must persist between steps, e.g. the
        master's sum encoder), made by ``make()`` on first use."""
        obj = self._objects.get(name)
        if obj is None:
            obj = self._objects[name] = make()
        return obj

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The scratch array ``name``, of ``shape`` and ``dtype`` (uninitialised)."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a

    def clear(self) -> None:
        """Drop every array and helper (the next requests allocate afresh)."""
        self._arrays.clear()
        self._objects.clear()


def scratch(ws: Workspace, name: str, like: np.ndarray | None, shape: tuple[int, ...] | None,
            dtype: Any) -> np.ndarray:
    """``ws.array(name, ...)`` with shape and dtype taken from ``like`` unless given."""
    if like is not None:
        shape = like.shape if shape is None else shape
        dtype = like.dtype if dtype is None else dtype
    if shape is None or dtype is None:
        raise TypeError("scratch needs like= or both shape= and dtype=")
    return ws.array(name, shape, dtype)


@dataclass
class Env:
    """This rank's resources for one run, either family.

    transport: a :class:`~decomp.comm.protocols.MasterWorkerTransport` or
    :class:`~decomp.comm.protocols.NeighborTransport`, wrapped at construction in a
    :class:`~decomp.comm.timing.TimedTransport` (counted calls book comm time into ``watch``;
    every other attribute reads through; the unwrapped one is ``transport.inner``);
    problem: this rank's f_i (None on a dedicated master); n: workers (= nodes); seed: run
    seed; lr: step size γ (resolved, a float); watch: the per-section timer (reset it, do not
    replace it: the timed transport and codecs hold it); workspace: this run's scratch arrays
    (:meth:`scratch`); layout: the model's tensors (:class:`~decomp.layout.Layout`; None = one
    slot of a numpy problem's d), to which :meth:`codec` binds per-tensor compressors.
    """

    transport: MasterWorkerTransport | NeighborTransport
    problem: GradientOracle | None
    n: int
    seed: int
    lr: float
    watch: Stopwatch = field(default_factory=Stopwatch)
    workspace: Workspace = field(default_factory=Workspace, repr=False)
    layout: Layout | None = None
    _codecs: dict[int, tuple[Any, TimedCodec]] = field(default_factory=dict, init=False,
                                                       repr=False, compare=False)

    def __post_init__(self) -> None:
        inner = self.transport
        if isinstance(inner, TimedTransport):  # dataclasses.replace of an Env
            inner = inner.inner
        self.transport = TimedTransport(inner, self.watch)  # type: ignore[assignment]

    @property
    def rank(self) -> int:
        """This process's rank in the transport's communicator."""
        return self.transport.rank

    @property
    def worker(self) -> int | None:
        """This rank's worker (node) index: names its shard and random streams (None on a
        dedicated master)."""
        return self.transport.worker

    def key(self, step: int, stream: int = Stream.PAYLOAD) -> Key:
        """Compressor key of this worker at ``step`` on ``stream`` (:class:`Stream`; the
        module doc lists the allocation): ``Key(seed, worker + stream·n, step)``, or
        ``Key(seed, stream·n, step)`` on a shared stream."""
        return stream_key(self.seed, self.worker, self.n, step, stream)

    def codec(self, compressor: Compressor | TimedCodec) -> TimedCodec:
        """``compressor`` with its encode / decode timed into ``watch`` (one proxy per
        compressor object, kept for the run, so steps allocate none); a per-tensor recipe
        (:class:`~decomp.compress.PerTensor`) is bound to :attr:`layout` first."""
        if isinstance(compressor, TimedCodec):
            return compressor
        hit = self._codecs.get(id(compressor))
        if hit is None or hit[0] is not compressor:
            bound = bind_layout(compressor, self.model_layout()) \
                if isinstance(compressor, PerTensor) else compressor
            hit = self._codecs[id(compressor)] = (compressor, TimedCodec(bound, self.watch))
        return hit[1]

    def use_codec(self, compressor: Compressor, bound: Compressor) -> None:
        """From now on :meth:`codec` of ``compressor`` is ``bound`` (timed): a drop-in with
        the same results (the overlap with backward's prepared payloads,
        :mod:`decomp.torch.overlap_compressed`)."""
        self._codecs[id(compressor)] = (compressor, TimedCodec(bound, self.watch))

    def model_layout(self) -> Layout:
        """:attr:`layout`, or (None) the problem's own (a numpy problem's one slot of d)."""
        if self.layout is not None:
            return self.layout
        own = getattr(self.problem, "layout", None)
        if not isinstance(own, Layout):
            raise UsageError("a per-tensor compressor needs the model's layout, and Env.layout "
                             "is None with no problem layout to fall back on: give "
                             "Env(..., layout=...) (FlatModel.layout, or Layout.flat(d))")
        return own

    def scratch(self, name: str, like: np.ndarray | None = None, *,
                shape: tuple[int, ...] | None = None, dtype: Any = None) -> np.ndarray:
        """This run's scratch array ``name`` (shape/dtype of ``like`` unless given;
        uninitialised), see :class:`Workspace`."""
        return scratch(self.workspace, name, like, shape, dtype)
