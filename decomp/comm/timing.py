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
(:class:`decomp.algorithms.env.Env`), and the algorithm base classes' ``step`` (both families)
enter the watch around the method's own ``_step``. Both proxies are
:class:`~decomp.comm.proxy.CallProxy` s over a protocol's method list (the transport's counted
calls, :data:`~decomp.comm.protocols.COUNTED_CALLS`; the codec's encode / decode calls); they
keep no per-call state (one ``perf_counter`` pair and one float addition per call).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import numpy as np

from decomp.comm.protocols import COUNTED_CALLS
from decomp.comm.proxy import CallProxy

COMPUTE, COMPRESS, COMM = 0, 1, 2
SECTIONS = ("compute", "compress", "comm")

_clock = time.perf_counter


class Stopwatch:
    """Seconds per section: ``totals[COMPUTE]``, ``totals[COMPRESS]``, ``totals[COMM]``.

    Filled by the proxies (:meth:`add`) and by entering the watch around a whole step::

        with watch:              # books (step wall − compress − comm booked inside) as compute
            alg._step(env, state)

    Steps do not nest. ``totals`` is one list for the watch's lifetime (:meth:`reset` zeroes it in
    place), so holders of a reference stay valid.
    """

    __slots__ = ("_inner0", "_step0", "totals")

    def __init__(self) -> None:
        self.totals = [0.0, 0.0, 0.0]
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

    def as_dict(self) -> dict[str, float]:
        """``{"compute_s": ..., "compress_s": ..., "comm_s": ...}`` (seconds)."""
        return {f"{name}_s": v for name, v in zip(SECTIONS, self.totals, strict=True)}

    def reset(self) -> None:
        """Zero every section (in place)."""
        self.totals[:] = (0.0, 0.0, 0.0)


class _Timed(CallProxy):
    """A :class:`CallProxy` booking the wall time of each wrapped call to ``watch``'s
    ``section``."""

    __slots__ = ("watch",)
    section: int = COMM

    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        super().__init__(inner)
        self.watch = watch

    def _enter(self, call: str) -> float:
        return _clock()

    def _exit(self, call: str, token: float) -> None:
        self.watch.totals[self.section] += _clock() - token


class TimedTransport(_Timed):
    """A transport whose counted calls (:data:`~decomp.comm.protocols.COUNTED_CALLS`) book
    their wall time to ``watch``'s comm section.

    Every other attribute (``rank``, ``sources``, ``weights``, ``bytes``, ``min_uncounted``,
    ``close``, ...) is the wrapped transport's (``inner``), read through unchanged. Works for
    either protocol (:mod:`decomp.comm.protocols`).
    """

    __slots__ = ()
    calls = COUNTED_CALLS
    section = COMM


class TimedCodec(_Timed):
    """A compressor whose ``encode`` / ``decode`` / ``decode_add`` book their wall time to
    ``watch``'s compress section; everything else (``payload_bytes``, ``is_unbiased``, ...) is
    the wrapped compressor's (``inner``). Same arguments, same results, same bits."""

    __slots__ = ()
    calls = ("encode", "decode", "decode_add")
    section = COMPRESS

    def __repr__(self) -> str:
        return repr(self.inner)

    def payload_bytes(self, d: int, dtype: Any = np.float64) -> int:
        return int(self.inner.payload_bytes(d, dtype))
