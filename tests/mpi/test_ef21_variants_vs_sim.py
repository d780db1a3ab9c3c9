"""EF21-PP and EF21-BC over MPI equal their references (decomp/sim/ef21_variants.py) iterate
for iterate, bit for bit, with the bytes that crossed MPI equal to the bytes the reference
predicts (only participants send; the downlink is one C_M payload)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates

from decomp.algorithms.ef21_bc import EF21BC
from decomp.algorithms.ef21_pp import EF21PP
from decomp.compress import Identity, RandK, Scaled, TopK
from decomp.sim import reference

STEPS = 40
SEED = 5

CASES: dict[str, tuple[str, Any]] = {
    "pp-bernoulli-top2": ("ef21_pp", lambda: EF21PP(TopK(2), p=0.5)),
    "pp-fixed-top2": ("ef21_pp", lambda: EF21PP(TopK(2), p=0.5, sampling="fixed")),
    "pp-group-top2": ("ef21_pp", lambda: EF21PP(TopK(2), p=0.5, transport="group")),
    "pp-model-full-top1": ("ef21_pp", lambda: EF21PP(TopK(1), p=0.3, init="full",
                                                     downlink="model")),
    "pp-randk-sgd": ("ef21_pp", lambda: EF21PP(RandK(4, scaled=False), p=0.7, batch_size=16)),
    # the compressed downlink sums a Scaled payload as its inner one's (see the report):
    # Scaled compressors are covered with the dense-model downlink
    "pp-scaled-randk-model": ("ef21_pp", lambda: EF21PP(Scaled(RandK(4)), p=0.7,
                                                        downlink="model")),
    "bc-top2-top3": ("ef21_bc", lambda: EF21BC(TopK(2), downlink_compressor=TopK(3))),
    "bc-full-top1-randk": ("ef21_bc", lambda: EF21BC(TopK(1), init="full",
                                                     downlink_compressor={
                                                         "kind": "randk", "k": 5,
                                                         "scaled": False})),
    "bc-sgd-top2": ("ef21_bc", lambda: EF21BC(TopK(2), downlink_compressor=TopK(4),
                                              batch_size=16)),
    "bc-top2-identity": ("ef21_bc", lambda: EF21BC(TopK(2), downlink_compressor=Identity())),
}


def _run(comm: Any, master: str, dtype: str, case: str, lr: float = 0.1):
    alg = CASES[case][1]()  # one object: run over MPI and handed to its reference
    tp, env, probs, x0 = masterworker_setting(comm, master, dtype, SEED, lr)
    state, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=lr, steps=STEPS, seed=SEED)
    return tp, state, xs, ref


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_iterates_and_bytes_equal_the_reference(comm, master: str, dtype: str,
                                                case: str) -> None:
    tp, state, xs, ref = _run(comm, master, dtype, case)
    ok = bool(np.array_equal(xs, ref.xs)) and xs.dtype == np.dtype(dtype)
    if tp.is_worker:
        ok &= bool(np.array_equal(state.g_local, ref.state["G"][tp.worker]))
        ok &= tp.bytes.up == ref.bytes_up[tp.worker]
    if state.g is not None:
        ok &= bool(np.array_equal(state.g, ref.state["g"]))
    if tp.is_master and CASES[case][0] == "ef21_bc":
        ok &= bool(np.array_equal(state.g_tilde, ref.state["g_tilde"]))
    oks = comm.allgather(ok)
    assert all(oks), f"ranks differing from decomp.sim: {oks}"
    assert np.abs(xs[-1] - xs[0]).max() > 0  # the run moved


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["pp-bernoulli-top2", "pp-group-top2"])
def test_only_participants_send(comm, case: str) -> None:
    """A worker's uplink bytes are the payload size times the steps it took part in (plus
    the initial round), and the master received exactly the participants' bytes."""
    tp, _, xs, ref = _run(comm, "dedicated", "float64", case)
    S = ref.state["S"]  # (T+1, n) participation masks, row 0 the initial round
    per = TopK(2).payload_bytes(xs.shape[1], np.float64)
    if tp.is_worker:
        assert tp.bytes.up == per * int(S[:, tp.worker].sum())
    total = comm.allreduce(tp.bytes.up)
    assert total == per * int(S.sum())
    assert S[1:].sum() < S[1:].size  # some worker sat some step out


@pytest.mark.mpi(min_size=2)
def test_bc_downlink_is_one_master_payload_per_step(comm) -> None:
    """EF21-BC's downlink: one C_M payload (Top-3 of d = 30 float64 values) per step, b^0
    included; never the model."""
    tp, _, xs, ref = _run(comm, "shared", "float64", "bc-top2-top3")
    d = xs.shape[1]
    if not tp.is_master:
        assert tp.bytes.down == int(ref.state["down_bytes"].sum())
        assert tp.bytes.down == (STEPS + 1) * TopK(3).payload_bytes(d, np.float64)
        assert tp.bytes.down < STEPS * d * 8
