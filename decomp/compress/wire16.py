"""16-bit wire for dense all-reduces (DDP's ``fp16_compress_hook`` / ``bf16_compress_hook``):
rounding a vector to float16 or bfloat16 as uint16 words and the mean of n such vectors.

MPI has no 16-bit float sum and numpy no bfloat16, so the all-reduce moves uint16 words
(:meth:`decomp.comm.MasterWorker.allreduce_chunks`: an Alltoall of chunks, the combine below
on each rank's chunk, an Allgather of the results) and the arithmetic is done here, in float32,
adding the ranks' rows in rank order — the same bits on any number of ranks and transports::

    w_i = r16(g_i);   m = r16((Σ_{i in rank order} float32(w_i)) / n)      (float32 adds)

r16: round to nearest even in the 16-bit format (float64 input is rounded once, correctly:
:func:`decomp.compress._wire.to_wire`). A value beyond the format's range (|v| > 65504 for
float16) or a non-finite one makes the whole vector NaN (a poison row: every rank's mean
becomes NaN and the model's finiteness check stops all ranks at the same step).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._wire import VDTYPE_CODE, from_wire, to_wire

__all__ = ["WIRE16", "mean16", "narrow16", "widen16"]

#: the 16-bit wire formats -> their code in decomp.compress._wire
WIRE16 = {"float16": VDTYPE_CODE["float16"], "bfloat16": VDTYPE_CODE["bfloat16"]}
_NAN = {VDTYPE_CODE["float16"]: np.uint16(0x7E00), VDTYPE_CODE["bfloat16"]: np.uint16(0x7FC0)}


def narrow16(vals: np.ndarray, code: int, out: np.ndarray) -> None:
    """out (uint16, like vals) ← r16(vals) in format ``code``; all NaN if a value does not fit
    or is not finite."""
    try:
        to_wire(vals, code, out.view(np.uint8))
    except FloatingPointError:
        out[:] = _NAN[code]


def widen16(words: np.ndarray, code: int) -> np.ndarray:
    """float32 values of uint16 ``words`` in format ``code`` (exact)."""
    return from_wire(words.view(np.uint8), code)


def mean16(rows: np.ndarray, code: int, n: int) -> np.ndarray:
    """r16((Σ_r float32(rows[r])) / n) as uint16 words: rows (ranks, c) uint16, added in row
    (rank) order in float32 (a dedicated master's row of zeros adds nothing)."""
    acc = widen16(rows[0], code).copy()
    for r in range(1, rows.shape[0]):
        acc += widen16(rows[r], code)
    acc /= np.float32(n)
    out = np.empty(rows.shape[1], dtype=np.uint16)
    narrow16(acc, code, out)
    return out
