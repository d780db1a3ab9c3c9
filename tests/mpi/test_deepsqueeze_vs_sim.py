"""DeepSqueeze over MPI (one node per rank, n = comm.size) equals decomp.sim's reference
(:mod:`decomp.sim.deepsqueeze`) iterate for iterate, bit for bit (float64): on a ring and on
the complete graph (static W) and on the one-peer hypercube schedule W_t, with Top-k, a scaled
random compressor (keys from (seed, rank, step)) and the identity, full and minibatch
gradients; the compression errors e_i too; bytes = one payload per neighbour per step.

Run under ``mpiexec -n 2`` and ``-n 4``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import run_iterates

from decomp.algorithms import Env
from decomp.algorithms.deepsqueeze import DeepSqueeze
from decomp.comm import Neighborhood
from decomp.compress import Identity, TopK, make_compressor
from decomp.data import load_dataset
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix, mixing_schedule

STEPS = 30
SEED = 7
LR = 0.2

#: case -> (registry name, the algorithm object: run over MPI and handed to its reference)
CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "deepsqueeze-top3": ("deepsqueeze", lambda: DeepSqueeze(TopK(3), consensus_step=0.4,
                                                            batch_size=16)),
    "deepsqueeze-top3-full": ("deepsqueeze", lambda: DeepSqueeze(TopK(3), consensus_step=0.4)),
    "deepsqueeze-scaled-randk": ("deepsqueeze", lambda: DeepSqueeze(make_compressor(
        {"kind": "scaled", "inner": {"kind": "randk", "k": 5}}), consensus_step=0.3,
        batch_size=16)),
    "deepsqueeze-identity": ("deepsqueeze", lambda: DeepSqueeze(Identity(), consensus_step=1.0)),
}


@pytest.fixture(scope="module")
def problems():
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED))


def _check(comm, alg: Any, state: Any, xs: np.ndarray, ref: Any, counts: tuple[int, int],
           msgs: int) -> None:
    """Every rank: x^0..x^T and e_i equal the reference bit for bit, bytes sent/received =
    the reference's = ``msgs`` payloads, the node moved, no non-finite step."""
    i = comm.rank
    same = (bool(np.array_equal(xs, ref.xs[:, i])),
            bool(np.array_equal(state.e, ref.state["E"][i])))
    want = (int(ref.bytes_sent[i]), int(ref.bytes_received[i]))
    per = alg.compressor.payload_bytes(xs.shape[1], xs.dtype)
    got = comm.allgather((same, counts, want, float(np.abs(xs[-1] - xs[0]).max()), state.bad))
    assert all(all(g[0]) for g in got), [g[0] for g in got]  # x, e per rank
    assert all(g[1] == g[2] for g in got), [g[1:3] for g in got]
    assert all(g[2][0] == msgs * per for g in got), [g[2] for g in got]
    assert min(g[3] for g in got) > 0 and all(g[4] == 0 for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
@pytest.mark.parametrize("case", list(CASES))
def test_iterates_equal_reference_bit_for_bit(comm, problems, case: str, topology: str) -> None:
    alg = CASES[case][1]()
    probs, x0 = problems
    W = mixing_matrix(topology, comm.size)
    tp = Neighborhood(W, comm)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR)
    state, xs = run_iterates(alg, env, x0, STEPS)
    counts = (tp.bytes.up, tp.bytes.down)
    deg = len(tp.sources)
    tp.close()
    ref = reference(alg, probs, x0, W, lr=LR, steps=STEPS, seed=SEED)
    _check(comm, alg, state, xs, ref, counts, STEPS * deg)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
def test_on_the_one_peer_hypercube_iterates_equal_the_reference(comm, problems,
                                                                case: str) -> None:
    """No replicas: each step mixes W_t's current neighbours' payloads (one peer, one
    message per step), through the runner's transport for a schedule."""
    from decomp.runner.session import open_transport

    if comm.size & (comm.size - 1):
        pytest.skip("the one-peer hypercube needs n a power of two")
    alg = CASES[case][1]()
    probs, x0 = problems
    sched = mixing_schedule("one-peer-hypercube", comm.size)
    alg.check_mixing(sched)
    tp = open_transport("decentralized", comm, mixing=sched)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR)
    state, xs = run_iterates(alg, env, x0, STEPS)
    counts = (tp.bytes.up, tp.bytes.down)
    tp.close()
    ref = reference(alg, probs, x0, sched, lr=LR, steps=STEPS, seed=SEED)
    _check(comm, alg, state, xs, ref, counts, STEPS)
