"""decomp.comm.tree's schedule and decomp.compress.merge's ranges, in one process: every rank's
total is the grouping :func:`fixed_fold` defines (flat and node-aware), bit for bit; the
grouping depends on the layout; each round moves one message per rank (the leaders' and the
node broadcast's aside); messages switch from sparse to dense per range; the layout variable
is checked naming the fix."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm.nodes import parse_layout
from decomp.comm.tree import fixed_fold, run_all, schedule
from decomp.compress.base import HEADER_BYTES
from decomp.compress.merge import RangeSum, sum_message_bytes
from decomp.errors import ConfigError, PayloadError

LAYOUTS = [(n, None) for n in range(1, 13)] + [
    (5, "2,3"), (6, "1,3,2"), (7, "3"), (7, "1,1,5"), (8, "3,2,3"), (12, "4"), (9, "1,8")]


def _states(n: int, d: int, density: float, seed: int, dtype=np.float32) -> list[RangeSum]:
    rng = np.random.default_rng(seed)
    V = np.where(rng.random((n, d)) < density, rng.standard_normal((n, d)) * 10.0 ** rng
                 .integers(-6, 7, (n, d)), 0.0).astype(dtype)
    states = [RangeSum(d, dtype) for _ in range(n)]
    for st, v in zip(states, V, strict=True):
        st.start_dense(v, v != 0)
    return states


@pytest.mark.parametrize(("n", "layout"), LAYOUTS)
def test_every_rank_ends_with_the_fixed_grouping(n: int, layout: str | None) -> None:
    nodes = None if layout is None else parse_layout(layout, n)
    for density in (0.05, 0.6):
        states = _states(n, 53, density, n)
        rows = [st.acc.copy() for st in states]
        run_all(states, nodes)
        want = fixed_fold(rows, lambda a, b: a + b, nodes)
        for st in states:
            np.testing.assert_array_equal(st.acc, want)


def test_the_grouping_is_a_function_of_the_layout() -> None:
    """Values whose float32 sum depends on the grouping: the flat schedule and the 3 + 2 + 3
    split give different last bits, each its own fold's."""
    rows = [np.array([v], dtype=np.float32) for v in (1e8, 3, -1e8, 5, 7, 1e8, -1e8, 0.5)]

    def total(nodes):
        states = [RangeSum(1, np.float32) for _ in rows]
        for st, v in zip(states, rows, strict=True):
            st.start_dense(v, np.ones(1, bool))
        run_all(states, nodes)
        assert fixed_fold(rows, lambda a, b: a + b, nodes)[0] == states[5].acc[0]
        return states[0].acc[0]

    assert total(None) != total(parse_layout("3,2,3", 8))
    assert total(parse_layout("8", 8)) == total(None) == total(parse_layout("1", 8))


def test_rounds_move_one_message_per_rank_and_ranges_halve() -> None:
    """Flat at 1,024 ranks: 2·10 rounds, one send and one receive per rank each, the
    reduce-scatter's ranges halving from d/2; at 1,000 (p = 512) the fold and unfold add two."""
    d = 1 << 20
    rows = schedule(1024, d)
    assert {len(r) for r in rows} == {20}
    for rd in rows[5]:
        assert len(rd.sends) == len(rd.recvs) == 1
    sizes = [rd.sends[0][2] - rd.sends[0][1] for rd in rows[5][:10]]
    assert sizes == [d >> (s + 1) for s in range(10)]
    odd = schedule(1000, d)
    assert {len(r) for r in odd} == {2 * 9 + 2}  # p = 512
    assert odd[0][0].sends == ((1, 0, d),) and odd[0][-1].recvs == ((1, 0, d),)


def test_messages_switch_from_sparse_to_dense_per_range() -> None:
    """A range's message is sparse while smaller (values + indices at bits(m − 1)), dense
    from there; receiving a dense one makes the range present, and a corrupted or foreign
    message is refused by name."""
    st = RangeSum(1000, np.float64)
    v = np.zeros(1000)
    v[[3, 500, 999]] = 1.0
    st.start_dense(v, v != 0)
    assert st.encode(0, 1000).size == sum_message_bytes(3, 1000, "float64") == \
        HEADER_BYTES + 3 * 8 + (3 * 10 + 7) // 8
    assert st.encode(0, 500).size == HEADER_BYTES + 8 + 2  # one entry, 9-bit index
    full = RangeSum(1000, np.float64)
    full.start_dense(np.arange(1000.0), np.arange(1000) % 10 != 0)  # 90 % present
    assert full.encode(0, 1000).size == HEADER_BYTES + 8000  # sparse would be larger
    assert full.present.all()  # a start that would go dense is dense everywhere
    st.add(0, 1000, full.encode(0, 1000))
    assert st.present.all() and st.acc[500] == 501.0
    with pytest.raises(PayloadError, match="length 1000, expected 500"):
        st.add(0, 500, full.encode(0, 1000))
    bad = st.encode(0, 1000)
    bad[0] = 0
    with pytest.raises(PayloadError, match="magic"):
        st.put(0, 1000, bad)


def test_the_node_layout_variable_is_checked() -> None:
    assert parse_layout("3", 8) == ((0, 1, 2), (3, 4, 5), (6, 7))
    assert parse_layout("2,1", 3) == ((0, 1), (2,))
    assert parse_layout("flat", 4) is None
    with pytest.raises(ConfigError, match="add up to 5, but the run has 4 ranks"):
        parse_layout("2,3", 4)
    with pytest.raises(ConfigError, match="ranks per node"):
        parse_layout("two", 4)


def test_auto_takes_the_tree_across_nodes_and_the_gather_on_one(monkeypatch) -> None:
    """The default ``auto``: the gather on one node (measured faster on shared memory), the
    tree across nodes (the cost model); a dedicated master gathers; the thread transport
    and the cost model resolve it as the MPI transport does."""
    from decomp.comm.threads import Board, ThreadMasterWorker
    from decomp.comm.tree import DEFAULT_AGGREGATION, resolve_aggregation
    from decomp.netmodel.predict import predict_step_time

    assert DEFAULT_AGGREGATION == "auto" == resolve_aggregation("shared", None)
    assert resolve_aggregation("shared", None, 1) == "gather"
    assert resolve_aggregation("shared", "auto", 2) == "tree"
    assert resolve_aggregation("dedicated", None, 4) == "gather"
    assert ThreadMasterWorker(0, Board(4), "shared", "auto").aggregation == "gather"
    monkeypatch.setenv("DECOMP_NODE_LAYOUT", "2")
    assert ThreadMasterWorker(0, Board(4), "shared", "auto").aggregation == "tree"
    m = {"algorithm": "ef21", "compressor": {"kind": "topk", "ratio": 0.01}}
    calls = [predict_step_time(m, 10_000, 64, aggregation="auto", ranks_per_node=q).calls[0]
             ["call"] for q in (1, 64)]
    assert calls == ["sendrecv", "gather"]
