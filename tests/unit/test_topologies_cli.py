"""``decomp topo`` through its own argparse parser (decomp.cli.topo.add_parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from decomp.cli import topo as cli_topo
from decomp.topologies import mixing_matrix


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="decomp")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_topo.add_parser(sub)
    args = parser.parse_args(["topo", *argv])
    return int(args.func(args))


def test_ring_8(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ring", "8"]) == 0
    out = capsys.readouterr().out
    assert "n: 8" in out and "edges: 8" in out and "degree: min 2, max 2" in out
    assert "rho = max(|lambda_2|, |lambda_n|): 0.80473785" in out
    assert "spectral gap 1 - rho: 0.19526215" in out
    assert "W =" in out  # small n shows W


@pytest.mark.parametrize("argv", [
    ["ring", "5", "--weights", "lazy-metropolis"],
    ["torus", "12", "--rows", "3", "--weights", "max-degree"],
    ["torus", "12", "--cols", "6"],
    ["hypercube", "16"],
    ["exponential", "10"],
    ["complete", "6", "--weights", "max-degree"],
    ["star", "7", "--center", "3"],
    ["random-regular", "12", "--degree", "3", "--seed", "4"],
    ["erdos-renyi", "20", "--p", "0.3", "--seed", "2", "--max-tries", "50"],
    ["er", "20"],
    ["one-peer-exponential", "6", "--step", "1"],
    ["one-peer-hypercube", "8", "--step", "2"],
])
def test_every_generator(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert f"n: {argv[1]}" in out and "spectral gap 1 - rho:" in out


def test_brief_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["exponential", "64", "--brief"]) == 0
    fields = capsys.readouterr().out.strip().split("\t")
    m = mixing_matrix("exponential", 64)
    assert fields[:4] == ["exponential", "64", "metropolis", str(m.num_edges)]
    assert float(fields[6]) == pytest.approx(m.rho, abs=1e-6)
    assert float(fields[7]) == pytest.approx(m.spectral_gap, abs=1e-6)


def test_show_and_hide_w(capsys: pytest.CaptureFixture[str]) -> None:
    run(["ring", "32"])
    assert "W =" not in capsys.readouterr().out
    run(["ring", "32", "--show-w"])
    assert "W =" in capsys.readouterr().out
    run(["ring", "4", "--hide-w"])
    assert "W =" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["W.npy", "W.txt"])
def test_save_and_reload(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    assert run(["torus", "9", "--save", str(path)]) == 0
    w = np.load(path) if name.endswith(".npy") else np.loadtxt(path)
    np.testing.assert_array_equal(w, mixing_matrix("torus", 9).dense())
    capsys.readouterr()
    assert run([str(path), "9"]) == 0
    assert "spectral gap 1 - rho: 0.60000000" in capsys.readouterr().out  # 3x3 torus: rho 0.4
    assert run(["matrix", "9", "--file", str(path)]) == 0


def test_edge_list_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "g.txt"
    f.write_text("0 1\n1 2\n2 0\n2 3\n")
    assert run(["edge-list", "4", "--file", str(f)]) == 0
    assert "edges: 4" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["hypercube", "12"], "n must be a power of two"),
    (["ring", "8", "--rows", "2"], "--rows does not apply to 'ring'"),
    (["ring", "8", "--step", "2"], "--step applies only to"),
    (["torus", "12", "--degree", "3"], "--degree does not apply to 'torus'; it takes: --rows"),
    (["moebius", "8"], "unknown graph kind 'moebius'"),
    (["ring", "8", "--weights", "heat"], "unknown weights 'heat'"),
    (["matrix", "8"], "give the W file with --file"),
    (["erdos-renyi", "30", "--p", "0.01", "--max-tries", "3"], "no connected G"),
])
def test_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("decomp topo: error: ") and message in err
