"""Timing by wrapping: where a step's wall time goes, measured around calls, not inside them.

A step's wall time is split into three sections:

- ``comm``: time inside the counted transport calls (:class:`TimedTransport`: ``exchange``,
  ``exchange_start`` / ``exchange_finish``, ``allgather``, ``allreduce_sum``, ``gather``,
  ``gather_start`` / ``gather_finish``, ``broadcast``, ``broadcast_bytes``; for a split call,
  the time to post it plus the time waiting for it, not the time it was in flight);
- ``compress``: time inside the codec calls (:class:`TimedCodec`: ``encode``, ``decode``,
  ``decode_add``);
- ``compute``: the rest of the step (gradients, mixing, checks) — the step's wall time, measured
  by entering the :class:`Stopwatch` around it (``with watch: ...``), minus the comm and
  compress time booked while it ran.

Algorithm code contains no timing calls: the env hands it a timed transport and timed codecs
(:class:`decomp.algorithms.NodeEnv`), and the algorithm base class's ``step`` enters the
watch around the method's own ``_step``. The proxies keep no per-call state and allocate
nothing per call (one ``perf_counter`` pair and one float addition).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import numpy as np

COMPUTE, COMPRESS, COMM = 0, 1, 2
SECTIONS = ("compute", "compress", "comm")

_clock = time.perf_counter


class Stopwatch:
    """Seconds per section: ``totals[COMPUTE]``, ``totals[COMPRESS]``, ``totals[COMM]``.

    Filled by the proxies (:meth:`add`) and by entering the watch around a whole step::

        with watch:              # books (step wall − compress − comm booked inside) as compute
            alg._step(env, state)

    Steps do not nest. :meth:`start` / :meth:`lap` remain for manual sectioning of code that is
    not wrapped. ``totals`` is one list for the watch's lifetime (:meth:`reset` zeroes it in
    place), so holders of a reference stay valid.
    """

    __slots__ = ("_inner0", "_step0", "_t", "totals")

    def __init__(self) -> None:
        self.totals = [0.0, 0.0, 0.0]
        self._t = 0.0
        self._step0 = 0.0
        self._inner0 = 0.0

    # --- whole steps ----------------------------------------------------------------------
    def __enter__(self) -> Stopwatch:
        self._inner0 = self.totals[COMPRESS] + self.totals[COMM]
        self._step0 = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        wall = _clock() - self._step0
        tot = self.totals
        tot[COMPUTE] += wall - (tot[COMPRESS] + tot[COMM] - self._inner0)

    # --- sections ---------------------------------------------------------------------------
    def add(self, section: int, seconds: float) -> None:
        """Book ``seconds`` to ``section``."""
        self.totals[section] += seconds

    def start(self) -> None:
        """Manual sectioning: start the clock (then :meth:`lap` after each part)."""
        self._t = _clock()

    def lap(self, section: int) -> None:
        """Manual sectioning: book the time since the last start/lap to ``section``."""
        now = _clock()
        self.totals[section] += now - self._t
        self._t = now

    def as_dict(self) -> dict[str, float]:
        """``{"compute_s": ..., "compress_s": ..., "comm_s": ...}`` (seconds)."""
        return {f"{name}_s": v for name, v in zip(SECTIONS, self.totals, strict=True)}

    def reset(self) -> None:
        """Zero every section (in place)."""
        self.totals[:] = (0.0, 0.0, 0.0)


class TimedTransport:
    """A transport whose counted calls book their wall time to ``watch``'s comm section.

    Every other attribute (``rank``, ``sources``, ``weights``, ``bytes``, ``min_uncounted``,
    ``close``, ...) is the wrapped transport's (``inner``), read through unchanged. Works for
    :class:`~decomp.comm.Neighborhood` and :class:`~decomp.comm.MasterWorker` alike.
    """

    __slots__ = ("inner", "watch")

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner = inner
        self.watch = watch

    def __getattr__(self, name: str) -> Any:
        if name in TimedTransport.__slots__:  # not yet set (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"TimedTransport({self.inner!r})"

    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        t0 = _clock()
        try:
            return self.inner.exchange(payload, nbytes)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        t0 = _clock()
        try:
            return self.inner.allgather(payload, nbytes)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def allreduce_sum(self, vec: np.ndarray) -> None:
        t0 = _clock()
        try:
            self.inner.allreduce_sum(vec)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        t0 = _clock()
        try:
            self.inner.exchange_start(payload, nbytes)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def exchange_finish(self) -> dict[int, np.ndarray]:
        t0 = _clock()
        try:
            return self.inner.exchange_finish()
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        t0 = _clock()
        try:
            return self.inner.gather(payload, nbytes)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        t0 = _clock()
        try:
            self.inner.gather_start(payload, nbytes)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def gather_finish(self) -> list[np.ndarray] | None:
        t0 = _clock()
        try:
            return self.inner.gather_finish()
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        t0 = _clock()
        try:
            return self.inner.broadcast_bytes(payload)
        finally:
            self.watch.totals[COMM] += _clock() - t0

    def broadcast(self, x: np.ndarray) -> None:
        t0 = _clock()
        try:
            self.inner.broadcast(x)
        finally:
            self.watch.totals[COMM] += _clock() - t0


class TimedCodec:
    """A compressor whose ``encode`` / ``decode`` / ``decode_add`` book their wall time to
    ``watch``'s compress section; everything else (``payload_bytes``, ``is_unbiased``, ...) is
    the wrapped compressor's (``inner``). Same arguments, same results, same bits."""

    __slots__ = ("inner", "watch")

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner = inner
        self.watch = watch

    def __getattr__(self, name: str) -> Any:
        if name in TimedCodec.__slots__:
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    def payload_bytes(self, d: int, dtype: Any = np.float64) -> int:
        return int(self.inner.payload_bytes(d, dtype))

    def encode(self, x: np.ndarray, key: Any = None) -> np.ndarray:
        t0 = _clock()
        try:
            return self.inner.encode(x, key)
        finally:
            self.watch.totals[COMPRESS] += _clock() - t0

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        t0 = _clock()
        try:
            self.inner.decode_add(payload, out, scale)
        finally:
            self.watch.totals[COMPRESS] += _clock() - t0

    def decode(self, payload: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        t0 = _clock()
        try:
            return self.inner.decode(payload, out)
        finally:
            self.watch.totals[COMPRESS] += _clock() - t0
