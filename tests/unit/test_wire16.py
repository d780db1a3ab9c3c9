"""Dense all-reduce SGD with a 16-bit wire both ways (GD's ``wire_dtype``, or ``compressor =
{kind = "identity", value_dtype = ...}``: DDP's fp16/bf16 compress hooks), on the thread
transports: equal to the reference bit for bit (float16 and bfloat16 wire, float32 and float64
models, shared and dedicated master); 2 bytes per value each way; the mean is the 16-bit
rounding of the float32 mean of the 16-bit rounded gradients; a value beyond float16's range
poisons every rank alike; the config spellings and their checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.algorithms import GD, REGISTRY, Env
from decomp.comm.threads import Board, ThreadMasterWorker, run_ranks
from decomp.compress import Identity, TopK
from decomp.compress.wire16 import WIRE16, mean16, narrow16, widen16
from decomp.data import load_dataset
from decomp.errors import ConfigError, DivergenceError
from decomp.problems import initial_point, split_problem
from decomp.sim import reference

SEED, LR, STEPS, N = 5, 0.2, 8, 3


def _run(alg: Any, dtype: str, master: str, scale: float = 1.0) -> tuple[list[Any], Any, Any]:
    ds = load_dataset("synthetic", n_samples=40 * N, n_features=12, seed=2, dtype=dtype)
    probs = split_problem(ds, "logistic", N)
    x0 = (initial_point("normal", 12, seed=1) * scale).astype(dtype)
    board = Board(N + (master == "dedicated"))

    def rank(r: int) -> tuple[np.ndarray, int, int]:
        tp = ThreadMasterWorker(r, board, master)
        env = Env(tp, probs[tp.worker] if tp.worker is not None else None, N, SEED, LR)
        st = alg.init(env, x0)
        xs = [st.x.copy()]
        for _ in range(STEPS):
            st = alg.step(env, st)
            xs.append(st.x.copy())
        return np.stack(xs), tp.bytes.up, tp.bytes.down

    return run_ranks(board, rank), probs, x0


@pytest.mark.parametrize("master", ["shared", "dedicated"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wire", ["float16", "bfloat16"])
def test_threads_equal_the_reference_bit_for_bit(wire: str, dtype: str, master: str) -> None:
    alg = GD(wire_dtype=wire, batch_size=8)
    out, probs, x0 = _run(alg, dtype, master)
    ref = reference(alg, probs, x0, lr=LR, steps=STEPS, seed=SEED)
    dense = reference(GD(batch_size=8), probs, x0, lr=LR, steps=STEPS, seed=SEED)
    for xs, up, down in out:
        np.testing.assert_array_equal(xs, ref.xs)
        assert down == STEPS * 12 * 2 and up in (0, STEPS * 12 * 2)
    assert (ref.bytes_up == STEPS * 12 * 2).all()
    gap = np.abs(ref.xs - dense.xs).max()  # the wire's rounding, not nothing, not more
    assert 0 < gap < (1e-2 if wire == "bfloat16" else 1e-3)
    assert alg.comm_pattern(12, N, dtype=dtype)[0].nbytes == 24


def test_the_mean_is_the_rounded_float32_mean_of_rounded_rows() -> None:
    rng = np.random.default_rng(0)
    G = rng.standard_normal((4, 50))
    for wire, np16 in (("float16", np.float16), ("bfloat16", None)):
        code = WIRE16[wire]
        rows = np.empty((4, 50), dtype=np.uint16)
        for i in range(4):
            narrow16(G[i], code, rows[i])
        got = widen16(mean16(rows, code, 4), code)
        W = widen16(rows.reshape(-1), code).reshape(4, 50)
        if np16 is not None:
            np.testing.assert_array_equal(W, G.astype(np.float16).astype(np.float32))
            want = ((((W[0] + W[1]) + W[2]) + W[3]) / np.float32(4)).astype(np.float16)
            np.testing.assert_array_equal(got, want.astype(np.float32))
        else:  # bfloat16: the upper 16 bits of float32, 8 significant bits
            assert (W.view(np.uint32) & 0xFFFF == 0).all()
            assert np.abs(W - G).max() <= 2.0 ** -8 * np.abs(G).max()
            assert np.abs(got - G.mean(axis=0)).max() <= 2.0 ** -7 * np.abs(G).max()


class _Huge:
    """A gradient oracle: worker 1's gradient is beyond float16's range, the others' are not."""

    def __init__(self, worker: int) -> None:
        self.worker = worker

    def grad(self, x: np.ndarray) -> np.ndarray:
        return np.full_like(x, 7e4 if self.worker == 1 else 1.0)


def test_a_value_beyond_float16_poisons_every_rank_alike() -> None:
    """|∇f_1| > 65504 cannot be sent in float16: its row becomes NaN, so does every rank's
    mean, and every rank raises DivergenceError at step 1 (none is left waiting)."""
    board = Board(N)

    def rank(r: int) -> str:
        tp = ThreadMasterWorker(r, board, "shared")
        env = Env(tp, _Huge(r), N, SEED, LR)
        alg = GD(wire_dtype="float16")
        st = alg.init(env, np.zeros(5))
        with pytest.raises(DivergenceError, match="step 1") as e:
            alg.step(env, st)
        return str(e.value)

    assert len(set(run_ranks(board, rank))) == 1
    words = np.empty(2, dtype=np.uint16)
    narrow16(np.array([1.0, 7e4]), WIRE16["float16"], words)
    assert np.isnan(widen16(words, WIRE16["float16"])).all()


def test_config_spellings_and_checks() -> None:
    spec = REGISTRY["sgd"]
    a = spec.build(compressor={"kind": "identity", "value_dtype": "bfloat16"}, batch_size=4)
    b = spec.build(options={"wire_dtype": "bfloat16"}, batch_size=4)
    assert a.wire_dtype == b.wire_dtype == "bfloat16"
    assert GD(Identity()).wire_dtype is None and GD().wire_dtype is None
    for kw, match in (({"compressor": TopK(2)}, "takes no compressor but an identity"),
                      ({"compressor": Identity("float32")}, "must be float16 or bfloat16"),
                      ({"wire_dtype": "int8"}, "wire_dtype must be one of"),
                      ({"compressor": Identity("float16"), "wire_dtype": "bfloat16"},
                       "give one of them")):
        with pytest.raises(ConfigError, match=match):
            GD(**kw)
    with pytest.raises(ConfigError, match=r"takes no compressor \(got 'topk'\) but an identity"):
        spec.build(compressor={"kind": "topk", "k": 2}, batch_size=4)
