"""Neighborhood transport (fixed and variable payloads, every wire method, byte counts), bad W,
and the collective divergence check of the decentralized family (no rank left blocked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decomp.algorithms import DCDPSGD, Env
from decomp.comm import EXCHANGE_METHODS, Neighborhood
from decomp.compress import make_compressor
from decomp.config import load_config
from decomp.data import load_dataset
from decomp.errors import PayloadError
from decomp.problems import initial_point, split_problem
from decomp.runner import run
from decomp.topologies import MixingMatrix, TopologyError, mixing_matrix


def _payload(rank: int, size: int) -> np.ndarray:
    return ((np.arange(size) * 7 + 31 * rank) % 256).astype(np.uint8)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
@pytest.mark.parametrize("method", EXCHANGE_METHODS)
def test_fixed_size_exchange(comm, method: str, topology: str) -> None:
    W = mixing_matrix(topology, comm.size)
    nb = Neighborhood(W, comm, method=method)
    errors = []
    for size in (40, 40, 12000, 3):  # same size twice (cached layout), then larger, smaller
        got = nb.exchange(_payload(comm.rank, size), size)
        if sorted(got) != list(W.neighbors(comm.rank)[0]):
            errors.append(("keys", size, sorted(got)))
        for j, p in got.items():
            if not np.array_equal(p, _payload(j, size)):
                errors.append(("content", size, j))
    deg = nb.outdegree
    counts = (nb.bytes.up, nb.bytes.down, nb.bytes.control)
    want = ((80 + 12000 + 3) * deg, (80 + 12000 + 3) * nb.indegree, 0)
    nb.close()
    got_all = comm.allgather((errors, counts == want, counts))
    assert all(not e for e, _, _ in got_all), got_all
    assert all(ok for _, ok, _ in got_all), got_all


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", EXCHANGE_METHODS)
def test_variable_size_exchange_sends_sizes_first(comm, method: str) -> None:
    W = mixing_matrix("ring", comm.size)
    nb = Neighborhood(W, comm, method=method)
    errors = []
    for step in range(3):
        size = 10 + 7 * comm.rank + step  # every rank a different size
        got = nb.exchange(_payload(comm.rank, size))
        for j, p in got.items():
            if not np.array_equal(p, _payload(j, 10 + 7 * j + step)):
                errors.append((step, j, p.size))
    control = nb.bytes.control
    nb.close()
    res = comm.allgather((errors, control == 3 * 8 * nb.outdegree))
    assert all(not e and ok for e, ok in res), res


@pytest.mark.mpi(min_size=2)
def test_size_mismatch_is_refused_before_anything_is_sent(comm) -> None:
    nb = Neighborhood(mixing_matrix("ring", comm.size), comm)
    with pytest.raises(PayloadError, match="fixed at 12 bytes"):
        nb.exchange(np.zeros(10, np.uint8), 12)
    with pytest.raises(PayloadError, match="uint8"):
        nb.exchange(np.zeros(3, np.float32), 12)
    got = nb.exchange(np.full(5, comm.rank, np.uint8), 5)  # still usable afterwards
    ok = all(int(p[0]) == j for j, p in got.items())
    nb.close()
    assert all(comm.allgather(ok))


@pytest.mark.mpi(min_size=2)
def test_allgather_and_allreduce(comm) -> None:
    nb = Neighborhood(mixing_matrix("ring", comm.size), comm)
    fixed = nb.allgather(_payload(comm.rank, 24), 24)
    ok = all(np.array_equal(p, _payload(r, 24)) for r, p in enumerate(fixed))
    var = nb.allgather(_payload(comm.rank, 5 + comm.rank))
    ok &= all(np.array_equal(p, _payload(r, 5 + r)) for r, p in enumerate(var))
    v = np.full(4, float(comm.rank))
    nb.allreduce_sum(v)
    ok &= bool((v == sum(range(comm.size))).all())
    n = comm.size
    ok &= nb.bytes.up == 24 + 5 + comm.rank + 32
    ok &= nb.bytes.down == 24 * (n - 1) + sum(5 + r for r in range(n)) - (5 + comm.rank) + 32
    ok &= nb.bytes.control == 8
    ok &= nb.min_uncounted(10 + comm.rank) == 10
    nb.close()
    assert all(comm.allgather(ok))


@pytest.mark.mpi(min_size=2)
def test_w_of_the_wrong_size_is_refused_on_every_rank(comm) -> None:
    msg = None
    try:
        Neighborhood(mixing_matrix("ring", comm.size + 1), comm)
    except TopologyError as e:
        msg = str(e)
    msgs = comm.allgather(msg)
    assert all(m is not None and f"but the communicator has {comm.size} ranks" in m
               for m in msgs), msgs


@pytest.mark.mpi(min_size=2)
def test_non_doubly_stochastic_w_is_refused_on_every_rank(comm) -> None:
    W = mixing_matrix("ring", comm.size).dense()
    W[0, 0] += 0.25  # row 0 (and column 0) no longer sum to 1
    msg = None
    try:
        Neighborhood(MixingMatrix(W), comm)
    except TopologyError as e:
        msg = str(e)
    msgs = comm.allgather(msg)
    assert all(m is not None and "doubly stochastic" in m for m in msgs), msgs


@pytest.mark.mpi(min_size=2)
def test_a_nan_on_one_rank_is_seen_by_all_at_the_same_step(comm) -> None:
    """Steps never raise: the NaN node sends zeros and flags the step; the collective minimum
    gives every rank the same first bad step, and nobody is left in an exchange."""
    ds = load_dataset("breast_cancer", scale="standard")
    probs = split_problem(ds, "logistic", comm.size)
    nb = Neighborhood(mixing_matrix("ring", comm.size), comm)
    env = Env(nb, probs[comm.rank], comm.size, 0, 0.1)
    alg = DCDPSGD(make_compressor({"kind": "qsgd", "levels": 4}))
    state = alg.init(env, initial_point("normal", ds.n_features, seed=0))
    for t in range(1, 11):
        if t == 6 and comm.rank == comm.size - 1:
            state.x[3] = np.nan  # poison one node before step 6
        state = alg.step(env, state)
    first = nb.min_uncounted(state.bad or 2**62)
    nb.close()
    got = comm.allgather((state.bad, first))
    assert [b for b, _ in got] == [0] * (comm.size - 1) + [6], got
    assert {f for _, f in got} == {6}


@pytest.mark.mpi(min_size=2)
def test_planted_dcd_divergence_ends_with_a_report_on_every_rank(comm, tmp_path: Path) -> None:
    """DCD-PSGD with 1-level QSGD blows up; run() returns 'diverged' at the same step on every
    rank (loss-blowup path), and a NaN path (huge step, blowup factor off) as well."""
    base = {"name": "div", "out_dir": str(tmp_path),
            "problem": {"kind": "least_squares", "dataset": "synthetic"},
            "run": {"steps": 400, "log_every": 5, "progress": False},
            "methods": [{"name": "DCD 1-level", "algorithm": "dcd_psgd", "lr": 0.5,
                         "compressor": {"kind": "qsgd", "levels": 1}},
                        {"name": "DCD huge step", "algorithm": "dcd_psgd", "lr": 300.0,
                         "compressor": {"kind": "qsgd", "levels": 8}}]}
    res = run(load_config(base), comm, progress=False)
    base["run"]["loss_blowup"] = 1e308
    res2 = run(load_config(base), comm, progress=False, mode="overwrite")
    rows = comm.allgather([(r.status, r.steps, r.message) for r in res + res2])
    assert all(row == rows[0] for row in rows), rows
    (s1, _, m1), (s2, _, m2), _, (s4, _, m4) = rows[0]
    assert s1 == "diverged" and "exceeded" in m1 and "QSGD(levels=1)" in m1, m1
    assert s2 == "diverged" and s4 == "diverged"
    assert "non-finite value at step" in m4 and "dcd_psgd" in m4, m4


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", EXCHANGE_METHODS)
def test_split_exchange_and_received_rows(comm, method: str) -> None:
    """exchange_start / exchange_finish (computation in between) deliver what exchange does;
    received_rows views dense payloads as one (indegree, d) array in source order."""
    W = mixing_matrix("ring", comm.size)
    nb = Neighborhood(W, comm, method=method)
    ok = True
    for d in (5, 3000):  # persistent-sized and neighbour-collective-sized under "auto"
        x = np.arange(d, dtype=np.float64) + 1000.0 * comm.rank
        nb.exchange_start(x.view(np.uint8), x.nbytes)
        busy = float(np.sum(np.sqrt(np.arange(20_000.0))))  # work while the messages travel
        got = nb.exchange_finish()
        rows = nb.received_rows(np.float64, d)
        ok &= busy > 0 and rows.shape == (nb.indegree, d)
        for k, j in enumerate(nb.sources):
            want = np.arange(d, dtype=np.float64) + 1000.0 * j
            ok &= bool(np.array_equal(rows[k], want) and np.array_equal(got[j].view(np.float64),
                                                                         want))
    with pytest.raises(RuntimeError):
        nb.exchange_finish()
    nb.close()
    assert all(comm.allgather(ok))
