"""BEER's reference (decomp.sim.beer) against what the paper says it is, and its pieces:

- C = identity, γ = 1 is gradient tracking X ← W X − η V, V ← W V + ∇F(X) − ∇F(X_prev)
  from the second step on (G^0 = 0: the first step mixes no V), to rounding;
- for any C the tracker keeps mean_i v_i = mean_i ∇F_i(x_i) at every step (symmetric W);
- on a heterogeneous problem (every node a different least-squares target) full-gradient BEER
  with Top-k reaches the exact optimum (‖∇f(x̄)‖² → ~1e-20) while CHOCO-SGD, with the same
  step size, compressor and bytes, stays at its heterogeneity floor;
- a step allocates no full-size vector; options and compressors are checked;
- the ``by_label`` split (rows sorted by label, then cut) of the numpy problems.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from mpi4py import MPI

from decomp.algorithms import Env
from decomp.algorithms.beer import BEER
from decomp.comm import Neighborhood
from decomp.compress import QSGD, Identity, TopK
from decomp.config import load_config
from decomp.data import Dataset, partition
from decomp.errors import ConfigError
from decomp.problems import initial_point, make_problem, split_problem
from decomp.runner import plan_method
from decomp.sim import reference, simulate_decentralized
from decomp.topologies import MixingMatrix, mixing_matrix, mixing_schedule

N_NODES, D, ROWS = 4, 10, 60


@pytest.fixture(scope="module")
def heterogeneous():
    """Node i: least squares on its own A_i (ROWS × D) with target b_i = A_i w_i + noise, the
    w_i far apart, so the local minimisers disagree and only their average is optimal."""
    rng = np.random.default_rng(11)
    probs = []
    for i in range(N_NODES):
        A = rng.standard_normal((ROWS, D))
        w = rng.standard_normal(D) * 3 + i
        probs.append(make_problem("least_squares", A, A @ w + 0.1 * rng.standard_normal(ROWS)))
    A_all = np.vstack([p.A for p in probs])
    b_all = np.concatenate([p.b for p in probs])
    x_star = np.linalg.lstsq(A_all, b_all, rcond=None)[0]  # equal shard sizes: f's minimiser
    L = max(p.smoothness() for p in probs)
    return probs, initial_point("normal", D, seed=2), x_star, L


def _grad_norm_sq(probs, x: np.ndarray) -> float:
    g = np.mean([p.grad(x) for p in probs], axis=0)
    return float(g @ g)


def test_identity_and_gamma_1_is_gradient_tracking(heterogeneous) -> None:
    probs, x0, _, L = heterogeneous
    W = mixing_matrix("ring", N_NODES)
    eta, steps = 0.3 / L, 40
    tr = reference(BEER(Identity(), consensus_step=1.0), probs, x0, W, lr=eta, steps=steps)
    Wd = W.dense()
    X = np.tile(x0, (N_NODES, 1))
    G_prev = np.stack([p.grad(x0) for p in probs])
    V = G_prev.copy()
    for t in range(1, steps + 1):
        X = Wd @ X - eta * V
        G = np.stack([p.grad(X[i]) for i, p in enumerate(probs)])
        # G^0 = 0: the first step adds no mixing term to V (nor to X, whose rows are equal)
        V = (Wd @ V if t > 1 else V) + G - G_prev
        G_prev = G
        scale = np.abs(X).max()
        assert np.abs(tr.xs[t] - X).max() <= 1e-12 * scale, t


@pytest.mark.parametrize("compressor,gamma,batch", [(Identity(), 1.0, None), (TopK(2), 0.4, None),
                                                    (TopK(3), 0.3, 20)])
def test_the_tracker_mean_is_the_mean_gradient_every_step(heterogeneous, compressor, gamma,
                                                          batch) -> None:
    """(1/n) Σ_i v_i^t = (1/n) Σ_i ∇F_i(x_i^t; ξ^t) at every t, whatever C (W symmetric,
    so the mixing terms sum to zero), with full and minibatch gradients."""
    probs, x0, _, L = heterogeneous
    W = mixing_matrix("ring", N_NODES)
    for t in range(1, 9):
        alg = BEER(compressor, consensus_step=gamma, batch_size=batch)
        tr = reference(alg, probs, x0, W, lr=0.3 / L, steps=t, seed=5)
        V, grad = tr.state["V"], tr.state["grad_prev"]
        assert np.abs(V.mean(axis=0) - grad.mean(axis=0)).max() <= 1e-12 * np.abs(V).max()
        assert not np.array_equal(V, grad)  # the trackers differ from the local gradients


def test_beer_reaches_the_optimum_where_choco_stalls(heterogeneous) -> None:
    probs, x0, x_star, L = heterogeneous
    W = mixing_matrix("ring", N_NODES)
    kw = {"lr": 0.3 / L, "steps": 1500, "compressor": TopK(3)}
    beer = simulate_decentralized("beer", probs, x0, W, consensus_step=0.4, **kw)
    choco = simulate_decentralized("choco_sgd", probs, x0, W, consensus_step=0.4, **kw)
    assert _grad_norm_sq(probs, x0) > 10
    assert _grad_norm_sq(probs, beer.xbar[-1]) < 1e-18
    assert np.abs(beer.xs[-1] - x_star).max() < 1e-8  # every node at the optimum
    floor = [_grad_norm_sq(probs, choco.xbar[t]) for t in (1000, 1500)]
    assert min(floor) > 1e-4 and floor[1] > 0.5 * floor[0]  # stalled, far above BEER
    # same compressor: BEER sends twice CHOCO's bytes per step
    assert np.array_equal(beer.bytes_sent, 2 * choco.bytes_sent)


def test_on_the_one_peer_hypercube_identity_is_gradient_tracking_on_w_t(heterogeneous) -> None:
    """Schedule path (per-edge replicas, rounds at the start of a step): with C = identity
    and γ = 1, X ← W_t X − η V, V ← W_t V + ∇F(X) − ∇F(X_prev) (the first step mixes nothing:
    H^0 = G^0 = 0), to rounding; the tracker mean is kept with Top-k too; BEER still reaches
    the optimum on the schedule."""
    probs, x0, x_star, L = heterogeneous
    sched = mixing_schedule("one-peer-hypercube", N_NODES)
    eta, steps = 0.3 / L, 30
    tr = simulate_decentralized("beer", probs, x0, sched, lr=eta, steps=steps, consensus_step=1.0)
    X = np.tile(x0, (N_NODES, 1))
    G_prev = np.stack([p.grad(x0) for p in probs])
    V = G_prev.copy()
    for t in range(1, steps + 1):
        Wt = sched(t - 1).dense()
        X = (Wt @ X if t > 1 else X) - eta * V
        G = np.stack([p.grad(X[i]) for i, p in enumerate(probs)])
        V = (Wt @ V if t > 1 else V) + G - G_prev
        G_prev = G
        assert np.abs(tr.xs[t] - X).max() <= 1e-12 * np.abs(X).max(), t
    for t in (3, 7):
        top = simulate_decentralized("beer", probs, x0, sched, lr=eta, steps=t, consensus_step=0.4,
                                     compressor=TopK(3))
        V, grad = top.state["V"], top.state["grad_prev"]
        assert np.abs(V.mean(axis=0) - grad.mean(axis=0)).max() <= 1e-12 * np.abs(V).max()
    top = simulate_decentralized("beer", probs, x0, sched, lr=eta, steps=1500, consensus_step=0.4,
                                 compressor=TopK(3))
    assert np.abs(top.xs[-1] - x_star).max() < 1e-8


def test_a_period_1_schedule_gives_the_static_iterates(heterogeneous) -> None:
    """n = 2: the one-peer hypercube is one W every step, so the per-edge path (rounds moved
    to the start of the step) gives static BEER's iterates, to rounding (the static path keeps
    the mixing rows incrementally), and one step's payloads fewer."""
    probs, x0, _, L = heterogeneous
    sched = mixing_schedule("one-peer-hypercube", 2)
    kw = {"lr": 0.3 / L, "steps": 60, "consensus_step": 0.5, "compressor": TopK(4), "seed": 3}
    edges = simulate_decentralized("beer", probs[:2], x0, sched, **kw)
    static = simulate_decentralized("beer", probs[:2], x0, sched(0), **kw)
    assert np.abs(edges.xs - static.xs).max() <= 1e-12 * np.abs(static.xs).max()
    assert np.array_equal(edges.bytes_sent * 60, static.bytes_sent * 59)


def test_options_and_compressors_are_checked() -> None:
    with pytest.raises(ConfigError, match="beer needs consensus_step"):
        BEER(TopK(2))
    with pytest.raises(ConfigError, match=r"consensus_step must be in \(0, 1\]"):
        BEER(TopK(2), consensus_step=1.5)
    with pytest.raises(ConfigError, match="not contractive; wrap it as Scaled"):
        BEER(QSGD(levels=4), consensus_step=0.5).check(10)
    BEER(Identity(), consensus_step=1.0).check(10)
    cfg = load_config({"methods": [{"algorithm": "beer", "compressor": {"kind": "topk", "k": 2},
                                    "lr": 0.1, "consensus_step": 0.3, "batch_size": 4}]})
    plan = plan_method(cfg.methods[0])
    assert plan.decentralized and plan.algorithm.consensus_step == 0.3
    assert plan.options == {"consensus_step": 0.3}


@pytest.mark.parametrize("name,old", [("beer", "gamma"), ("choco_sgd", "gamma_c")])
def test_the_old_name_of_the_consensus_step_is_refused_naming_the_new(name: str,
                                                                      old: str) -> None:
    from decomp.algorithms import REGISTRY

    with pytest.raises(ConfigError, match=f"'methods.0.{old}' is now called 'consensus_step'"):
        load_config({"methods": [{"algorithm": name, "lr": 0.1, old: 0.3}]})
    with pytest.raises(ConfigError, match=f"'{old}' of {name} is now called 'consensus_step'"):
        REGISTRY[name].build(compressor="identity", options={old: 0.3})
    with pytest.raises(ConfigError, match=f"option '{old}' is now called 'consensus_step'"):
        REGISTRY[name].cls(Identity(), **{old: 0.3})


def test_a_step_allocates_no_full_size_vector() -> None:
    d = 400_000
    rng = np.random.default_rng(0)
    prob = make_problem("least_squares", rng.standard_normal((2, d)), np.zeros(2))
    # ∇ of ½‖x − target‖², written into one buffer (as a torch model's); distinct entries, so
    # Top-k meets no ties
    grad_buffer, target = np.zeros(d), np.linspace(-1.0, 1.0, d)
    prob.grad = lambda x: np.subtract(x, target, out=grad_buffer)  # type: ignore[method-assign]
    nb = Neighborhood(MixingMatrix(np.ones((1, 1))), MPI.COMM_SELF)
    env = Env(nb, prob, 1, 0, 0.1)
    alg = BEER(TopK(ratio=0.01), consensus_step=0.5)
    box = [alg.init(env, np.ones(d))]
    try:
        for _ in range(2):
            box[0] = alg.step(env, box[0])
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        box[0] = alg.step(env, box[0])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        nb.close()
    assert peak < d * 8 // 4, f"{peak} bytes allocated in one step (d = {d})"


def test_by_label_split_sorts_rows_by_label_then_cuts() -> None:
    labels = np.array([1, -1, 1, 1, -1, -1, 1, -1, 1, 1, -1], dtype=np.float64)
    shards = partition(labels.size, 3, "by_label", labels=labels)
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(labels.size))
    assert [s.size for s in shards] == [3, 3, 5]  # N // n each, the last takes the rest
    assert [sorted(set(labels[s])) for s in shards] == [[-1.0], [-1.0, 1.0], [1.0]]
    assert all(np.array_equal(s, np.sort(s)) for s in shards)  # file order within a shard
    with pytest.raises(ConfigError, match="needs the 11 labels"):
        partition(labels.size, 3, "by_label")
    ds = Dataset(name="toy", A=np.arange(22.0).reshape(11, 2), b=labels)
    probs = split_problem(ds, "logistic", 3, shard="by_label")
    assert [sorted(set(p.b)) for p in probs] == [[-1.0], [-1.0, 1.0], [1.0]]
    cfg = load_config({"problem": {"shard": "by_label"},
                       "methods": [{"algorithm": "beer", "lr": 0.1, "consensus_step": 0.5}]})
    assert cfg.problem.shard == "by_label"
