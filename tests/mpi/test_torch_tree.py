"""``DistributedOptimizer(..., aggregation="tree")`` and ``Trainer(..., aggregation="tree")``
pass the setting through: under the user's own loop the compressed master–worker methods
summed over the tree equal decomp.sim with the tree's grouping, iterate for iterate (the
algorithm's own update, float32 torch gradients as in test_torch_optimizer.py), and count what
the reference counts per rank."""

from __future__ import annotations

import numpy as np
import pytest
from _torch_case import net as _net
from test_torch_optimizer import LR, MW, SEED, STEPS, _loop, _setup
from test_torch_vs_sim import LR as TLR
from test_torch_vs_sim import STEPS as TSTEPS
from test_torch_vs_sim import TOL, _trainer
from torch import nn

from decomp.algorithms import EF21
from decomp.compress import TopK
from decomp.sim import simulate
from decomp.torch import make_torch_problems

CASES = ["ef-top", "ef21-top", "ef21-sgd-top", "ef21-sgdm", "dcgd"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", CASES)
def test_the_optimizer_on_the_tree_equals_the_reference(comm, case: str) -> None:
    make, name, kw, batch = MW[case]
    probs, x0, opt, prob = _setup(comm, make, None, aggregation="tree")
    assert opt.transport.aggregation == "tree"
    first = 0 if opt.kind == "estimator" else 1
    X = _loop(opt, prob, comm.Get_rank(), batch=batch, first=first)
    kw = {**kw, "layout": probs[0].flat.layout, "aggregation": "tree"}
    steps = STEPS if first else STEPS - 1  # EF21: init + STEPS − 1 exchanges
    tr = simulate(name, probs, x0, lr=LR, steps=STEPS, seed=SEED, **kw)
    exact = bool(np.array_equal(X, tr.xs[1:]))
    counted = simulate(name, probs, x0, lr=LR, steps=steps, seed=SEED, **kw).bytes_up
    got = comm.allgather((exact, opt.bytes.up))
    assert all(e for e, _ in got), case
    assert [b for _, b in got] == counted.tolist()


@pytest.mark.mpi(min_size=2)
def test_the_trainer_on_the_tree_equals_the_reference(comm) -> None:
    """The Trainer's EF21-SGD on the tree: x^T within the torch tolerance of the tree-ordered
    reference on the Trainer's own shards, and bits_up the reference's (per-rank subtree
    sums, averaged)."""
    ds, tr = _trainer(comm, EF21(TopK(ratio=0.05)), lr=TLR, batch_size=8, aggregation="tree")
    assert tr.transport.aggregation == "tree"
    hist = tr.fit(steps=TSTEPS, eval_every=4)
    probs = make_torch_problems(_net(False), nn.CrossEntropyLoss(), ds.X, ds.y, tr.parts,
                                seed=SEED)
    ref = simulate("ef21_sgd", probs, probs[0].flat.params.copy(), lr=TLR, steps=TSTEPS,
                   seed=SEED, compressor=TopK(ratio=0.05), batch_size=8, aggregation="tree")
    rel = float(np.abs(tr.x - ref.xs[-1]).max() / np.abs(ref.xs[-1]).max())
    assert all(r <= TOL for r in comm.allgather(rel))
    assert hist[-1]["bits_up"] == 8 * ref.bytes_up.mean()
