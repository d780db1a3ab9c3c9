"""Gradient buckets all-reduced while backward still runs (docs/torch.md, "Overlap with backward").

The trainable parameters of a :class:`~decomp.torch.flat.FlatModel` are cut into buckets in
reverse registration order (backward produces the last layers' gradients first), each closed
once it holds ``cap_bytes`` (a tensor is never split, as DDP). Because the flat gradient
vector stores the tensors in registration order, every bucket is one contiguous slice
``grads[lo:hi]``. A post-accumulate-grad hook on every parameter counts the bucket's
gradients; when the last one is in, the bucket's in-place ``Iallreduce`` (sum) is posted —
buckets are posted in bucket order on every rank (bucket k waits for k − 1, as DDP's reducer),
so the non-blocking collectives match across ranks even when a parameter is used on some
ranks only. The algorithm's dense all-reduce of the gradient (``transport.allreduce_sum`` of
the flat gradient buffer, in GD/SGD, SGDM and AllreduceSGD) then only posts what backward left
(buckets with an unused parameter) and waits: :meth:`Buckets.install`.

MPI progress (``progress``): ``"hooks"`` (default) calls ``MPI_Testall`` on the buckets in
flight from every hook, so MPICH, which moves a message only inside MPI calls, advances them
during backward; ``"none"`` posts and waits only (the choice is measured in docs/torch.md).

Accumulation: inside :meth:`Buckets.paused` (``DistributedOptimizer.no_sync()``) the hooks post
nothing, so the backward after it posts the sum of every micro-batch (bit for bit the
non-overlapped result). A second backward outside it, before the step, finds buckets already
posted: its first gradient's pre-hook posts the rest, waits, and scales the buckets by 1/n
(each holds the mean of the ranks' earlier gradients), so the next all-reduce sums
Σ_i (earlier)_i + Σ_i (new)_i — the same value up to rounding, with one all-reduce per
micro-batch (a warning says to use ``no_sync()``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from decomp.errors import ConfigError
from decomp.torch.flat import FlatModel, is_buffer

#: DDP's ``bucket_cap_mb`` default (MiB), the cap for models of 100 MiB of gradients or more
DDP_CAP_MB = 25.0
#: the automatic cap cuts a smaller model into about this many buckets (at least one tensor
#: each), so that all but the first can travel while backward runs
AUTO_BUCKETS = 4
PROGRESS = ("hooks", "none")


def cap_bytes(d: int, itemsize: int, bucket_cap_mb: float | None) -> int:
    """The bucket cap in bytes: ``bucket_cap_mb`` MiB, or (None) DDP's 25 MiB scaled to the
    model, min(25 MiB, ⌈d · itemsize / 4⌉). A clear error for a cap that is not a positive
    finite number."""
    if bucket_cap_mb is None:
        return max(1, min(int(DDP_CAP_MB * 2**20), math.ceil(d * itemsize / AUTO_BUCKETS)))
    if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
            or not math.isfinite(bucket_cap_mb) or bucket_cap_mb <= 0:
        raise ConfigError(f"bucket_cap_mb must be a positive number of MiB (DDP's default is "
                          f"{DDP_CAP_MB:g}; None scales it to the model), got {bucket_cap_mb!r}")
    return max(1, int(bucket_cap_mb * 2**20))


@dataclass(frozen=True)
class Bucket:
    """Parameters ``params`` (indices into the flat slots, descending) stored in
    ``grads[lo:hi]``."""

    lo: int
    hi: int
    params: tuple[int, ...]


def plan(flat: FlatModel, cap: int) -> list[Bucket]:
    """Buckets of ``flat``'s parameters in reverse registration order, each closed once it
    holds ``cap`` bytes or more (float32 gradients)."""
    out: list[Bucket] = []
    cur: list[int] = []
    size = 0
    for i in reversed(range(len(flat.slots))):
        cur.append(i)
        size += flat.slots[i].size * flat.grads.itemsize
        if size >= cap:
            out.append(_bucket(flat, cur))
            cur, size = [], 0
    if cur:
        out.append(_bucket(flat, cur))
    return out


def _bucket(flat: FlatModel, idx: list[int]) -> Bucket:
    lo = flat.slots[idx[-1]].offset
    hi = flat.slots[idx[0]].offset + flat.slots[idx[0]].size
    return Bucket(lo, hi, tuple(idx))


class Buckets:
    """The hooks and the requests of one flat model's bucketed all-reduce (module doc).

    Args:
        flat: the model (its ``grads`` is what is reduced, in place).
        comm: the communicator of the transport (every rank contributes).
        bucket_cap_mb: the cap (MiB; None: :func:`cap_bytes`'s scaled default).
        progress: "hooks" or "none" (module doc).
    """

    def __init__(self, flat: FlatModel, comm: Any, bucket_cap_mb: float | None = None,
                 progress: str = "hooks") -> None:
        from mpi4py import MPI

        if progress not in PROGRESS:
            raise ConfigError(f"overlap progress must be one of {PROGRESS}, got {progress!r}")
        self._MPI = MPI
        self.flat = flat
        self.comm = comm
        self.n = comm.Get_size()
        self.cap = cap_bytes(flat.d, flat.grads.itemsize, bucket_cap_mb)
        self.buckets = plan(flat, self.cap)
        self.progress = progress
        self._of = np.empty(len(flat.slots), np.int64)  # parameter -> its bucket
        for b, bk in enumerate(self.buckets):
            self._of[list(bk.params)] = b
        self._size = np.array([len(bk.params) for bk in self.buckets], np.int64)
        self._left = self._size.copy()  # gradients still to come, per bucket
        self._ready = np.zeros(len(flat.slots), bool)  # this round's gradient is in
        self._reqs: list[Any] = []  # posted this round, in bucket order
        self.posted = 0  # buckets posted this round (buckets 0 .. posted − 1)
        self.active = True  # False inside paused()
        self.rounds_discarded = 0  # backward passes that found buckets already posted
        self._warned = False
        self._handles = []
        for i, p in enumerate(flat.parameters()):
            p._decomp_buckets = self  # type: ignore[attr-defined]  # (attach closes it)
            self._handles.append(p.register_hook(self._pre(i)))
            self._handles.append(p.register_post_accumulate_grad_hook(self._post(i)))

    # --- hooks -------------------------------------------------------------------------------
    def _pre(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:  # before the gradient is added to p.grad
            if self._ready[i]:
                self._restart()
        return hook

    def _post(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:  # after it was added
            self.flat.attach_grad(i)  # a new tensor if .grad was None: into the buffer
            if not self.active:
                return
            self._ready[i] = True
            b = int(self._of[i])
            self._left[b] -= 1
            while self.posted < len(self.buckets) and self._left[self.posted] == 0:
                self._post_bucket()
            if self.progress == "hooks" and self._reqs:
                self._MPI.Request.Testall(self._reqs)
        return hook

    def _post_bucket(self) -> None:
        bk = self.buckets[self.posted]
        self._reqs.append(self.comm.Iallreduce(self._MPI.IN_PLACE,
                                               self.flat.grads[bk.lo:bk.hi], op=self._MPI.SUM))
        self.posted += 1

    def _restart(self) -> None:
        """A backward after the round's buckets were posted (accumulation without
        ``no_sync()``): finish the round, keep the mean of the ranks' sums, start anew."""
        self.finish()
        self.flat.grads /= self.flat.grads.dtype.type(self.n)
        self.rounds_discarded += 1
        if not self._warned:
            self._warned = True
            warnings.warn("overlap: a second backward() before step() all-reduced every "
                          "micro-batch (correct up to rounding, one all-reduce each); wrap all "
                          "but the last backward of a step in `with opt.no_sync():`, as with "
                          "DDP", stacklevel=2)

    # --- the step ----------------------------------------------------------------------------
    def finish(self) -> None:
        """Post the buckets backward did not (a parameter without a gradient counts zero),
        wait for all; the round is over (collective: every rank posts every bucket)."""
        if self.posted < len(self.buckets):
            self.flat.check_grads()  # None gradients -> zero views, before their bucket goes
            while self.posted < len(self.buckets):
                self._post_bucket()
        self._MPI.Request.Waitall(self._reqs)
        self._reqs = []
        self.posted = 0
        self._left[:] = self._size
        self._ready[:] = False

    def discard(self) -> None:
        """Before zeroing the gradients: finish a round backward started (a backward whose
        step was skipped), so no all-reduce still writes into the buffer."""
        if self._ready.any() or self._reqs:
            self.finish()

    def install(self, transport: Any) -> None:
        """Make ``transport.allreduce_sum`` of the flat gradient buffer :meth:`finish` (with
        the transport's own byte counting); other vectors go to the transport's call."""
        inner = transport.allreduce_sum
        flat = self.flat

        def allreduce_sum(vec: np.ndarray) -> None:
            if not is_buffer(vec, flat.grads):
                inner(vec)
                return
            self.finish()
            if getattr(transport, "is_worker", True):
                transport.bytes.up += vec.nbytes
            transport.bytes.down += vec.nbytes

        transport.allreduce_sum = allreduce_sum

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Backward inside accumulates only; the next one outside posts the sum."""
        was, self.active = self.active, False
        try:
            yield
        finally:
            self.active = was

    def close(self) -> None:
        """Remove the hooks (waits for any bucket in flight first)."""
        if self._reqs:
            self._MPI.Request.Waitall(self._reqs)
            self._reqs = []
        for h in self._handles:
            h.remove()
        self._handles = []
        for p in self.flat.parameters():
            if getattr(p, "_decomp_buckets", None) is self:
                del p._decomp_buckets

    def __repr__(self) -> str:
        sizes = ", ".join(f"{4 * (b.hi - b.lo) / 2**20:.2f}" for b in self.buckets)
        return (f"Buckets({len(self.buckets)} buckets of [{sizes}] MiB, cap "
                f"{self.cap / 2**20:.2f} MiB, progress={self.progress})")





def dense_methods() -> tuple[type, ...]:
    """The methods whose step all-reduces the flat gradient itself (dense): the ones whose
    communication the buckets take over."""
    from decomp.algorithms import GD, SGDM, AllreduceSGD

    return (GD, SGDM, AllreduceSGD)


__all__ = ["AUTO_BUCKETS", "DDP_CAP_MB", "PROGRESS", "Bucket", "Buckets", "cap_bytes",
           "dense_methods", "plan"]
