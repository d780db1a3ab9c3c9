"""Per-tensor compression inside the algorithms: EF21 (master–worker, compressed downlink: the
sparse union of per-tensor Top-k payloads) and CHOCO-SGD (decentralized) with per-tensor Top-k
(and scaled QSGD) on a model of several tensors equal decomp.sim's reference bit for bit.

The model is the breast-cancer logistic regression's 30 weights, declared as three tensors
(an artificial layout: the numpy problem does not care, the compressor does): Top-k with
ratio 0.2 keeps 4 + 1 + 1 entries, where the flat Top-k(ratio 0.2) would keep 6 anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates

from decomp.algorithms import EF21, Env
from decomp.algorithms.choco import CHOCOSGD
from decomp.comm import Neighborhood
from decomp.compress import bind_attributes, make_compressor
from decomp.data import load_dataset
from decomp.layout import Layout
from decomp.problems import initial_point, split_problem
from decomp.sim import reference, simulate
from decomp.topologies import mixing_matrix

SEED = 5
STEPS = 30
LAYOUT = Layout.from_shapes([("w", (4, 5)), ("b", (5,)), ("s", (5,))])
SPECS: dict[str, dict[str, Any]] = {
    "topk": {"kind": "topk", "ratio": 0.2, "per_tensor": True},
    "scaled-qsgd": {"kind": "scaled", "inner": {"kind": "qsgd", "levels": 4},
                    "per_tensor": True},
}


def _recipe(name: str) -> Any:
    return make_compressor(SPECS[name])


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_ef21_per_tensor_is_bit_for_bit_the_reference(comm, master: str, spec: str) -> None:
    tp, env, probs, x0 = masterworker_setting(comm, master, "float64", SEED, 0.1)
    env = dataclasses.replace(env, layout=LAYOUT)
    assert x0.size == LAYOUT.d
    recipe_alg = EF21(_recipe(spec))
    alg = bind_attributes(recipe_alg, env.layout)  # as a session does
    state, xs = run_iterates(alg, env, x0, STEPS)
    # the reference binds the object's recipe to the layout itself
    ref = reference(recipe_alg, probs, x0, lr=0.1, steps=STEPS, seed=SEED, layout=LAYOUT)
    ok = bool(np.array_equal(xs, ref.xs))
    sent = (tp.worker, tp.bytes.up)
    got = comm.allgather((ok, sent))
    assert all(g[0] for g in got)
    assert all(b == ref.bytes_up[w] for _, (w, b) in got if w is not None)
    assert np.abs(xs[-1] - xs[0]).max() > 0
    if tp.worker is not None:  # per-tensor bytes, not the flat compressor's
        assert tp.bytes.up != make_compressor({**SPECS[spec], "per_tensor": False}) \
            .payload_bytes(LAYOUT.d) * (STEPS + 1)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_choco_per_tensor_is_bit_for_bit_the_reference(comm, topology: str, spec: str) -> None:
    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    probs = split_problem(ds, "logistic", comm.size)
    x0 = initial_point("normal", ds.n_features, seed=SEED)
    W = mixing_matrix(topology, comm.size)
    tp = Neighborhood(W, comm)
    recipe_alg = CHOCOSGD(_recipe(spec), consensus_step=0.3, batch_size=16)
    alg = bind_attributes(recipe_alg, LAYOUT)
    env = Env(tp, probs[comm.rank], comm.size, SEED, 0.2, layout=LAYOUT)
    assert env.codec(_recipe(spec)).inner.layout == LAYOUT  # env.codec binds a recipe
    state, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(recipe_alg, probs, x0, W, lr=0.2, steps=STEPS, seed=SEED, layout=LAYOUT)
    ok = bool(np.array_equal(xs, ref.xs[:, comm.rank]))
    ok &= bool(np.array_equal(state.R[0], ref.state["Xhat"][comm.rank]))
    counts = (tp.bytes.up, int(ref.bytes_sent[comm.rank]))
    tp.close()
    got = comm.allgather((ok, counts))
    assert all(g[0] for g in got)
    assert all(up == want for _, (up, want) in got)
    assert np.abs(xs[-1] - xs[0]).max() > 0


def test_reference_refuses_a_layout_of_another_length() -> None:
    from decomp.errors import ConfigError

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    probs = split_problem(ds, "logistic", 2)
    x0 = initial_point("normal", ds.n_features, seed=SEED)
    with pytest.raises(ConfigError, match="d = 31"):
        simulate("ef21", probs, x0, lr=0.1, steps=2, compressor=SPECS["topk"],
                 layout=Layout.flat(31))
    one = simulate("ef21", probs, x0, lr=0.1, steps=3, compressor=SPECS["topk"])  # one slot
    flat = simulate("ef21", probs, x0, lr=0.1, steps=3, compressor={"kind": "topk",
                                                                    "ratio": 0.2})
    assert np.array_equal(one.xs, flat.xs)


@pytest.mark.mpi(min_size=2)
def test_ef21_per_tensor_on_a_torch_model_equals_the_reference(comm) -> None:
    """The layout of a real model (FlatModel.layout of a 10-16-3 MLP: four tensors) into Env
    and into the reference; float32 torch gradients, so a ulp-level tolerance as in
    test_torch_vs_sim.py; the bytes exactly."""
    pytest.importorskip("torch")
    from _torch_case import SEED as TSEED
    from _torch_case import problems as torch_problems

    from decomp.comm import MasterWorker

    tp = MasterWorker(comm, "shared")
    probs = torch_problems(tp.n_workers, False)
    layout = probs[0].flat.layout
    assert len(layout) == 4
    x0 = probs[0].flat.params.copy()
    mine = torch_problems(tp.n_workers, False)[tp.worker]
    env = Env(tp, mine, tp.n_workers, TSEED, 0.2, layout=layout)
    recipe_alg = EF21(_recipe("topk"))
    alg = bind_attributes(recipe_alg, layout)
    _, xs = run_iterates(alg, env, x0, 8)
    ref = reference(recipe_alg, probs, x0, lr=0.2, steps=8, seed=TSEED, layout=layout)
    rel = float(np.abs(xs - ref.xs).max() / np.abs(ref.xs).max())
    got = comm.allgather((rel, tp.worker, tp.bytes.up))
    assert all(r <= 2e-6 for r, _, _ in got), got
    assert all(b == ref.bytes_up[w] for _, w, b in got if w is not None)
