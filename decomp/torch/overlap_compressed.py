"""Per-bucket compression overlapped with backward (docs/torch.md, "Overlap with backward").

The buckets, hooks, bucket order, ``no_sync()`` and unused parameters are
:class:`decomp.torch.buckets.Buckets`'; what a bucket does when its last gradient is in differs:

* :class:`UplinkBuckets` — EF21 / EF21-SGD and DCGD with a per-tensor compressor
  (:class:`~decomp.compress.PerTensor`), ``aggregation = "gather"``. The hook forms the
  compressor's input on the bucket's slice (EF21: ∇f_i − g_i^t, with this rank's g_i^t from the
  algorithm state; DCGD: ∇f_i), encodes the bucket's tensors into their bytes of the step's
  payload (:meth:`PerTensor.encode_parts`: the bytes ``encode`` writes there, same seeds) and
  posts an ``Igatherv`` of those bytes into the master's receive buffer at the same places
  (worker i's payload at i·nbytes). The payload's 16-byte header goes with the last bucket
  (the first tensors); a bucket with a non-finite value is sent as zeros and the header then
  too: the master sees a poison payload, as from :func:`~decomp.algorithms.base.encode_or_poison`.
  In ``step()`` the algorithm's own code runs unchanged: its ``encode`` (the codec installed
  with :meth:`Env.use_codec`, :class:`PreparedPerTensor`) posts the buckets backward did not,
  waits and returns the payload; its gather returns the master's views of the receive buffer.
  The downlink (the master's re-encoded sum, one broadcast) stays in ``step()``.
* :class:`LowRankBuckets` — PowerSGD. The hook runs the first phase for the bucket's tensors
  (M_i = g_i + e_i, Q ← orth(Q), P = M_i Q, the dense tensors; :meth:`PowerSGD.first_phase`)
  and posts an ``Iallreduce`` of the bucket's dense values and P's (packed contiguously);
  ``step()`` (:class:`OverlappedPowerSGD`) waits, unpacks them into the all-reduce buffer and
  runs the second phase (orth(P), the all-reduce of the Q's, which needs every P, the update)
  as the blocking step does. Dense warm-up steps (t < ``start_iter``) do not overlap.

Iterates: the same arithmetic on the same values as the blocking step (element-wise on
slices; each tensor encoded alone), so bit for bit — up to MPI's sum order for PowerSGD's
all-reduce of a bucket instead of the whole buffer (equal at 2 ranks always; the tests check
4). The first step (the algorithm's init: no state yet to compress against) and a second
backward before ``step()`` outside ``no_sync()`` (refused: the compressed buckets were
already sent) are the exceptions; the checkpoint state is the algorithm's, unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.algorithms import DCGD, EF21
from decomp.algorithms.powersgd import PowerSGD, PowerSGDState, draw_q
from decomp.compress import PerTensor
from decomp.compress.base import HEADER_BYTES
from decomp.errors import ConfigError, UsageError
from decomp.torch.buckets import Buckets
from decomp.torch.flat import FlatModel


class _Compressed(Buckets):
    """What the compressed kinds share: a round is *armed* (its hooks compress and send) iff
    the algorithm state exists (and, for PowerSGD, the step compresses) when its first
    gradient arrives — the same on every rank; :meth:`complete` (the step) sends every bucket
    not sent yet and waits."""

    def __init__(self, flat: FlatModel, session: Any, bucket_cap_mb: float | None,
                 progress: str = "hooks") -> None:
        super().__init__(flat, session.transport.comm, bucket_cap_mb, progress)
        self.session = session
        self.env = session.env
        self.master = session.transport.comm.Get_rank() == 0
        self._done = 0  # buckets compressed and posted this round
        self._round: bool | None = None  # this round's hooks send (None: no gradient yet)

    def armed(self) -> bool:
        return self.session.state is not None

    @property
    def sent(self) -> int:
        """Buckets compressed and posted so far this round (by the hooks, before step())."""
        return self._done

    def _prepare(self, b: int) -> Any:  # compress bucket b, post it; the request
        raise NotImplementedError

    def _post(self, i: int) -> Any:
        base = super()._post(i)

        def hook(p: Any) -> None:
            if self.active and self._round is None:
                self._round = self.armed()
            base(p)
        return hook

    def _post_bucket(self) -> None:
        if self._round:
            self._reqs.append(self._prepare(self._done))
            self._done += 1
        self.posted += 1

    def _restart(self) -> None:
        if not self._round:  # nothing sent: the gradients just accumulate
            self._reset()
            return
        self.complete()  # nothing left in flight (a rank at step() posts the same buckets)
        raise ConfigError("overlap=True with a compressed method: a second backward() before "
                          "step() — the first one's buckets were already compressed and sent. "
                          "Wrap all but the last backward of a step in `with opt.no_sync():` "
                          "(as with DDP), or drop overlap=True")

    def complete(self) -> None:
        """The step: compress and post the buckets backward did not (a parameter without a
        gradient counts zero), wait for all; the round is over."""
        if self._done < len(self.buckets):
            self.flat.check_grads()
            while self._done < len(self.buckets):
                self._reqs.append(self._prepare(self._done))
                self._done += 1
        self._MPI.Request.Waitall(self._reqs)
        self._reset()

    def finish(self) -> None:
        """A round the step did not take (zero_grad after a skipped step, close): an armed
        one still sends every bucket (the other ranks post them too); else nothing."""
        if self._round:
            self.complete()
            return
        self._MPI.Request.Waitall(self._reqs)
        self._reset()

    def _reset(self) -> None:
        self._reqs = []
        self.posted = 0
        self._done = 0
        self._left[:] = self._size
        self._ready[:] = False
        self._round = None


class PreparedPerTensor(PerTensor):
    """The bound per-tensor compressor whose ``encode`` in an overlapped step returns the
    payload the buckets built (:meth:`UplinkBuckets.payload_for`); all else is PerTensor's."""

    overlap: UplinkBuckets

    @classmethod
    def of(cls, bound: PerTensor, overlap: UplinkBuckets) -> PreparedPerTensor:
        new = cls.__new__(cls)
        new.__dict__.update(bound.__dict__)
        new.overlap = overlap
        return new

    def encode(self, x: np.ndarray, key: Any = None) -> np.ndarray:
        return self.overlap.payload_for(x, key)


class UplinkBuckets(_Compressed):
    """EF21 / EF21-SGD / DCGD with a per-tensor compressor: module doc."""

    def __init__(self, flat: FlatModel, session: Any, bucket_cap_mb: float | None,
                 progress: str = "hooks") -> None:
        super().__init__(flat, session, bucket_cap_mb, progress)
        alg = session.algorithm
        C = session.env.codec(alg.compressor).inner
        self.codec: PerTensor = C
        self.estimator = isinstance(alg, EF21)  # compresses ∇f_i − g_i^t
        dtype = flat.grads.dtype
        self.nbytes = C.payload_bytes(flat.d, dtype)
        self.payload = np.zeros(self.nbytes, np.uint8)
        self._in = np.empty(flat.d, dtype) if self.estimator else None
        n = self.n
        self._recv = np.zeros(n * self.nbytes, np.uint8) if self.master else None
        self._views = None if self._recv is None else [
            self._recv[i * self.nbytes:(i + 1) * self.nbytes] for i in range(n)]
        self._spans: list[tuple[int, int, int, int]] = []  # parts [first, stop), bytes [lo, hi)
        self._counts: list[np.ndarray] = []
        self._displs: list[np.ndarray] = []
        last = len(self.buckets) - 1
        for b, bk in enumerate(self.buckets):
            first, stop = C.part_span(bk.params[-1], bk.params[0])
            lo, hi = C.part_bytes(first, stop, dtype)
            lo = 0 if b == last else lo  # the header travels with the first tensors
            self._spans.append((first, stop, lo, hi))
            self._counts.append(np.full(n, hi - lo, np.int64))
            self._displs.append(np.arange(n, dtype=np.int64) * self.nbytes + lo)
        self._poison = False
        session.env.use_codec(alg.compressor, PreparedPerTensor.of(C, self))
        self._install(session.transport)

    def _prepare(self, b: int) -> Any:
        state, grads, MPI = self.session.state, self.flat.grads, self._MPI
        bk, (first, stop, lo, hi) = self.buckets[b], self._spans[b]
        if b == 0:
            self._poison = False
        x = grads
        if self.estimator:
            sl = slice(bk.lo, bk.hi)
            x = self._in
            np.subtract(grads[sl], state.g_local[sl], out=x[sl])  # ∇f_i − g_i^t
        last = b == len(self.buckets) - 1
        if last:
            self.codec.write_payload_header(self.payload, grads.dtype)
        try:
            self.codec.encode_parts(x, self.env.key(state.t + 1), self.payload, first, stop)
        except FloatingPointError:  # a non-finite value: this rank's payload is poison
            self._poison = True
            self.payload[lo:hi] = 0
        if last and self._poison:
            self.payload[:HEADER_BYTES] = 0
        recv = [self._recv, self._counts[b], self._displs[b], MPI.BYTE] if self.master else None
        return self.comm.Igatherv([self.payload[lo:hi], MPI.BYTE], recv, root=0)

    def payload_for(self, x: np.ndarray, key: Any) -> np.ndarray:
        """The algorithm's encode in the step: this rank's payload, every bucket sent."""
        state = self.session.state
        if x.size != self.flat.d or state is None or key != self.env.key(state.t + 1):
            raise UsageError("overlap: the prepared per-tensor payload was asked for another "
                             "vector or step than the one backward compressed")
        self.complete()
        if self._poison:
            self.payload[:] = 0  # the whole payload, as encode_or_poison's
        return self.payload

    def _install(self, transport: Any) -> None:
        inner = transport.gather

        def gather(payload: np.ndarray | None, nbytes: int | None = None) -> Any:
            if payload is not self.payload:
                return inner(payload, nbytes)
            transport.bytes.up += payload.size  # as MasterWorker.gather counts
            return self._views

        transport.gather = gather


class OverlappedPowerSGD(PowerSGD):
    """PowerSGD whose first phase ran bucket by bucket during backward (module doc)."""

    overlap: LowRankBuckets

    @classmethod
    def of(cls, alg: PowerSGD, overlap: LowRankBuckets) -> OverlappedPowerSGD:
        new = cls.__new__(cls)
        new.__dict__.update(alg.__dict__)
        new.overlap = overlap
        return new

    def _step(self, env: Any, state: PowerSGDState) -> PowerSGDState:
        ov = self.overlap
        if not ov.compresses(state):
            ov.finish()  # an unarmed round: nothing was sent
            return super()._step(env, state)
        self.grad(env, state.x, state.t + 1)  # (the Trainer's backward runs here)
        M, buf, coef = self.buffers(env, state.x)
        ov.complete()
        ov.unpack(buf)
        tp = env.transport
        if tp.is_worker:  # as transport.allreduce_sum counts
            tp.bytes.up += buf.nbytes
        tp.bytes.down += buf.nbytes
        return self.second_phase(env, state, M, buf, coef, self._plan(env, state.x.size))


class LowRankBuckets(_Compressed):
    """PowerSGD: module doc."""

    def __init__(self, flat: FlatModel, session: Any, bucket_cap_mb: float | None,
                 progress: str = "hooks") -> None:
        super().__init__(flat, session, bucket_cap_mb, progress)
        alg = session.algorithm
        self.alg = OverlappedPowerSGD.of(alg, self)
        session.algorithm = self.alg
        self.plan = alg.plan(flat.layout, flat.d)
        self._parts: list[tuple[tuple[Any, ...], tuple[Any, ...], list[tuple[int, int, int]]]] = []
        self._packed: list[np.ndarray] = []
        for bk in self.buckets:
            blocks = tuple(b for b in self.plan.blocks if bk.lo <= b.offset < bk.hi)
            dense = tuple(t for t in self.plan.dense if bk.lo <= t[0] < bk.hi)
            segs, pos = [], 0  # (position in buf, in the packed buffer, size)
            for at, size in [(at, size) for _, size, at in dense] + \
                    [(b.p_at, b.m * b.r) for b in blocks]:
                segs.append((at, pos, size))
                pos += size
            self._parts.append((blocks, dense, segs))
            self._packed.append(np.empty(pos, flat.grads.dtype))

    def compresses(self, state: PowerSGDState | None) -> bool:
        return state is not None and state.t >= self.alg.start_iter and bool(self.plan.blocks)

    def armed(self) -> bool:
        return self.compresses(self.session.state)

    def _prepare(self, b: int) -> Any:
        state, env, alg = self.session.state, self.env, self.alg
        bk, (blocks, dense, segs), pk = self.buckets[b], self._parts[b], self._packed[b]
        M, buf, coef = alg.buffers(env, state.x)
        if b == 0 and not alg.warm_start:
            draw_q(state.q, self.plan, env.seed, env.n, state.t + 1)
        alg.first_phase(M, buf, coef, self.flat.grads, state.e, state.q, blocks, dense,
                        bk.lo, bk.hi)
        for at, pos, size in segs:
            pk[pos:pos + size] = buf[at:at + size]
        return self.comm.Iallreduce(self._MPI.IN_PLACE, pk, op=self._MPI.SUM)

    def unpack(self, buf: np.ndarray) -> None:
        for (_, _, segs), pk in zip(self._parts, self._packed, strict=True):
            for at, pos, size in segs:
                buf[at:at + size] = pk[pos:pos + size]


def compressed_methods() -> tuple[type, ...]:
    return (EF21, DCGD, PowerSGD)


def attach_compressed(flat: FlatModel, session: Any, algorithm: Any,
                      bucket_cap_mb: float | None) -> Buckets:
    """The overlap of a compressed method, or a clear error naming why it cannot."""
    name = type(algorithm).__name__
    alg = session.algorithm
    if type(algorithm) not in compressed_methods():
        raise ConfigError(
            f"overlap=True compresses and sends gradient buckets during backward for GD/SGD, "
            f"SGDM, AllreduceSGD (dense), EF21 / EF21-SGD and DCGD (per-tensor compressor) and "
            f"PowerSGD; {name} cannot (its step needs the whole gradient, or the whole model "
            "after the local step for a decentralized method's exchange): drop overlap=True")
    if type(algorithm) is PowerSGD:
        return LowRankBuckets(flat, session, bucket_cap_mb)
    if not isinstance(alg.compressor, PerTensor):
        raise ConfigError(f"overlap=True with {name} compresses each bucket's tensors alone: "
                          f"give a per-tensor compressor (compressor = {{ ..., per_tensor = "
                          f"true }}, or decomp.compress.PerTensor(...)), got {alg.compressor!r}"
                          "; or drop overlap=True")
    if alg.aggregation_for(session.transport.aggregation) == "tree":
        raise ConfigError(f"overlap=True with {name} gathers the buckets' payloads at the "
                          "master; aggregation='tree' sums whole payloads over the tree: use "
                          "aggregation='gather' with overlap=True, or drop overlap=True")
    return UplinkBuckets(flat, session, bucket_cap_mb)


__all__ = ["LowRankBuckets", "OverlappedPowerSGD", "PreparedPerTensor", "UplinkBuckets",
           "attach_compressed", "compressed_methods"]
