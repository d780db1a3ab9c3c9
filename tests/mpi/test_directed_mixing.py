"""Directed and time-varying mixing matrices over MPI, against the reference.

Every other MPI-vs-reference test uses a symmetric W (ring, complete graph), where W_ij = W_ji:
a node that weighted a neighbour with the transposed entry, or listened to its out-neighbours
instead of its in-neighbours, would pass them. Here W is directed (docs/topologies.md,
"Directed W"):

- D-PSGD, which allows any doubly stochastic W, on the one-peer exponential graph
  (W_ii = W_i,i+1 = 1/2) and on a skewed ring (W_ii = 1/2, W_i,i+1 = 0.3, W_i,i−1 = 0.2: the
  same support both ways, different weights) equals ``simulate_decentralized`` bit for bit,
  which equals a dense W @ X recurrence to rounding; bytes as the reference counts them;
- a node using the transposed weight W_ji is detected (and would not be on a symmetric W);
- time-varying W_t: D-PSGD over the one-peer exponential schedule (directed) and the one-peer
  hypercube schedule (symmetric), one transport per W_t, equals the reference step by step,
  and pure gossip (γ = 0) averages exactly in one period when n is a power of two;
- the runner refuses a directed W for DCD/ECD/CHOCO with the reason, on every rank, and
  runs D-PSGD on it to the same metrics as ``decomp sim``.

Directed W needs n >= 3 (at n = 2 every doubly stochastic W is symmetric): these tests run at 4
ranks under `make test-mpi` and at 8 ranks from tests/e2e/test_directed_mixing_8ranks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from decomp.algorithms import DECENTRALIZED, Env
from decomp.comm import Neighborhood
from decomp.data import load_dataset
from decomp.problems import initial_point, oracle_grad, split_problem
from decomp.sim import simulate_decentralized
from decomp.sim.decentralized import _rows, mix
from decomp.topologies import (
    MixingMatrix,
    mixing_matrix,
    one_peer_exponential,
    one_peer_hypercube,
    resolve_mixing,
)

STEPS = 20
SEED = 7
LR = 0.2
BATCH = 16


def skewed_ring(n: int) -> MixingMatrix:
    P = np.roll(np.eye(n), 1, axis=1)  # P[i, i+1] = 1
    return MixingMatrix(0.5 * np.eye(n) + 0.3 * P + 0.2 * P.T, name=f"skewed-ring({n})",
                        symmetric=False).validate(n)


DIRECTED: dict[str, Callable[[int], MixingMatrix]] = {
    "one-peer-exponential": lambda n: resolve_mixing("one-peer-exponential", n),
    "skewed-ring": skewed_ring,
}


class _OneStep(MixingMatrix):
    """One W_t of a schedule: validated without the connectivity check (a single one-peer W_t
    is usually disconnected; the schedule is connected over a period)."""

    def validate(self, n_ranks: int | None = None, *, tol: float | None = None,
                 connected: bool = True) -> MixingMatrix:
        return super().validate(n_ranks, tol=tol, connected=False)


def _one_step(W: MixingMatrix) -> MixingMatrix:
    return _OneStep(W.W, graph=W.graph, name=W.name, symmetric=W.symmetric)


@pytest.fixture(scope="module")
def problems():
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED))


def _dense_reference(Ws: list[np.ndarray], probs, x0: np.ndarray, lr: float,
                     X0: np.ndarray | None = None) -> np.ndarray:
    """X ← W_t X − γ G(X) with numpy's dense product: independent of the row-by-row sums."""
    n = len(probs)
    X = np.tile(x0, (n, 1)) if X0 is None else X0.copy()
    xs = [X.copy()]
    for t in range(1, STEPS + 1):
        G = np.stack([oracle_grad(p, X[i], seed=SEED, worker=i, step=t, batch_size=BATCH)
                      for i, p in enumerate(probs)])
        X = Ws[(t - 1) % len(Ws)] @ X - lr * G
        xs.append(X.copy())
    return np.stack(xs)


def _run_dpsgd(comm, problems, transports: list[Any], lr: float = LR,
               x_start: np.ndarray | None = None) -> np.ndarray:
    """D-PSGD on this rank; step t uses transports[(t - 1) % len(transports)]."""
    probs, x0 = problems
    alg = DECENTRALIZED["dpsgd"](batch_size=BATCH)
    envs = [Env(tp, probs[comm.rank], comm.size, SEED, lr) for tp in transports]
    state = alg.init(envs[0], x0 if x_start is None else x_start)
    xs = [state.x.copy()]
    for t in range(STEPS):
        state = alg.step(envs[t % len(envs)], state)
        xs.append(state.x.copy())
    assert state.bad == 0
    return np.stack(xs)


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize("kind", list(DIRECTED))
def test_dpsgd_on_a_directed_W_equals_the_reference(comm, problems, kind: str) -> None:
    W = DIRECTED[kind](comm.size)
    assert not W.symmetric and not np.allclose(W.dense(), W.dense().T)
    tp = Neighborhood(W, comm)
    directed = tp.sources != tp.destinations or kind == "skewed-ring"
    xs = _run_dpsgd(comm, problems, [tp])
    probs, x0 = problems
    ref = simulate_decentralized("dpsgd", probs, x0, W, lr=LR, steps=STEPS, seed=SEED,
                                 batch_size=BATCH)
    dense = _dense_reference([W.dense()], probs, x0, LR)
    exact = bool(np.array_equal(xs, ref.xs[:, comm.rank]))
    rel = float(np.abs(ref.xs - dense).max() / np.abs(dense).max())
    counts = (tp.bytes.up, tp.bytes.down, int(ref.bytes_sent[comm.rank]),
              int(ref.bytes_received[comm.rank]))
    tp.close()
    got = comm.allgather((exact, rel, counts, directed))
    assert all(g[0] for g in got), "MPI iterates differ from decomp.sim"
    assert max(g[1] for g in got) <= 1e-13, [g[1] for g in got]
    assert all(g[2][:2] == g[2][2:] for g in got), [g[2] for g in got]
    assert all(g[3] for g in got)


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize("kind", ["skewed-ring", "ring"])
def test_a_transposed_weight_is_detected(comm, problems, kind: str) -> None:
    """Node i weighting in-neighbour j with W_ji instead of W_ij: on the skewed ring the
    iterates leave the reference at once; on a symmetric W the same slip is invisible, which
    is why the directed cases above exist."""
    W = skewed_ring(comm.size) if kind == "skewed-ring" else mixing_matrix("ring", comm.size)
    Wd = W.dense()
    tp = Neighborhood(W, comm)
    tp.weights = {j: float(Wd[j, comm.rank]) for j in tp.sources}  # the planted slip
    xs = _run_dpsgd(comm, problems, [tp])
    tp.close()
    probs, x0 = problems
    ref = simulate_decentralized("dpsgd", probs, x0, W, lr=LR, steps=STEPS, seed=SEED,
                                 batch_size=BATCH).xs[:, comm.rank]
    rel = float(np.abs(xs - ref).max() / np.abs(ref).max())
    worst = max(comm.allgather(rel))
    if kind == "skewed-ring":
        assert worst > 1e-3, worst
    else:
        assert worst <= 1e-12, worst


def _schedule(kind: str, n: int) -> list[MixingMatrix]:
    make = one_peer_exponential if kind == "one-peer-exponential" else one_peer_hypercube
    tau = max(1, int(np.ceil(np.log2(n))))
    return [make(n, t) for t in range(tau)]


def _time_varying_cases() -> list[str]:
    return ["one-peer-exponential", "one-peer-hypercube"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind", _time_varying_cases())
def test_time_varying_dpsgd_equals_the_reference(comm, problems, kind: str) -> None:
    n = comm.size
    if kind == "one-peer-hypercube" and n & (n - 1):
        pytest.skip("the one-peer hypercube needs n a power of two")
    Ws = _schedule(kind, n)
    tps = [Neighborhood(_one_step(W), comm) for W in Ws]
    xs = _run_dpsgd(comm, problems, tps)
    for tp in tps:
        tp.close()
    probs, x0 = problems
    # the reference, row by row in the nodes' order (decomp.sim's mix), one W_t per step
    X = np.tile(x0, (n, 1))
    ref = [X[comm.rank].copy()]
    for t in range(1, STEPS + 1):
        G = np.stack([oracle_grad(p, X[i], seed=SEED, worker=i, step=t, batch_size=BATCH)
                      for i, p in enumerate(probs)])
        X = mix(_rows(Ws[(t - 1) % len(Ws)]), X) - LR * G
        ref.append(X[comm.rank].copy())
    dense = _dense_reference([W.dense() for W in Ws], probs, x0, LR)[:, comm.rank]
    exact = bool(np.array_equal(xs, np.stack(ref)))
    rel = float(np.abs(xs - dense).max() / np.abs(dense).max())
    got = comm.allgather((exact, rel))
    assert all(g[0] for g in got) and max(g[1] for g in got) <= 1e-13, got


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind", _time_varying_cases())
def test_one_peer_gossip_averages_exactly_in_one_period(comm, problems, kind: str) -> None:
    """γ = 0, n = 2^m: W_{τ-1} ... W_1 W_0 = 11ᵀ/n, so after τ steps every node holds the
    average of the starting points (to rounding), and keeps it."""
    n = comm.size
    if n & (n - 1):
        pytest.skip("exact averaging in one period needs n a power of two")
    Ws = _schedule(kind, n)
    start = np.random.default_rng(50 + comm.rank).standard_normal(problems[1].size)
    tps = [Neighborhood(_one_step(W), comm) for W in Ws]
    xs = _run_dpsgd(comm, problems, tps, lr=0.0, x_start=start)
    for tp in tps:
        tp.close()
    avg = comm.allreduce(start) / n
    err = float(np.abs(xs[len(Ws):] - avg).max())
    before = float(np.abs(xs[len(Ws) - 1] - avg).max()) if n > 2 else 1.0
    got = comm.allgather((err, before))
    assert max(g[0] for g in got) <= 1e-14 * max(1.0, float(np.abs(avg).max())), got
    assert max(g[1] for g in got) > 1e-3  # not averaged one step earlier


def _config(tmp: str, methods: list[dict[str, Any]]) -> Any:
    from decomp.config import load_config

    return load_config({"name": "directed", "seed": SEED, "out_dir": tmp,
                        "problem": {"kind": "logistic", "dataset": "breast_cancer",
                                    "scale": "standard"},
                        "run": {"steps": 12, "log_every": 4, "progress": False},
                        "topology": {"kind": "one-peer-exponential"}, "methods": methods})


REFUSED = {
    "dcd_psgd": {"compressor": {"kind": "qsgd", "levels": 4}},
    "ecd_psgd": {"compressor": {"kind": "qsgd", "levels": 4}},
    "choco_sgd": {"compressor": {"kind": "topk", "k": 3}, "consensus_step": 0.3},
}


@pytest.mark.mpi(min_size=3)
def test_the_runner_refuses_a_directed_W_where_the_analysis_needs_symmetry(comm,
                                                                          tmp_path) -> None:
    from decomp.errors import ConfigError
    from decomp.runner import run

    outcomes = []
    for name, opts in REFUSED.items():
        cfg = _config(str(tmp_path), [{"algorithm": "dpsgd", "lr": 0.2},
                                      {"algorithm": name, "name": f"{name} on W_t", "lr": 0.2,
                                       **opts}])
        try:
            run(cfg, comm, progress=False)
            outcomes.append((name, "ran"))
        except ConfigError as e:
            outcomes.append((name, str(e)))
    everyone = comm.allgather(outcomes)
    assert all(o == everyone[0] for o in everyone)
    for name, msg in everyone[0]:
        assert msg.startswith(f"{name} on W_t: {name} needs a symmetric W"), msg
        assert "directed" in msg and ("Tang et al." in msg or "Koloskova" in msg), msg


@pytest.mark.mpi(min_size=3)
def test_the_runner_runs_dpsgd_on_a_directed_W_like_decomp_sim(comm, tmp_path) -> None:
    from decomp.runner import run, simulate_config

    methods = [{"algorithm": "dpsgd", "lr": 0.2, "batch_size": BATCH},
               {"algorithm": "allreduce_sgd", "lr": 0.2}]
    res = run(_config(str(tmp_path), methods), comm, progress=False)
    ref = simulate_config(_config(str(tmp_path / "sim"), methods), comm.size)
    # consensus distance to 1e-9 relative, or 1e-20 absolute (all-reduce: 0 over MPI, the
    # rounding of a mean of n equal rows in the reference)
    rows = [(r.status, s.status, abs(r.loss - s.loss) / s.loss, r.bits_up == s.bits_up,
             abs(r.consensus_distance - s.consensus_distance)
             / max(s.consensus_distance, 1e-11)) for r, s in zip(res, ref, strict=True)]
    everyone = comm.allgather(rows)
    assert all(e == everyone[0] for e in everyone)
    for st_run, st_ref, dloss, bits, dcons in rows:
        assert st_run == st_ref == "ok" and bits
        assert dloss <= 1e-12 and dcons <= 1e-9, (dloss, dcons)
    assert res[0].consensus_distance > 0  # the nodes differ: D-PSGD really gossiped


@pytest.mark.mpi(min_size=3)
def test_the_trainer_refuses_or_runs_like_the_runner(comm) -> None:
    """decomp.Trainer applies the same rule: CHOCO on the one-peer exponential graph is a
    ConfigError on every rank (before any transport opens); D-PSGD trains on it and equals
    the reference on the Trainer's own shards, bit for bit."""
    from _torch_case import net
    from torch import nn

    from decomp.data.classification import load
    from decomp.errors import ConfigError
    from decomp.torch import make_torch_problems
    from decomp.torch.trainer import Trainer

    ds = load("synthetic", n_samples=240, n_features=10, n_classes=3)

    def trainer(alg):
        return Trainer(net(False), nn.CrossEntropyLoss(), ds, algorithm=alg, comm=comm,
                       topology="one-peer-exponential", batch_size=8, seed=SEED, verbose=False)

    try:
        trainer(DECENTRALIZED["choco_sgd"](consensus_step=0.3, lr=0.1))
        refused = "no"
    except ConfigError as e:
        refused = str(e)
    tr = trainer(DECENTRALIZED["dpsgd"](lr=0.1))
    tr.fit(steps=6, eval_every=6)
    probs = make_torch_problems(net(False), nn.CrossEntropyLoss(), ds.X, ds.y, tr.parts,
                                seed=SEED)
    ref = simulate_decentralized("dpsgd", probs, probs[0].flat.params.copy(), tr.mixing,
                                 lr=0.1, steps=6, seed=SEED, batch_size=8)
    same = bool(np.array_equal(tr.x, ref.xs[-1][comm.rank]))
    got = comm.allgather((refused, same, tr.mixing.symmetric))
    assert all(g == got[0] for g in got)
    assert got[0][0].startswith("choco_sgd needs a symmetric W"), got[0][0]
    assert got[0][1] and got[0][2] is False
