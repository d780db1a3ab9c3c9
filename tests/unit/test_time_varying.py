"""Time-varying W_t in the reference and the config (single process).

- One period of pure gossip (γ = 0, C = identity, CHOCO's γ_c = 1) averages exactly on the
  one-peer hypercube (and D-PSGD on the one-peer exponential schedule) for n a power of two,
  and not one step earlier; DCD, whose payload follows its mix, reads a peer as of their last
  meeting and only contracts;
- per-edge replicas: both ends of every edge hold the same x̂_{i→k} bit for bit; on a schedule
  of period 1 (n = 2) DCD's per-edge rule is DCD on the static W, bit for bit, and CHOCO's is
  CHOCO to rounding;
- ``[topology] schedule``: names, exclusive keys, the resolved config reads back; the plan
  refuses the directed schedule for DCD/ECD/CHOCO (naming the hypercube) and ECD on any
  schedule, and a hypercube for n not a power of two; ``decomp sim`` runs a schedule with one
  payload per node per step.
"""

from __future__ import annotations

import numpy as np
import pytest

from decomp.compress import make_compressor
from decomp.config import dump_toml, load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.runner.plan import mixing_for, plan_methods
from decomp.sim import simulate_decentralized
from decomp.topologies import (
    OnePeerExponential,
    TopologyError,
    is_schedule,
    mixing_matrix,
    mixing_schedule,
    resolve_mixing,
)


def _problems(n: int):
    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return split_problem(ds, "logistic", n), initial_point("normal", ds.n_features, seed=3)


def _start(n: int, d: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, d))


@pytest.mark.parametrize("n", [2, 4, 8, 16])
@pytest.mark.parametrize("algorithm,kind", [("choco_sgd", "one-peer-hypercube"),
                                            ("dpsgd", "one-peer-hypercube"),
                                            ("dpsgd", "one-peer-exponential")])
def test_one_period_of_pure_gossip_averages_exactly(n: int, algorithm: str, kind: str) -> None:
    probs, x0 = _problems(n)
    X0 = _start(n, x0.size)
    sched = mixing_schedule(kind, n)
    tau = sched.period
    kw = {"consensus_step": 1.0, "compressor": make_compressor("identity")} \
        if algorithm == "choco_sgd" else {}
    tr = simulate_decentralized(algorithm, probs, x0, sched, lr=0.0, steps=2 * tau, X0=X0, **kw)
    avg = X0.mean(axis=0)
    scale = float(np.abs(avg).max())
    after = [float(np.abs(tr.xs[t] - avg).max()) for t in range(2 * tau + 1)]
    assert max(after[tau:]) <= 4e-16 * tau * max(scale, 1.0), after  # exact to rounding
    if n > 2:
        assert after[tau - 1] > 1e-2  # not one step earlier
    np.testing.assert_allclose(tr.xbar[-1], avg, rtol=0, atol=1e-15 * n)


def test_dcd_on_the_hypercube_reads_peers_as_of_their_last_meeting() -> None:
    """DCD's payload is computed after its mix: pure gossip on the hypercube is delayed, a
    convex combination that contracts period by period but does not average in one."""
    n = 8
    probs, x0 = _problems(n)
    X0 = _start(n, x0.size)
    sched = mixing_schedule("one-peer-hypercube", n)
    tr = simulate_decentralized("dcd_psgd", probs, x0, sched, lr=0.0, steps=40, X0=X0,
                                compressor=make_compressor("identity"))
    cons = tr.consensus_distance()
    tau = sched.period
    assert cons[tau] > 1e-2 * cons[0]  # no exact average after one period
    assert cons[-1] < 1e-3 * cons[0]  # but it contracts
    np.testing.assert_allclose(tr.xbar[-1], X0.mean(axis=0), atol=1e-12)  # mass kept


@pytest.mark.parametrize("algorithm,comp,kw", [
    ("dcd_psgd", {"kind": "qsgd", "levels": 4}, {}),
    ("choco_sgd", {"kind": "topk", "k": 3}, {"consensus_step": 0.4}),
])
def test_both_ends_of_every_edge_hold_the_same_replica(algorithm: str, comp, kw) -> None:
    n = 8
    probs, x0 = _problems(n)
    sched = mixing_schedule("one-peer-hypercube", n)
    tr = simulate_decentralized(algorithm, probs, x0, sched, lr=0.1, steps=13, seed=2,
                                batch_size=8, compressor=make_compressor(comp), **kw)
    A, B = tr.state["A"], tr.state["B"]  # (n, log2 n, d): x̂_{i→k}, x̂_{k→i}
    assert A.shape == (n, 3, x0.size)
    for i in range(n):
        for p, k in enumerate(sched.peers(i)):
            q = sched.peers(k).index(i)
            assert np.array_equal(A[i, p], B[k, q]) and np.array_equal(B[i, p], A[k, q])
    assert not np.array_equal(A[0, 0], A[0, 1])  # the edges carry different values


def test_per_edge_rule_on_a_period_one_schedule_is_the_static_method() -> None:
    """n = 2: the hypercube schedule is one W at every step, and the per-edge replicas are
    the static ones: DCD bit for bit, CHOCO to rounding (its static S is kept incrementally)."""
    probs, x0 = _problems(2)
    sched = mixing_schedule("one-peer-hypercube", 2)
    static = sched(0)
    for algorithm, comp, kw in [("dcd_psgd", {"kind": "qsgd", "levels": 4}, {}),
                                ("choco_sgd", {"kind": "topk", "k": 3}, {"consensus_step": 0.4})]:
        runs = [simulate_decentralized(algorithm, probs, x0, W, lr=0.2, steps=15, seed=1,
                                       batch_size=8, compressor=make_compressor(comp), **kw)
                for W in (sched, static)]
        if algorithm == "dcd_psgd":
            assert np.array_equal(runs[0].xs, runs[1].xs)
        else:
            np.testing.assert_allclose(runs[0].xs, runs[1].xs, rtol=1e-12, atol=1e-13)
        assert np.array_equal(runs[0].bytes_sent, runs[1].bytes_sent)


def test_the_reference_refuses_what_the_rule_does_not_cover() -> None:
    probs, x0 = _problems(4)
    with pytest.raises(ConfigError, match="ecd_psgd cannot run on the time-varying schedule"):
        simulate_decentralized("ecd_psgd", probs, x0, mixing_schedule("one-peer-hypercube", 4),
                               lr=0.1, steps=2, compressor=make_compressor("identity"))
    with pytest.raises(ConfigError, match="choco_sgd needs a symmetric W, and every W_t of "
                                          "one-peer-exponential"):
        simulate_decentralized("choco_sgd", probs, x0,
                               mixing_schedule("one-peer-exponential", 4), lr=0.1, steps=2,
                               consensus_step=0.5)


# ----------------------------------------------------------------------- config and plan


def _cfg(topology: dict, algorithm: str = "dpsgd", **opts) -> dict:
    return {"run": {"steps": 3}, "topology": topology,
            "methods": [{"algorithm": algorithm, "lr": 0.1, **opts}]}


def test_schedule_config_keys() -> None:
    cfg = load_config(_cfg({"schedule": "one-peer-hypercube"}))
    assert cfg.topology.schedule == "one-peer-hypercube"
    assert cfg.topology.kind == "one-peer-hypercube"  # the resolved config says what ran
    again = load_config(__import__("tomllib").loads(dump_toml(cfg)))
    assert again.topology == cfg.topology
    with pytest.raises(ConfigError, match="did you mean 'one-peer-hypercube'"):
        load_config(_cfg({"schedule": "one-peer-hypercub"}))
    for key, value in (("kind", "ring"), ("weights", "max-degree"), ("options", {"seed": 1})):
        with pytest.raises(ConfigError, match=f"topology.{key} does not apply"):
            load_config(_cfg({"schedule": "one-peer-exponential", key: value}))


REFUSALS = [
    ("dcd_psgd", {"compressor": {"kind": "qsgd", "levels": 4}}, "one-peer-exponential",
     "dcd_psgd needs a symmetric W, and every W_t of one-peer-exponential(8) is directed"),
    ("choco_sgd", {"compressor": {"kind": "topk", "k": 2}, "consensus_step": 0.3},
     "one-peer-exponential", "choco_sgd needs a symmetric W"),
    ("ecd_psgd", {"compressor": {"kind": "qsgd", "levels": 4}}, "one-peer-exponential",
     "ecd_psgd cannot run on the time-varying schedule one-peer-exponential(8)"),
    ("ecd_psgd", {"compressor": {"kind": "qsgd", "levels": 4}}, "one-peer-hypercube",
     "ecd_psgd cannot run on the time-varying schedule one-peer-hypercube(8)"),
]


@pytest.mark.parametrize("algorithm,opts,schedule,message", REFUSALS)
def test_the_plan_refuses_with_the_reason(algorithm, opts, schedule, message) -> None:
    cfg = load_config(_cfg({"schedule": schedule}, algorithm, **opts))
    with pytest.raises(ConfigError) as e:
        mixing_for(cfg, plan_methods(cfg), 8)
    msg = str(e.value)
    assert msg.startswith(message), msg  # the label is the algorithm: no prefix
    if schedule == "one-peer-exponential" and algorithm != "ecd_psgd":
        assert 'schedule = "one-peer-hypercube"' in msg and "dpsgd" in msg, msg


@pytest.mark.parametrize("algorithm,opts", [
    ("dpsgd", {}), ("dcd_psgd", {"compressor": {"kind": "qsgd", "levels": 4}}),
    ("choco_sgd", {"compressor": {"kind": "topk", "k": 2}, "consensus_step": 0.3})])
def test_the_plan_takes_the_hypercube_schedule(algorithm, opts) -> None:
    cfg = load_config(_cfg({"schedule": "one-peer-hypercube"}, algorithm, **opts))
    W = mixing_for(cfg, plan_methods(cfg), 16)
    assert is_schedule(W) and W.period == 4 and W.symmetric and W.name == "one-peer-hypercube(16)"
    assert len(W.peers(5)) == 4
    with pytest.raises(TopologyError, match="power of two"):
        mixing_for(cfg, plan_methods(cfg), 6)


def test_resolve_mixing_takes_a_schedule_object() -> None:
    s = OnePeerExponential(8)
    assert resolve_mixing(s, 8) is s and not is_schedule(mixing_matrix("ring", 8))
    with pytest.raises(TopologyError, match="for n = 8 nodes but there are 4"):
        resolve_mixing(s, 4)
    with pytest.raises(TopologyError, match="options"):
        resolve_mixing(s, 8, options={"seed": 1})


def test_decomp_sim_on_a_schedule_sends_one_payload_per_step(tmp_path) -> None:
    from decomp.runner import simulate_config

    cfg = load_config({"name": "tv", "out_dir": str(tmp_path), "run": {"steps": 8,
                       "log_every": 4}, "topology": {"schedule": "one-peer-hypercube"},
                       "problem": {"dataset": "breast_cancer", "scale": "standard"},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.2},
                                   {"algorithm": "choco_sgd", "lr": 0.2, "consensus_step": 0.5,
                                    "compressor": {"kind": "topk", "k": 3}}]})
    res = simulate_config(cfg, 8)
    d = load_dataset("breast_cancer", scale="standard").n_features
    topk = make_compressor({"kind": "topk", "k": 3}).payload_bytes(d, np.dtype(np.float64))
    assert all(r.status == "ok" for r in res)
    # bits per node over 8 steps: one message to the one current peer per step
    assert res[0].bits_up == 8 * 8 * d * 8 and res[0].bits_down == res[0].bits_up
    assert res[1].bits_up == 8 * 8 * topk and res[1].bits_down == res[1].bits_up


def test_a_schedule_with_several_peers_per_step_is_refused_up_front() -> None:
    """Per-edge replicas need one peer per step; a schedule object with a static ring (two
    peers) is refused by check_mixing — on every rank alike, before any step could leave a
    node waiting in an exchange."""
    from decomp.algorithms import DECENTRALIZED
    from decomp.topologies import StaticSchedule

    ring = StaticSchedule(mixing_matrix("ring", 8))
    for alg in (DECENTRALIZED["dcd_psgd"](make_compressor({"kind": "qsgd", "levels": 4})),
                DECENTRALIZED["choco_sgd"](make_compressor({"kind": "topk", "k": 2}),
                                           consensus_step=0.3)):
        with pytest.raises(ConfigError, match="needs one symmetric peer per step"):
            alg.check_mixing(ring)
        alg.check_mixing(mixing_schedule("one-peer-hypercube", 8))
    DECENTRALIZED["dpsgd"]().check_mixing(ring)  # D-PSGD follows any W_t


@pytest.mark.parametrize("name", ["dpsgd", "dcd_psgd", "choco_sgd"])
def test_a_step_on_a_schedule_allocates_no_full_size_vector(name: str) -> None:
    """The schedule path (W_t selected per step, per-edge replicas) reuses the env's scratch
    arrays: one step allocates less than a quarter of one model (tracemalloc, d = 400k; one
    node over COMM_SELF, so no exchange — the transport's buffers are covered over MPI)."""
    import tracemalloc

    from mpi4py import MPI

    from decomp.algorithms import DECENTRALIZED, Env
    from decomp.comm.timevarying import TimeVaryingNeighborhood
    from decomp.problems import Problem

    d = 400_000

    class Quadratic(Problem):  # gradient written into one buffer
        def __init__(self) -> None:
            super().__init__(np.zeros((1, d)), np.zeros(1))
            self.buf, self.target = np.zeros(d), np.linspace(-1.0, 1.0, d)

        def loss(self, x: np.ndarray) -> float:
            return 0.0

        def _grad_rows(self, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.subtract(x, self.target, out=self.buf)

        def smoothness(self) -> float:
            return 1.0

    alg = {"dpsgd": lambda: DECENTRALIZED["dpsgd"](),
           "dcd_psgd": lambda: DECENTRALIZED["dcd_psgd"](make_compressor(
               {"kind": "randk", "ratio": 0.01})),
           "choco_sgd": lambda: DECENTRALIZED["choco_sgd"](make_compressor(
               {"kind": "topk", "ratio": 0.01}), consensus_step=0.5)}[name]()
    tp = TimeVaryingNeighborhood(mixing_schedule("one-peer-hypercube", 1), MPI.COMM_SELF)
    env = Env(tp, Quadratic(), 1, 0, 0.1)
    state = alg.init(env, np.ones(d))
    assert env.transport.time_varying and (name == "dpsgd" or type(state).__name__ == "EdgeState")
    for _ in range(2):
        state = alg.step(env, state)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        state = alg.step(env, state)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        tp.close()
    assert state.t == 3 and peak < d * 8 // 4, f"{peak} bytes allocated in one step"
