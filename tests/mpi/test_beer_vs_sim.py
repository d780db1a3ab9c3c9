"""BEER over MPI (one node per rank, n = comm.size) equals decomp.sim's reference
(:mod:`decomp.sim.beer`) iterate for iterate, bit for bit (float64), on a ring and on the
complete graph, with Top-k, a scaled random compressor (two key streams per step) and the
identity, full and minibatch gradients; bytes counted = the reference's two payloads per
neighbour per step; every holder's copy of h_j and g_j equals node j's own.

Run under ``mpiexec -n 2`` and ``-n 4``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import run_iterates

from decomp.algorithms import Env
from decomp.algorithms.beer import BEER
from decomp.comm import Neighborhood
from decomp.compress import Identity, TopK, make_compressor
from decomp.data import load_dataset
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix

STEPS = 30
SEED = 7
LR = 0.2

#: case -> (registry name, the algorithm object: run over MPI and handed to its reference)
CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "beer-top3": ("beer", lambda: BEER(TopK(3), consensus_step=0.4, batch_size=16)),
    "beer-top3-full": ("beer", lambda: BEER(TopK(3), consensus_step=0.4)),
    "beer-scaled-randk": ("beer", lambda: BEER(make_compressor({"kind": "scaled", "inner": {
        "kind": "randk", "k": 5}}), consensus_step=0.3, batch_size=16)),
    "beer-identity": ("beer", lambda: BEER(Identity(), consensus_step=1.0)),
}


@pytest.fixture(scope="module")
def problems():
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED))


def _run(comm, problems, case: str, topology: str,
         every_step: Callable[..., None] | None = None):
    alg = CASES[case][1]()
    probs, x0 = problems
    W = mixing_matrix(topology, comm.size)
    tp = Neighborhood(W, comm)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR)
    state, xs = run_iterates(alg, env, x0, STEPS, every_step)
    ref = reference(alg, probs, x0, W, lr=LR, steps=STEPS, seed=SEED)
    return tp, state, xs, ref


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
@pytest.mark.parametrize("case", list(CASES))
def test_iterates_equal_reference_bit_for_bit(comm, problems, case: str, topology: str) -> None:
    tp, state, xs, ref = _run(comm, problems, case, topology)
    i = comm.rank
    same = (bool(np.array_equal(xs, ref.xs[:, i])),
            bool(np.array_equal(state.v, ref.state["V"][i])),
            bool(np.array_equal(state.h, ref.state["H"][i])),
            bool(np.array_equal(state.g, ref.state["G"][i])),
            bool(np.array_equal(state.grad_prev, ref.state["grad_prev"][i])))
    moved = float(np.abs(xs[-1] - xs[0]).max())
    counts = (tp.bytes.up, tp.bytes.down, int(ref.bytes_sent[i]), int(ref.bytes_received[i]))
    tp.close()
    got = comm.allgather((same, moved, counts, state.bad))
    assert all(all(g[0]) for g in got), [g[0] for g in got]  # x, v, h, g, grad_prev per rank
    assert min(g[1] for g in got) > 0  # every node moved
    for up, down, want_up, want_down in (g[2] for g in got):
        assert up > 0 and (up, down) == (want_up, want_down)
    assert all(g[3] == 0 for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_every_holder_keeps_the_owners_h_and_g(comm, problems, topology: str) -> None:
    """After every step, node i's copies of h_j and g_j (RH[1 + k], RG[1 + k]) equal node
    j's own h_j, g_j exactly."""
    bad: list[tuple[int, int, int]] = []

    def check(alg, env, state) -> None:
        owners = comm.allgather((state.h.copy(), state.g.copy()))
        for k, j in enumerate(env.transport.sources):
            if not (np.array_equal(state.RH[1 + k], owners[j][0])
                    and np.array_equal(state.RG[1 + k], owners[j][1])):
                bad.append((state.t, env.rank, j))
        if set(alg.replicas(env, state)) != {env.rank, *env.transport.sources}:
            bad.append((state.t, env.rank, -1))

    tp, _, _, _ = _run(comm, problems, "beer-scaled-randk", topology, every_step=check)
    tp.close()
    assert not any(comm.allgather(bad)), comm.allgather(bad)


#: time-varying W_t: the one-peer hypercube (n a power of two), per-edge replicas
SCHEDULE_CASES = ["beer-top3", "beer-scaled-randk", "beer-identity"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", SCHEDULE_CASES)
def test_on_the_one_peer_hypercube_iterates_and_edges_equal_the_reference(comm, problems,
                                                                          case: str) -> None:
    """BEER on the schedule W_t (runner's transport: one neighbourhood per W_t) equals the
    reference bit for bit; both ends of every edge hold the same ĥ and ĝ after every step;
    bytes = two payloads per step to the one current peer, none at the first step."""
    from decomp.runner.session import open_transport
    from decomp.topologies import mixing_schedule

    if comm.size & (comm.size - 1):
        pytest.skip("the one-peer hypercube needs n a power of two")
    alg = CASES[case][1]()
    probs, x0 = problems
    sched = mixing_schedule("one-peer-hypercube", comm.size)
    alg.check_mixing(sched)
    tp = open_transport("decentralized", comm, mixing=sched)
    env = Env(tp, probs[comm.rank], comm.size, SEED, LR)
    state = alg.init(env, x0)
    xs, unequal = [state.x.copy()], []
    for _ in range(STEPS):
        state = alg.step(env, state)
        xs.append(state.x.copy())
        mine = {k: (state.AH[p].copy(), state.BH[p].copy(), state.AG[p].copy(),
                    state.BG[p].copy()) for p, k in enumerate(env.transport.peers)}
        everyone = comm.allgather(mine)
        for k, (ah, bh, ag, bg) in mine.items():
            theirs = everyone[k][env.rank]
            if not (np.array_equal(ah, theirs[1]) and np.array_equal(bh, theirs[0])
                    and np.array_equal(ag, theirs[3]) and np.array_equal(bg, theirs[2])):
                unequal.append((state.t, env.rank, k))
    counts = (tp.bytes.up, tp.bytes.down)
    tp.close()
    ref = reference(alg, probs, x0, sched, lr=LR, steps=STEPS, seed=SEED)
    i = comm.rank
    same = (bool(np.array_equal(xs, ref.xs[:, i])),
            bool(np.array_equal(state.v, ref.state["V"][i])),
            bool(np.array_equal(state.AH, ref.state["AH"][i])),
            bool(np.array_equal(state.BG, ref.state["BG"][i])))
    msg = alg.compressor.payload_bytes(x0.size, x0.dtype)
    got = comm.allgather((same, counts, (int(ref.bytes_sent[i]), int(ref.bytes_received[i])),
                          unequal, state.bad))
    assert all(all(g[0]) for g in got), [g[0] for g in got]
    assert all(g[1] == g[2] == (2 * msg * (STEPS - 1),) * 2 for g in got), [g[1:3] for g in got]
    assert not any(g[3] for g in got), [g[3] for g in got]
    assert all(g[4] == 0 for g in got)
