"""16-bit wire for dense all-reduces (DDP's ``fp16_compress_hook`` / ``bf16_compress_hook``):
rounding a vector to float16 or bfloat16 as uint16 words and the mean of n such vectors.

MPI has no 16-bit float sum and numpy no bfloat16, so the all-reduce moves uint16 words
(:meth:`decomp.comm.MasterWorker.allreduce_chunks`: an Alltoall of chunks, the combine below
on each rank's chunk, an Allgather of the results) and the arithmetic is done here, in float32,
adding the ranks' rows in rank order — the same bits on any number of ranks and transports::

    w_i = r16(g_i);   m = r16((Σ_{i in rank order} float32(w_i)) / n)      (float32 adds)

r16: round to nearest even in the 16-bit format (float64 input is rounded once, correctly), as
:func:`decomp.compress._wire.to_wire` and numpy do, in numba kernels
(:mod:`decomp.kernels.half`: numpy's float16 conversion is a slow software loop). A value
beyond the format's range (|v| ≥ 65520 for float16) or a non-finite one makes the whole vector
NaN (a poison row: every rank's mean
becomes NaN and the model's finiteness check stops all ranks at the same step).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._wire import VDTYPE_CODE
from decomp.kernels import half

__all__ = ["WIRE16", "mean16", "narrow16", "widen16"]

#: the 16-bit wire formats -> their code in decomp.compress._wire
WIRE16 = {"float16": VDTYPE_CODE["float16"], "bfloat16": VDTYPE_CODE["bfloat16"]}
_NAN = {VDTYPE_CODE["float16"]: np.uint16(0x7E00), VDTYPE_CODE["bfloat16"]: np.uint16(0x7FC0)}


def narrow16(vals: np.ndarray, code: int, out: np.ndarray) -> None:
    """out (uint16, like vals) ← r16(vals) in format ``code``; all NaN if a value does not fit
    or is not finite (one numba pass: :func:`decomp.kernels.half.narrow`)."""
    if not half.narrow(vals, code, out):
        out[:] = _NAN[code]


def widen16(words: np.ndarray, code: int, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of uint16 ``words`` in format ``code`` (exact), into ``out`` (float32,
    like words) if given."""
    if out is None:
        out = np.empty(words.size, dtype=np.float32)
    half.widen(words, code, out.view(np.uint32))
    return out


def mean16(rows: np.ndarray, code: int, n: int) -> np.ndarray:
    """r16((Σ_r float32(rows[r])) / n) as uint16 words: rows (ranks, c) uint16, added in row
    (rank) order in float32 (a dedicated master's row of zeros adds nothing); all NaN if the
    mean does not fit or is not finite."""
    out = np.empty(rows.shape[1], dtype=np.uint16)
    if not half.mean_rows(np.ascontiguousarray(rows), code, np.float32(n), out):
        out[:] = _NAN[code]
    return out
