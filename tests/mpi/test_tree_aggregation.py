"""``aggregation = "tree"`` over MPI: every master–worker case of test_masterworker_vs_sim.py
(every method, every compressor) summed over the binomial tree equals decomp.sim with the
tree's grouping — to the last bit where the sums are the runtime's own (the dense all-reduce
of GD/SGDM is MPI's, compared within its tolerance) — and each rank sends what the reference
counts (its subtree's sum message; rank 0 nothing). At 8 ranks: tests/e2e/test_tree_8ranks.py."""

from __future__ import annotations

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates
from test_masterworker_vs_sim import CASES, COMPRESSOR_CASES

from decomp.algorithms import EF21
from decomp.comm import MasterWorker
from decomp.comm.tree import tree_parent
from decomp.compress import TopK
from decomp.errors import ConfigError
from decomp.sim import reference

STEPS = 30
SEED = 11


def _run(comm, dtype: str, case: str, aggregation: str = "tree"):
    alg = CASES[case][1]()
    lr = 0.05 if case in COMPRESSOR_CASES else 0.2
    tp, env, probs, x0 = masterworker_setting(comm, "shared", dtype, SEED, lr, aggregation)
    _, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=lr, steps=STEPS, seed=SEED, aggregation=aggregation)
    return tp, alg, xs, ref


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tree_aggregation_equals_the_reference(comm, dtype: str, case: str) -> None:
    tp, alg, xs, ref = _run(comm, dtype, case)
    exact = alg.uses_compressor  # a compressed method's sums are all the runtime's own
    if exact:
        ok = bool(np.array_equal(xs, ref.xs))
    else:
        ok = float(np.abs(xs - ref.xs).max() / np.abs(ref.xs).max()) <= (
            1e-12 if dtype == "float64" else 1e-5)
    sent = comm.allgather((tp.worker, tp.bytes.up))
    ok &= all(b == ref.bytes_up[w] for w, b in sent)
    assert all(comm.allgather(ok)), f"rank {comm.rank}: differs from decomp.sim ({case})"
    assert np.abs(xs[-1] - xs[0]).max() > 0


@pytest.mark.mpi(min_size=2)
def test_on_the_tree_no_rank_receives_n_payloads(comm) -> None:
    """EF21 Top-1 on the tree: rank 0 sends nothing up and every other rank sends exactly one
    sum message per round (its subtree's: at most its subtree's k entries); the total comes
    down to every rank but 0, as on the gather. What a rank receives from its children is at
    most log2(n) messages, never n payloads."""
    tp, alg, xs, ref = _run(comm, "float64", "ef21-top1")
    if tree_parent(tp.rank, tp.size) is None:
        assert tp.bytes.up == 0 and tp.bytes.down == 0
    else:
        assert tp.bytes.up == ref.bytes_up[tp.worker] > 0 and tp.bytes.down > 0
    g, _, xg, _ = _run(comm, "float64", "ef21-top1", "gather")
    if comm.size > 2:  # a different grouping of the same sums: close, not always equal bits
        np.testing.assert_allclose(xs, xg, rtol=1e-10)
    else:  # two ranks: c_0 + c_1 either way
        np.testing.assert_array_equal(xs, xg)


@pytest.mark.mpi(min_size=2)
def test_a_method_that_needs_the_master_gathers_and_a_dedicated_master_is_refused(comm) -> None:
    with pytest.raises(ConfigError, match="master = 'shared'"):
        MasterWorker(comm, "dedicated", "tree")
    with pytest.raises(ConfigError, match="aggregation must be one of gather, tree"):
        MasterWorker(comm, "shared", "ring")
    assert EF21(TopK(1), downlink="model").aggregation_for("tree") == "gather"
    assert EF21(TopK(1)).aggregation_for("tree") == "tree"


@pytest.mark.mpi(min_size=2)
def test_a_long_total_on_the_tree_equals_the_reference(comm) -> None:
    """d = 2,000 and Top-300: the sums turn dense on the way up (SparCML's switch), and the
    total (16 KB) comes down by scatter + recursive-doubling all-gather once the ranks are a
    power of two >= 8 (tests/e2e/test_tree_8ranks.py), by the broadcast below: bit for bit
    the reference either way, and every rank but 0 receives the total each step."""
    from decomp.algorithms import Env
    from decomp.comm.masterworker import split_down
    from decomp.data import load_dataset
    from decomp.problems import initial_point, split_problem

    tp = MasterWorker(comm, "shared", "tree")
    ds = load_dataset("synthetic", n_samples=40 * tp.size, n_features=2000, seed=3)
    probs = split_problem(ds, "logistic", tp.n_workers)
    x0 = initial_point("normal", 2000, seed=3)
    alg = EF21(TopK(300))
    _, xs = run_iterates(alg, Env(tp, probs[tp.worker], tp.n_workers, SEED, 0.1), x0, 6)
    ref = reference(alg, probs, x0, lr=0.1, steps=6, seed=SEED, aggregation="tree")
    ok = bool(np.array_equal(xs, ref.xs)) and tp.bytes.up == ref.bytes_up[tp.worker]
    ok &= tp.bytes.down == (0 if tp.rank == 0 else int(ref.state["down_bytes"].sum()))
    assert all(comm.allgather(ok)), comm.rank
    assert split_down(tp.size, tp._tree_down) == (tp.size >= 8 and tp.size & (tp.size - 1) == 0)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("transport", ["gatherv", "group"])
def test_partial_participation_on_the_tree_equals_the_reference(comm, transport: str) -> None:
    """EF21-PP on the tree: a worker that sits a step out sends the empty sum (16 bytes) and
    still relays its subtree; bit for bit the reference, bytes per rank as it counts them
    (the ``transport`` option only changes the gather, so both are the same run here)."""
    from decomp.algorithms import EF21PP

    alg = EF21PP(TopK(2), p=0.5, transport=transport)
    tp, env, probs, x0 = masterworker_setting(comm, "shared", "float64", SEED, 0.2, "tree")
    _, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=0.2, steps=STEPS, seed=SEED, aggregation="tree")
    ok = bool(np.array_equal(xs, ref.xs)) and tp.bytes.up == ref.bytes_up[tp.worker]
    ok &= tp.bytes.down == (0 if tp.rank == 0 else int(ref.state["down_bytes"].sum()))
    assert all(comm.allgather(ok)), comm.rank
