"""PowerGossip over MPI (one node per rank, n = comm.size) equals decomp.sim's reference
(:mod:`decomp.sim.powergossip`) iterate for iterate, bit for bit, on a model of several
tensors (the breast-cancer logistic regression's 30 weights as a 6×4 matrix, a 3-vector and a
3×1 matrix: an artificial layout, as tests/mpi/test_powersgd_vs_sim.py), on a ring and on the
one-peer hypercube schedule; each edge's factors P, Q and power-step count too; the bytes the
transport counts equal the reference's (a message per edge: ``Neighborhood.swap``).

Exact at any n: every sum a node forms has a fixed order (its own messages minus the
neighbour's, W_ii first then the neighbours ascending), and no all-reduce is involved.
Run under ``mpiexec -n 2`` and ``-n 4``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import run_iterates

from decomp.algorithms import Env
from decomp.algorithms.powergossip import PowerGossip
from decomp.data import load_dataset
from decomp.layout import Layout
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix, mixing_schedule

STEPS, SEED, LR = 30, 7, 0.2
LAYOUT = Layout.from_shapes([("w", (6, 4)), ("b", (3,)), ("v", (3, 1))])

#: case -> (registry name, the algorithm object: run over MPI and handed to its reference)
CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "powergossip-rank1": ("powergossip", lambda: PowerGossip()),
    "powergossip-rank2-two-steps": ("powergossip", lambda: PowerGossip(rank=2,
                                                                       power_iterations=2)),
    "powergossip-cold-minibatch": ("powergossip", lambda: PowerGossip(
        warm_start=False, consensus_step=0.5, batch_size=16)),
}


@pytest.fixture(scope="module", params=["float64", "float32"])
def problems(request):
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype=request.param)
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED).astype(request.param))


def _run(comm, alg: Any, mixing: Any, problems: Any) -> None:
    from decomp.runner.session import open_transport

    probs, x0 = problems
    tp = open_transport("decentralized", comm, mixing=mixing)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR, layout=LAYOUT)
    state, xs = run_iterates(alg, env, x0, STEPS)
    counts = (tp.bytes.up, tp.bytes.down)
    tp.close()
    ref = reference(alg, probs, x0, mixing, lr=LR, steps=STEPS, seed=SEED, layout=LAYOUT)
    i = comm.rank
    same = (bool(np.array_equal(xs, ref.xs[:, i])),
            *(bool(np.array_equal(getattr(state, f), ref.state[f][i]))
              for f in ("P", "Q", "uses")))
    want = (int(ref.bytes_sent[i]), int(ref.bytes_received[i]))
    got = comm.allgather((same, counts, want, state.bad))
    assert all(all(g[0]) for g in got), [g[0] for g in got]  # x, P, Q, uses per rank
    assert all(g[1] == g[2] for g in got), [g[1:3] for g in got]
    assert all(g[3] == 0 for g in got)
    assert xs.dtype == x0.dtype and np.abs(ref.xs[-1] - ref.xs[0]).max() > 0.01

@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
def test_on_a_ring_iterates_equal_the_reference_bit_for_bit(comm, problems, case: str) -> None:
    _run(comm, CASES[case][1](), mixing_matrix("ring", comm.size), problems)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
def test_on_the_one_peer_hypercube_iterates_equal_the_reference(comm, problems,
                                                                case: str) -> None:
    """Per-edge factors kept between meetings; one peer (one message) per step."""
    if comm.size & (comm.size - 1):
        pytest.skip("the one-peer hypercube needs n a power of two")
    sched = mixing_schedule("one-peer-hypercube", comm.size)
    alg = CASES[case][1]()
    alg.check_mixing(sched)
    _run(comm, alg, sched, problems)


@pytest.mark.mpi(min_size=2)
def test_on_a_torch_model_equals_the_reference(comm) -> None:
    """A 10-16-3 MLP's FlatModel.layout (two weight matrices, two biases), float32 torch
    gradients: ulp-level (as test_torch_vs_sim.py), the bytes exactly."""
    pytest.importorskip("torch")
    from _torch_case import SEED as TSEED
    from _torch_case import problems as torch_problems

    from decomp.runner.session import open_transport

    probs = torch_problems(comm.size, False)
    layout = probs[0].flat.layout
    x0 = probs[0].flat.params.copy()
    mine = torch_problems(comm.size, False)[comm.rank]
    W = mixing_matrix("ring", comm.size)
    tp = open_transport("decentralized", comm, mixing=W)
    env = Env(tp, mine, comm.size, TSEED, 0.2, layout=layout)
    alg = PowerGossip(rank=2)
    assert len(alg.plan(layout, layout.d).blocks) == 2
    _, xs = run_iterates(alg, env, x0, 8)
    up = tp.bytes.up
    tp.close()
    ref = reference(alg, probs, x0, W, lr=0.2, steps=8, seed=TSEED, layout=layout)
    rel = float(np.abs(xs - ref.xs[:, comm.rank]).max() / np.abs(ref.xs).max())
    got = comm.allgather((rel, up, int(ref.bytes_sent[comm.rank])))
    assert all(r <= 1e-5 and u == b for r, u, b in got), got
    assert np.abs(xs[-1] - xs[0]).max() > 0
