"""Dense all-reduce SGD with a 16-bit wire both ways (``sgd`` with ``wire_dtype`` or an
identity compressor of 16-bit ``value_dtype``: DDP's fp16/bf16 compress hooks) over MPI equals
decomp.sim's reference bit for bit at any number of ranks: the all-reduce moves uint16 words
(an Alltoall of chunks, a float32 sum of the rows in rank order on the chunk's owner, an
Allgather), so no sum is left to MPI's order; shared and dedicated master, float32 and float64
models; the bytes are 2 per value each way. Run under ``mpiexec -n 2`` and ``-n 4``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates

from decomp.algorithms import GD
from decomp.compress import Identity
from decomp.sim import reference

SEED, STEPS, LR = 11, 30, 0.3

CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "sgd-float16-wire": ("sgd", lambda: GD(wire_dtype="float16", batch_size=16)),
    "sgd-bfloat16-identity": ("sgd", lambda: GD(Identity("bfloat16"), batch_size=16)),
    "gd-bfloat16-wire": ("gd", lambda: GD(wire_dtype="bfloat16")),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_iterates_equal_reference_bit_for_bit(comm, master: str, dtype: str, case: str) -> None:
    tp, env, probs, x0 = masterworker_setting(comm, master, dtype, SEED, LR)
    alg = CASES[case][1]()
    _, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=LR, steps=STEPS, seed=SEED)
    got = comm.allgather((bool(np.array_equal(xs, ref.xs)), tp.worker, tp.bytes.up,
                          tp.bytes.down))
    assert all(g[0] for g in got), got
    assert all(b == ref.bytes_up[w] == STEPS * x0.size * 2 for _, w, b, _ in got
               if w is not None), got
    assert all(down == STEPS * x0.size * 2 for *_, down in got), got
    assert xs.dtype == np.dtype(dtype) and np.abs(xs[-1] - xs[0]).max() > 0.01
