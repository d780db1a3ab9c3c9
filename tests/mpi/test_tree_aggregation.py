"""``aggregation = "tree"`` over MPI: every master–worker case of test_masterworker_vs_sim.py
(every method, every compressor) summed by the fixed-order reduce-scatter + all-gather of
decomp.comm.tree equals decomp.sim with the same grouping — to the last bit where the sums are
the runtime's own (the dense all-reduce of GD/SGDM is MPI's, compared within its tolerance) —
and each rank sends and receives what the reference counts; sums that turn dense on the way,
and the node-aware split on an uneven layout (DECOMP_NODE_LAYOUT), too. At 8 ranks:
tests/e2e/test_tree_8ranks.py."""

from __future__ import annotations

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates
from test_masterworker_vs_sim import CASES, COMPRESSOR_CASES

from decomp.algorithms import EF21
from decomp.comm import MasterWorker
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


def _received(comm, tp, ref) -> bool:
    """The bytes every rank received, summed, are what the reference counts."""
    n = comm.size
    return comm.allreduce(tp.bytes.down) == round(float(ref.state["down_bytes"].sum()) * (n - 1))


@pytest.mark.mpi(min_size=2)
def test_on_the_tree_no_rank_receives_n_payloads(comm) -> None:
    """EF21 Top-1 on the tree: every rank sends at most one message per round (2 log2 n + 2
    rounds), each at most its group's entries of its range, and receives the total's
    ranges — never n payloads; the bytes sent and received are the reference's."""
    tp, alg, xs, ref = _run(comm, "float64", "ef21-top1")
    assert tp.bytes.up == ref.bytes_up[tp.worker] > 0 and tp.bytes.down > 0
    assert _received(comm, tp, ref)
    rounds = 2 * (comm.size.bit_length() - 1) + 2
    assert tp.bytes.up <= (STEPS + 1) * rounds * 64  # 16-byte header + a few entries
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


def _long_run(comm, k: int = 1000, steps: int = 6):
    from decomp.algorithms import Env
    from decomp.data import load_dataset
    from decomp.problems import initial_point, split_problem

    tp = MasterWorker(comm, "shared", "tree")
    ds = load_dataset("synthetic", n_samples=40 * tp.size, n_features=2000, seed=3)
    probs = split_problem(ds, "logistic", tp.n_workers)
    x0 = initial_point("normal", 2000, seed=3)
    alg = EF21(TopK(k))
    _, xs = run_iterates(alg, Env(tp, probs[tp.worker], tp.n_workers, SEED, 0.1), x0, steps)
    ref = reference(alg, probs, x0, lr=0.1, steps=steps, seed=SEED, aggregation="tree")
    ok = bool(np.array_equal(xs, ref.xs)) and tp.bytes.up == ref.bytes_up[tp.worker]
    return all(comm.allgather(ok)) and _received(comm, tp, ref)


@pytest.mark.mpi(min_size=2)
def test_a_long_total_on_the_tree_equals_the_reference(comm) -> None:
    """d = 2,000 and Top-1000: one payload's sum is sparse (half the entries), two payloads'
    still, four fill 94 % of a range and go dense (SparCML's switch, per range): bit for bit
    the reference, bytes sent and received as it counts them."""
    assert _long_run(comm), comm.rank


@pytest.mark.mpi(min_size=2)
def test_the_node_aware_split_on_an_uneven_layout_equals_the_reference(comm, monkeypatch) -> None:
    """DECOMP_NODE_LAYOUT (decomp.comm.nodes) overrides MPI's node layout: uneven nodes
    (1 + 3 ranks at 4, 3 + 2 + 3 at 8, 2 + 1 at 3) sum within each node, then over the
    leaders, and the reference given the same layout agrees bit for bit and in bytes."""
    n = comm.size
    layout = {2: "1,1", 3: "2,1", 4: "1,3", 8: "3,2,3"}.get(n, "2")
    monkeypatch.setenv("DECOMP_NODE_LAYOUT", layout)
    assert _long_run(comm, k=200, steps=4), comm.rank


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("transport", ["gatherv", "group"])
def test_partial_participation_on_the_tree_equals_the_reference(comm, transport: str) -> None:
    """EF21-PP on the tree: a worker that sits a step out starts from the empty sum and
    still takes its part in every round; bit for bit the reference, bytes per rank as it counts them
    (the ``transport`` option only changes the gather, so both are the same run here)."""
    from decomp.algorithms import EF21PP

    alg = EF21PP(TopK(2), p=0.5, transport=transport)
    tp, env, probs, x0 = masterworker_setting(comm, "shared", "float64", SEED, 0.2, "tree")
    _, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=0.2, steps=STEPS, seed=SEED, aggregation="tree")
    ok = bool(np.array_equal(xs, ref.xs)) and tp.bytes.up == ref.bytes_up[tp.worker]
    assert all(comm.allgather(ok)) and _received(comm, tp, ref), comm.rank
