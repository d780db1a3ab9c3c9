"""Smoke test of the kernel benchmark (tiny sizes; no timing assertions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from decomp import bench
from decomp.cli.bench import add_parser, main, parse_sizes


def test_parse_sizes() -> None:
    assert parse_sizes("1e5,1e6,2.5e7") == [100_000, 1_000_000, 25_000_000]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_sizes("abc")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_sizes("0")


def test_add_parser_registers_bench() -> None:
    parser = argparse.ArgumentParser(prog="decomp")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"])
    assert args.target == "kernels" and args.repeat == 5 and callable(args.func)
    assert args.sizes is None  # each target's own default (kernels: 1e5, 1e6, 2.5e7)
    link = parser.parse_args(["bench", "link", "--delay-ms", "2", "--expect-rate", "1gbit",
                              "--sizes", "8,1e6"])
    assert (link.target, link.delay_ms, link.expect_rate, link.sizes) == ("link", 2.0, "1gbit",
                                                                           [8, 1_000_000])


def test_run_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["kernels", "--sizes", "3000", "--repeat", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "topk 1%" in text and "argpartition" in text and "qsgd s=1" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["label"] for r in rows} == {lab for lab, _ in bench.default_compressors()}
    for r in rows:
        assert r["encode_s"] > 0 and r["decode_s"] > 0 and r["copy_s"] > 0
    only = bench.run_kernels([2000], repeat=1, only=["natural"], baselines=False)
    assert [r.label for r in only] == ["natural"]
    assert "natural" in bench.format_table(only)
