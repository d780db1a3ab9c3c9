"""EF21-PP and EF21-BC (EF21 with Bells & Whistles, Algorithms 4 and 5): the paper's identities
(p = 1 is EF21, C_M = identity is EF21), who takes part and what it costs, the EF21-PP theory
step, and the byte accounting of ``decomp sim``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from decomp.algorithms import Env
from decomp.algorithms.ef21_bc import EF21BC
from decomp.algorithms.ef21_pp import EF21PP
from decomp.comm import MasterWorker
from decomp.compress import HEADER_BYTES, Identity, TopK
from decomp.config import load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.participation import participant_count, participants
from decomp.problems import initial_point, split_problem
from decomp.runner.simulate import simulate_config
from decomp.sim import simulate
from decomp.theory import ef21_pp_stepsize, ef21_stepsize

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def four() -> tuple[list, np.ndarray]:
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", 4), initial_point("normal", ds.n_features, seed=2)


@pytest.mark.parametrize("sampling", ["bernoulli", "fixed"])
@pytest.mark.parametrize("init", ["compressed", "full"])
def test_pp_with_everyone_taking_part_is_ef21(four, sampling: str, init: str) -> None:
    problems, x0 = four
    ef21 = simulate("ef21", problems, x0, lr=0.2, steps=40, seed=4, compressor=TopK(2),
                    init=init)
    pp = simulate("ef21_pp", problems, x0, lr=0.2, steps=40, seed=4, compressor=TopK(2),
                  init=init, p=1.0, sampling=sampling)
    np.testing.assert_array_equal(pp.xs, ef21.xs)
    np.testing.assert_array_equal(pp.state["G"], ef21.state["G"])
    np.testing.assert_array_equal(pp.bytes_up, ef21.bytes_up)
    assert pp.state["S"].all()


def test_bc_with_an_identity_master_compressor_is_ef21(four) -> None:
    """g^{t+1} = g^t + (g̃^{t+1} − g^t) = g̃^{t+1}, EF21's g, in exact arithmetic; in floating
    point the sum may round differently in the last bit, hence the ulp-level tolerance."""
    problems, x0 = four
    ef21 = simulate("ef21", problems, x0, lr=0.2, steps=60, seed=4, compressor=TopK(2))
    bc = simulate("ef21_bc", problems, x0, lr=0.2, steps=60, seed=4, compressor=TopK(2),
                  downlink_compressor=Identity())
    np.testing.assert_allclose(bc.xs, ef21.xs, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bc.state["g"], bc.state["g_tilde"], rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(bc.bytes_up, ef21.bytes_up)
    # a compressing C_M changes the iterates and shrinks the downlink to one Top-k payload
    bc3 = simulate("ef21_bc", problems, x0, lr=0.2, steps=60, seed=4, compressor=TopK(2),
                   downlink_compressor={"kind": "topk", "k": 3})
    assert np.abs(bc3.xs - ef21.xs).max() > 1e-6
    assert (bc3.state["down_bytes"] == TopK(3).payload_bytes(x0.size, x0.dtype)).all()


def test_participants_are_a_pure_function_of_seed_and_step() -> None:
    a = np.array([participants(7, t, 20, 0.3, "bernoulli") for t in range(400)])
    b = np.array([participants(7, t, 20, 0.3, "bernoulli") for t in range(400)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.array([participants(8, t, 20, 0.3, "bernoulli")
                                           for t in range(400)]))
    assert abs(a.mean() - 0.3) < 0.03  # Bernoulli(p) per worker and step
    fixed = np.array([participants(7, t, 20, 0.3, "fixed") for t in range(400)])
    assert participant_count(20, 0.3) == 6
    assert (fixed.sum(axis=1) == 6).all()
    assert abs(fixed.mean(axis=0) - 0.3).max() < 0.1  # uniform over the workers
    assert participant_count(20, 0.01) == 1  # at least one worker


def test_a_worker_sends_exactly_in_the_steps_it_takes_part(four) -> None:
    """One rank over MPI: the bytes the transport counted are the payload times the steps
    the worker was drawn in (plus the initial round), and equal the reference's."""
    problems, x0 = four
    tp = MasterWorker(MPI.COMM_SELF)
    alg = EF21PP(TopK(2), p=0.5)
    env = Env(tp, problems[0], 1, 9, 0.1)
    state = alg.init(env, x0)
    for _ in range(30):
        state = alg.step(env, state)
    ref = simulate("ef21_pp", problems[:1], x0, lr=0.1, steps=30, seed=9, compressor=TopK(2))
    took_part = int(ref.state["S"][:, 0].sum())
    assert 1 < took_part < 31
    assert tp.bytes.up == took_part * TopK(2).payload_bytes(x0.size, x0.dtype)
    assert tp.bytes.up == ref.bytes_up[0]
    np.testing.assert_array_equal(state.x, ref.xs[-1])


def test_the_pp_theory_step_is_the_theorem_at_its_best_s_and_rho() -> None:
    L, Ls, alpha = 1.3, [1.0, 2.0, 3.5], 0.05
    assert ef21_pp_stepsize(L, Ls, alpha, 1.0) == ef21_stepsize(L, Ls, alpha)
    Lt2 = float(np.mean(np.square(Ls)))
    for p in (0.9, 0.5, 0.1):
        got = ef21_pp_stepsize(L, Ls, alpha, p)
        best = 0.0  # Theorem 7 over a grid of its free parameters s, ρ (θ_p > 0)
        for s in np.linspace(1e-3, alpha / (1 - alpha), 300)[:-1]:
            theta, beta = 1 - (1 + s) * (1 - alpha), (1 + 1 / s) * (1 - alpha)
            for rho in np.geomspace(1e-6, 1, 300):
                theta_p = theta * p - rho * (1 - p)
                if theta_p > 0:
                    B = (beta * p + (1 + 1 / rho) * (1 - p)) * Lt2
                    best = max(best, 1 / (L + math.sqrt(B / theta_p)))
        assert best <= got * (1 + 1e-9) and got <= best * 1.01
    assert ef21_pp_stepsize(L, Ls, alpha, 0.5) < ef21_pp_stepsize(L, Ls, alpha, 0.9)
    with pytest.raises(ConfigError, match="probability"):
        ef21_pp_stepsize(L, Ls, alpha, 0.0)
    # the class uses Prob(i ∈ S_t): p, or m/n for a fixed count
    fixed = EF21PP(TopK(1), p=0.5, sampling="fixed")
    assert fixed.theory_stepsize(L, Ls, 30) == ef21_pp_stepsize(L, Ls, 1 / 30, 1 / 3)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="p must be a probability"):
        EF21PP(TopK(1), p=1.5)
    with pytest.raises(ConfigError, match="sampling"):
        EF21PP(TopK(1), sampling="poisson")
    with pytest.raises(ConfigError, match="transport"):
        EF21PP(TopK(1), transport="p2p")
    with pytest.raises(ConfigError, match="not contractive"):
        EF21BC(TopK(1), downlink_compressor={"kind": "randk", "k": 2}).check(30)
    assert EF21BC(TopK(1)).downlink_compressor.k == 1  # default C_M: C_w


def test_decomp_sim_counts_the_bytes_that_would_cross_mpi() -> None:
    cfg = load_config(REPO / "jobs" / "configs" / "ef21_pp_bc.toml",
                      ["problem.dataset=breast_cancer", "problem.scale=standard",
                       "run.steps=30", "run.log_every=10"])
    res = {r.method: r for r in simulate_config(cfg, 4)}
    assert all(r.status == "ok" for r in res.values())
    d = 30
    top1 = TopK(1).payload_bytes(d, np.float64)
    # EF21-BC: every worker sends one Top-1 payload per step and at t = 0; 3 of the 4 ranks
    # receive one Top-1 C_M payload per step and b^0
    bc = res["EF21-BC top-1/top-1"]
    assert bc.bits_up == 8 * 31 * top1
    assert bc.bits_down == pytest.approx(8 * 31 * top1 * 3 / 4)
    # the dense downlink: d float64 values per step to 3 of 4 ranks
    assert res["EF21 dense downlink"].bits_down == pytest.approx(8 * 30 * d * 8 * 3 / 4)
    pp, ef21 = res["EF21-PP p=0.5"], res["EF21"]
    assert ef21.bits_up == 8 * 31 * top1
    assert top1 * 8 < pp.bits_up < ef21.bits_up  # only the participants pay
    assert HEADER_BYTES * 8 * 3 / 4 < pp.bits_down


def test_total_bits_to_a_target_add_the_downlink(tmp_path: Path) -> None:
    """``decomp compare``'s "total bits to" and ``decomp plot -x bits_total`` count sent +
    received bits per worker (what EF21-BC saves), read from the same metrics rows."""
    from decomp.report.compare import compare_rows, parse_target
    from decomp.report.plot import column
    from decomp.report.runs import all_methods, find_runs

    cfg = load_config(REPO / "jobs" / "configs" / "ef21_pp_bc.toml",
                      ["problem.dataset=breast_cancer", "problem.scale=standard",
                       "run.steps=40", "run.log_every=5", f"out_dir={tmp_path}"])
    simulate_config(cfg, 4, write=True)
    methods = all_methods(find_runs([tmp_path]))
    rows = compare_rows(methods, [parse_target("grad_norm_sq=0.5")])
    for row, m in zip(rows, methods, strict=True):
        i = int(np.flatnonzero(m.column("grad_norm_sq") <= 0.5)[0])
        assert row["total bits to grad_norm_sq<=0.5"] == (m.column("bits_up")[i]
                                                          + m.column("bits_down")[i])
        np.testing.assert_array_equal(column(m, "bits_total"),
                                      m.column("bits_up") + m.column("bits_down"))
