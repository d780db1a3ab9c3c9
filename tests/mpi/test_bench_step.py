"""``decomp bench step`` runs every decomp method on the same model under MPI and reports rows
with the bytes the transports counted (the DDP rows need gloo and are left to the benchmark)."""

from __future__ import annotations

import json

import pytest

from decomp.bench.step import METHODS, StepRow, _powersgd_floats, format_table, run_step_bench

DECOMP = [m for m, spec in METHODS.items() if spec[0] == "decomp"]


@pytest.mark.mpi(min_size=2)
def test_every_decomp_method_steps_and_reports_its_bytes(comm) -> None:
    rows = run_step_bench(comm, model="mlp-small", methods=[*DECOMP, "local (no comm)"],
                          steps=1, rounds=2, warmup=1)
    by = {r.method: r for r in rows}
    assert set(by) == {*DECOMP, "local (no comm)"}
    d, n = 26_122, comm.size
    assert by["sgd (dense all-reduce)"].bytes_sent == 4 * d  # every rank contributes d floats
    assert by["dpsgd ring"].bytes_sent == 4 * d * (1 if n == 2 else 2)  # one copy per neighbour
    for wire in ("sgd fp16 wire", "sgd bf16 wire"):  # 16-bit words both ways
        assert by[wire].bytes_sent == by[wire].bytes_received == 2 * d
    # per edge: the 266 biases and, per weight matrix, r·m or r·k values
    assert 0 < by["powergossip r1 ring"].bytes_sent < 0.05 * by["dpsgd ring"].bytes_sent
    ef21, model = by["ef21 top1%"], by["ef21 top1% model-bcast"]
    assert ef21.bytes_sent == model.bytes_sent == 16 + 261 * 6  # Top-1 %: 261 (value, index)
    assert model.bytes_received == 4 * d * (n - 1) / n  # the dense model, all ranks but one
    assert 0 < ef21.bytes_received < 0.2 * model.bytes_received  # the re-encoded sum
    for r in rows:
        assert r.min_ms <= r.median_ms <= r.max_ms and r.ratio_to_ddp != r.ratio_to_ddp  # NaN
        assert (r.compute_ms is None) == (r.method == "local (no comm)")
    table = format_table(rows)
    assert "ef21 top1%" in table and "x DDP" in table
    assert json.loads(json.dumps([r.as_dict() for r in rows]))[0]["method"] == rows[0].method


@pytest.mark.mpi(min_size=2)
def test_optimizer_rows_blocking_and_overlapped_report_the_dense_bytes(comm) -> None:
    opt = [m for m, spec in METHODS.items() if spec[0] == "optimizer"]
    rows = run_step_bench(comm, model="mlp-small", methods=opt, steps=1, rounds=2, warmup=1)
    assert [r.method for r in rows] == opt
    by = {r.method: r for r in rows}
    dense = [m for m in opt if m.startswith("sgd opt")]
    assert dense == ["sgd opt blocking", "sgd opt overlapped", "sgd opt overlapped no-test"]
    for m in dense:  # the same dense all-reduce, counted alike; compute and step() timed
        r = by[m]
        assert r.bytes_sent == r.bytes_received == 4 * 26_122
        assert r.compute_ms is not None and r.comm_ms is not None and r.compress_ms is None
    # the compressed rows come in pairs: overlapped sends exactly what blocking sends, and less
    # than the dense all-reduce
    blocking = [m for m in opt if m not in dense and m.endswith(" opt blocking")]
    assert blocking and all(m.replace("blocking", "overlapped") in by for m in blocking)
    for m in blocking:
        a, b = by[m], by[m.replace("blocking", "overlapped")]
        assert (a.bytes_sent, a.bytes_received) == (b.bytes_sent, b.bytes_received), m
        assert 0 < a.bytes_sent < 4 * 26_122, m


def test_powersgd_floats_counts_p_and_q() -> None:
    from torch import nn

    m = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 3))
    # weight 20x10: (20 + 10)·4; bias 20; weight 3x20: rank min(4, 3) = 3: (3 + 20)·3; bias 3
    assert _powersgd_floats(m, 4) == 120 + 20 + 69 + 3
    assert StepRow("x", 1.0, 1.0, 1.0, 1.0, 0.0, 0.0).as_dict()["median_ms"] == 1.0
