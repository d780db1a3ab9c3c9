"""The compressed downlink reads a worker's payload as (values, indices) only where that is
exactly what ``decode`` adds: Top-k and Rand-k, also through a timing wrapper -- never a wrapper
that rescales, such as Scaled(Rand-k) (reading its inner values summed unscaled values)."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm.timing import Stopwatch, TimedCodec
from decomp.compress import make_compressor
from decomp.compress.aggregate import sparse_parts
from decomp.rng import Key

D = 50


@pytest.mark.parametrize("spec", [{"kind": "topk", "k": 7}, {"kind": "randk", "k": 7},
                                  {"kind": "randk", "k": 7, "scaled": False},
                                  {"kind": "scaled", "inner": {"kind": "randk", "k": 7}}])
@pytest.mark.parametrize("timed", [False, True])
def test_sparse_parts_are_exactly_what_decode_adds(spec: dict, timed: bool) -> None:
    C = make_compressor(spec)
    x = np.random.default_rng(3).standard_normal(D)
    payload = C.encode(x, Key(1, 0, 2))
    decoded = C.decode(payload, d=D)
    codec = TimedCodec(C, Stopwatch()) if timed else C
    parts = sparse_parts(codec, payload, D)
    if parts is None:  # dense path: the master decodes (here: the rescaling wrapper)
        assert spec["kind"] == "scaled"
        return
    vals, idx = parts
    rebuilt = np.zeros(D)
    rebuilt[np.asarray(idx, dtype=np.int64)] = vals
    np.testing.assert_array_equal(rebuilt, decoded)
