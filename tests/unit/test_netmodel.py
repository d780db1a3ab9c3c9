"""The cost model (decomp.netmodel, decomp model): call prices on hand-computed cases, hops
against the emulated-latency table, the exchange patterns against the implementation's bytes,
FFT spectral gaps against decomp.topologies, step-count scaling, calibration input, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from decomp.algorithms.registry import REGISTRY
from decomp.comm.delay import rounds
from decomp.compress import QSGD, TopK, make_compressor
from decomp.compress.aggregate import SumEncoder
from decomp.config import load_config
from decomp.errors import ConfigError
from decomp.netmodel import calibrate as cal
from decomp.netmodel.patterns import (
    Call,
    bcast_bytes_calls,
    call_time,
    codec_ops,
    hops,
    link_bytes,
    step_pattern,
    sum_payload_bytes,
)
from decomp.netmodel.predict import predict_config, predict_step_time
from decomp.netmodel.spectral import check_ranks, degree, eigenvalues, spectral_gap
from decomp.netmodel.steps import StepsReference, read_curve, scale_steps, steps_from_rows
from decomp.topologies import mixing_matrix

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.toml"
MS, MB = 1e-3, 1e6


# --------------------------------------------------------------------------- call prices

def test_ring_allreduce_hand_case() -> None:
    """1 MB over 4 ranks, α = 1 ms, β = 1 MB/s: 2(n−1)α + 2(n−1)/n·B/β = 6 ms + 1.5 s."""
    c = Call("allreduce", 1e6, 1, 4)
    assert call_time(c, MS, MB, "ring") == pytest.approx(6e-3 + 1.5)
    assert hops(c, "ring") == 6 and link_bytes(c, "ring") == pytest.approx(1.5e6)


def test_other_collectives_hand_cases() -> None:
    a, b = MS, MB
    # recursive doubling, n = 8 (L = 3): L(α + B/β)
    assert call_time(Call("allreduce", 1000, 1, 8), a, b, "recursive-doubling") == \
        pytest.approx(3 * (1e-3 + 1e-3))
    # Rabenseifner, n = 8: 2Lα + 2(n−1)/n·B/β
    assert call_time(Call("allreduce", 8000, 1, 8), a, b) == pytest.approx(6e-3 + 14e-3)
    # all-gather of 100 B from 8 ranks: Lα + (n−1)B/β
    assert call_time(Call("allgather", 100, 1, 8), a, b) == pytest.approx(3e-3 + 700e-6)
    # gather at a master with fan-in 7 of 1 kB: α + 7·B/β
    assert call_time(Call("gather", 1000, 7, 8), a, b) == pytest.approx(1e-3 + 7e-3)
    # exchange with 4 neighbours: α + 4·B/β (one link serialises the sends)
    assert call_time(Call("exchange", 1000, 4, 64), a, b) == pytest.approx(1e-3 + 4e-3)


def test_broadcast_switches_algorithm_like_mpich() -> None:
    a, b = MS, MB
    # small: binomial, L(α + B/β)
    assert call_time(Call("broadcast", 1000, 1, 16), a, b) == pytest.approx(4 * (1e-3 + 1e-3))
    # fewer than 8 ranks: binomial even for a large payload
    assert hops(Call("broadcast", 1e6, 1, 4)) == 2
    # medium, n a power of two: scatter + recursive-doubling allgather, 2Lα + 2(n−1)/n·B/β
    B = 100_000
    assert call_time(Call("broadcast", B, 1, 16), a, b) == \
        pytest.approx(8e-3 + 2 * 15 / 16 * B / b)
    # large (or n not a power of two): van de Geijn with a ring, (L + n − 1)α + 2(n−1)/n·B/β
    B = 1_000_000
    assert call_time(Call("broadcast", B, 1, 16), a, b) == \
        pytest.approx((4 + 15) * 1e-3 + 2 * 15 / 16 * B / b)
    assert hops(Call("broadcast", 20_000, 1, 24)) == 5 + 23


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 9, 16, 33, 1024])
def test_hops_agree_with_the_emulated_delay_table(n: int) -> None:
    """MPICH's algorithms for small messages (Rabenseifner for the all-reduce) have the hops
    decomp.comm.delay adds per call; hops="emulated" is that table for any size/algorithm."""
    for call in ("exchange", "gather", "broadcast", "allgather", "allreduce"):
        c = Call(call, 64, 1, n)
        assert hops(c) == rounds(call, n), call
        big = Call(call, 10_000_000, 1, n)
        for alg in ("ring", "rabenseifner", "recursive-doubling"):
            assert hops(big, alg, "emulated") == rounds(call, n)


# --------------------------------------------------------------------------- patterns

def _method(name: str) -> dict[str, object]:
    m: dict[str, object] = {"algorithm": name}
    if REGISTRY[name].uses_compressor and name != "allreduce_qsgd":
        unbiased = name in ("dcgd", "dcd_psgd", "ecd_psgd")
        m["compressor"] = {"kind": "qsgd", "levels": 4} if unbiased else {"kind": "topk", "k": 5}
    return m


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_has_a_pattern_of_real_payload_bytes(name: str) -> None:
    d, n = 1000, 8
    calls = step_pattern(_method(name), d, n, 2)
    assert calls and all(c.nbytes > 0 for c in calls)
    spec = REGISTRY[name]
    comp = _method(name).get("compressor") or spec.default_compressor
    if comp is not None:  # the uplink / exchange message is the encoded payload's size
        C = make_compressor(comp)
        x = np.random.default_rng(0).standard_normal(d)
        real = C.encode(x, (0, 0, 1)).size
        first = calls[0]
        assert first.nbytes == real + (1 if name == "ef21_plus" else 0)
    else:
        assert calls[0].nbytes == d * 8


def test_the_docs_table_names_every_registered_method() -> None:
    """docs/netmodel.md's "calls per step" table is checked against the registry: every
    method is named, or is a decentralized one that keeps the base class's pattern (the
    table's last row: one exchange per entry of its ``exchanges``)."""
    import re

    from decomp.algorithms import DecentralizedAlgorithm

    text = (Path(__file__).resolve().parents[2] / "docs" / "netmodel.md").read_text()
    table = text[text.index("| method | calls per step |"):]
    table = table[:table.index("\n\n")]
    assert "| any other decentralized method |" in table
    named = set(re.findall(r"`([a-z0-9_]+)`", table))
    for name in set(REGISTRY) - named:
        cls = REGISTRY[name].cls
        assert issubclass(cls, DecentralizedAlgorithm), name
        assert cls.comm_pattern is DecentralizedAlgorithm.comm_pattern, name


def test_patterns_follow_the_implementation() -> None:
    d, n = 1000, 8
    topk = {"kind": "topk", "k": 5}
    ef21 = step_pattern({"algorithm": "ef21", "compressor": topk}, d, n)
    assert [c.call for c in ef21] == ["gather", "broadcast"]
    assert ef21[0].fan == n - 1 and ef21[0].n == n  # shared master
    ded = step_pattern({"algorithm": "ef21", "compressor": topk}, d, n, master="dedicated")
    assert ded[0].fan == n and ded[0].n == n + 1
    model = step_pattern({"algorithm": "ef21", "compressor": topk, "downlink": "model"}, d, n)
    assert model[1].nbytes == d * 8  # the dense model is broadcast
    plus = step_pattern({"algorithm": "ef21_plus", "compressor": topk}, d, n)
    assert plus[1].nbytes == d * 8  # EF21+ always broadcasts x
    pp = step_pattern({"algorithm": "ef21_pp", "compressor": topk, "p": 0.25}, d, n)
    assert pp[0].fan == pytest.approx(0.25 * (n - 1))
    bc = step_pattern({"algorithm": "ef21_bc", "compressor": topk,
                       "downlink_compressor": {"kind": "topk", "k": 2}}, d, n)
    assert bc[1].nbytes == bcast_bytes_calls(TopK(2).payload_bytes(d), n, "")[0].nbytes
    beer = step_pattern({"algorithm": "beer", "compressor": topk}, d, 16, 4)
    assert [(c.call, c.fan) for c in beer] == [("exchange", 4), ("exchange", 4)]
    dp = step_pattern("dpsgd", d, 16, 4)
    assert dp[0].overlap and dp[0].nbytes == d * 8 and dp[0].fan == 4
    q = step_pattern("allreduce_qsgd", d, 16)
    assert q[0].call == "allgather" and q[0].nbytes == QSGD(16).payload_bytes(d)
    assert step_pattern("allreduce_sgd", d, 16)[0].call == "allreduce"
    assert step_pattern("gd", d, 16, master="dedicated")[0].n == 17


def test_downlink_sum_bytes_equal_the_sum_encoder() -> None:
    """Disjoint Top-k index sets (the model's upper bound): the SumEncoder's payload has
    exactly the predicted size, sparse and (when n·k nears d) dense."""
    d, k = 1000, 5
    C = TopK(k)
    for n in (3, 8, 150):
        payloads = []
        for i in range(n):
            x = np.zeros(d)
            x[[(i * k + j) % d for j in range(k)]] = 1.0 + np.arange(k)
            payloads.append(C.encode(x))
        got = SumEncoder(d, np.float64).encode(C, payloads).size
        assert got == sum_payload_bytes(C, d, n), n


def test_broadcast_bytes_chunk_matches_the_transport() -> None:
    """MasterWorker.broadcast_bytes' steady chunk (one Bcast) and its 2nd Bcast beyond 2 MiB."""
    from mpi4py import MPI

    from decomp.comm import MasterWorker

    mw = MasterWorker(MPI.COMM_SELF)
    for size in (10, 1000, 100_000):
        mw.broadcast_bytes(np.zeros(size, np.uint8))
        assert bcast_bytes_calls(size, 4, "")[0].nbytes == mw._first
    calls = bcast_bytes_calls(3 << 20, 4, "")
    assert len(calls) == 2 and calls[0].nbytes + calls[1].nbytes == (3 << 20) + 8


def test_degree_and_fan_in_scale_the_bandwidth_term() -> None:
    d, B = 10_000, 80_000
    ring = predict_step_time("dpsgd", d, 64, "ring", 0.0, MB)
    full = predict_step_time("dpsgd", d, 64, "complete", 0.0, MB)
    assert ring.comm_s == pytest.approx(2 * B / MB) and full.comm_s == pytest.approx(63 * B / MB)
    g8 = predict_step_time("ef21", d, 8, alpha=0.0, beta=MB)
    g64 = predict_step_time("ef21", d, 64, alpha=0.0, beta=MB)
    up = 16 + d * 8
    assert g8.calls[0]["link_bytes"] == 7 * up and g64.calls[0]["link_bytes"] == 63 * up


def test_step_combines_overlap_compute_and_codec() -> None:
    costs = cal.CodecCosts({"axpy|float64": {"axpy": [1e-6, 0.0], "per": "d"},
                            "TopK(k=5)|float64": {"encode": [2e-6, 0.0], "decode": [1e-6, 0.0],
                                                  "per": "k"}})
    slow = predict_step_time("dpsgd", 100, 16, "torus", MS, MB, 0.01, costs=costs)
    assert slow.step_s == pytest.approx(0.01 + 5e-6)  # exchange hidden behind compute
    fast = predict_step_time("dpsgd", 100, 16, "torus", MS, MB, 0.0, costs=costs)
    assert fast.step_s == pytest.approx(fast.comm_s + 5e-6)
    e = predict_step_time({"algorithm": "ef21", "compressor": {"kind": "topk", "k": 5}}, 100,
                          8, alpha=MS, beta=MB, compute_s=1e-3, costs=costs)
    # encode + own decode + 8 decodes + 1 axpy; comm = gather + broadcast
    assert e.compress_s == pytest.approx(2e-6 + 1e-6 + 8e-6 + 1e-6)
    assert e.step_s == pytest.approx(1e-3 + e.comm_s + e.compress_s)
    ops = codec_ops({"algorithm": "choco_sgd", "compressor": {"kind": "topk", "k": 5}}, 16, 4)
    # every payload (own + 4 neighbours') into its replica and into the kept mixing sum S
    assert [(o.op, o.count) for o in ops] == [("encode", 1), ("decode", 10)]


def test_codec_work_follows_who_decodes_what() -> None:
    topk = {"kind": "topk", "k": 5}

    def ops(method: dict[str, object], master: str = "shared") -> list[tuple[str, float]]:
        return [(o.op, o.count) for o in codec_ops(method, 8, master=master) if o.count]

    assert ops({"algorithm": "ef21", "compressor": topk}) == \
        [("encode", 1), ("decode", 1), ("decode", 8), ("axpy", 1)]
    # a dedicated master is no worker: no decode into its own g_i, the workers' encode remains
    assert ops({"algorithm": "ef21", "compressor": topk}, "dedicated") == \
        [("encode", 1), ("decode", 8), ("axpy", 1)]
    # DCGD keeps no per-worker state; the model downlink applies no sum
    assert ops({"algorithm": "dcgd", "compressor": {"kind": "qsgd", "levels": 4},
                "downlink": "model"}) == [("encode", 1), ("decode", 8)]
    assert ops({"algorithm": "ef21_plus", "compressor": topk}) == \
        [("encode", 2), ("decode", 2), ("decode", 8)]
    assert ops({"algorithm": "ef21_pp", "compressor": topk, "p": 0.5})[2] == ("decode", 4)
    assert [o.count for o in codec_ops("allreduce_qsgd", 64)] == [1, 64]


def test_predict_step_time_takes_a_config() -> None:
    cfg = load_config(DEMO)
    out = predict_step_time(cfg, 30, 16, "ring", MS, 125e6, 1e-4)
    assert isinstance(out, dict) and list(out) == [m.label for m in cfg.methods]
    assert out["GD (dense allreduce)"].calls[0]["call"] == "allreduce"


# --------------------------------------------------------------------------- spectra

@pytest.mark.parametrize("kind", ["ring", "torus", "exponential", "complete"])
@pytest.mark.parametrize("n", [8, 9, 16])
@pytest.mark.parametrize("weights", ["metropolis", "max-degree", "lazy-metropolis"])
def test_fft_gaps_equal_the_dense_spectrum(kind: str, n: int, weights: str) -> None:
    W = mixing_matrix(kind, n, weights)
    assert spectral_gap(kind, n, weights) == pytest.approx(W.spectral_gap, abs=1e-12)
    assert degree(kind, n) == W.degree_max == W.degree_min
    dense = np.sort(np.linalg.eigvalsh(W.dense()))
    assert np.allclose(np.sort(eigenvalues(kind, n, weights)), dense, atol=1e-12)


def test_large_gaps_have_the_known_asymptotics() -> None:
    n = 16384
    # ring, Metropolis 1/3: 1 − λ₂ = (2/3)(1 − cos 2π/n)
    assert spectral_gap("ring", n) == pytest.approx(2 / 3 * (1 - math.cos(2 * math.pi / n)))
    assert spectral_gap("complete", n) == pytest.approx(1.0)
    assert degree("exponential", n) == 2 * 14 - 1  # ±2^j, j < 14, and +n/2 = −n/2


def test_bad_ranks_are_refused() -> None:
    with pytest.raises(ConfigError, match="square"):
        check_ranks("torus", 1000)
    with pytest.raises(ConfigError, match=">= 2"):
        check_ranks("ring", 1)
    with pytest.raises(ConfigError, match="covers"):
        check_ranks("star", 16)


# --------------------------------------------------------------------------- steps

def test_step_scaling_rules() -> None:
    r_ref, r = 0.5, 0.9
    # master–worker / all-reduce: unchanged
    assert scale_steps("ef21", 100, r_ref, r)[0] == 100
    assert scale_steps("allreduce_qsgd", 100, r_ref, r)[0] == 100
    # D-PSGD: S0 + (S − S0)·p_ref/p, p = 1 − ρ²
    s, how = scale_steps("dpsgd", 100, r_ref, r, s_base=40)
    assert s == pytest.approx(40 + 60 * (1 - 0.25) / (1 - 0.81)) and how.startswith("theory")
    # CHOCO: δ² ratio
    assert scale_steps("choco_sgd", 100, r_ref, r)[0] == pytest.approx(100 * 0.25 / 0.01)
    assert scale_steps("beer", 100, r_ref, r)[1].startswith("heuristic")
    # the upper bound: the whole count scales on a worse W, S_ref on a better one
    assert scale_steps("dpsgd", 100, r_ref, r, 40, bound=True)[0] == \
        pytest.approx(100 * 0.75 / 0.19)
    assert scale_steps("dpsgd", 100, r, r_ref, 40, bound=True)[0] == 100


def test_steps_from_a_curve(tmp_path: Path) -> None:
    rows = [{"method": "a", "step": 0, "grad_norm_sq": 1.0},
            {"method": "a", "step": 10, "grad_norm_sq": 0.01},
            {"method": "b", "step": 0, "grad_norm_sq": 1.0},
            {"method": "b", "step": 10, "grad_norm_sq": float("nan")}]
    assert steps_from_rows(rows, 0.1) == {"a": 10.0, "b": None}
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps({"run": {"n_workers": 6}}))
    ref = read_curve(tmp_path, 0.1)
    assert ref.n_ref == 6 and ref.steps["a"] == 10


def test_predict_config_scales_gossip_steps() -> None:
    cfg = load_config({"name": "t", "problem": {"dataset": "breast_cancer"},
                       "topology": {"kind": "ring"},
                       "methods": [{"algorithm": "allreduce_sgd", "lr": 0.1},
                                   {"algorithm": "dpsgd", "lr": 0.1},
                                   {"algorithm": "choco_sgd", "lr": 0.1, "consensus_step": 0.5,
                                    "compressor": {"kind": "topk", "k": 3}}]})
    ref = StepsReference({"allreduce_sgd": 50.0, "dpsgd": 80.0, "choco_sgd": 120.0}, 8, 1e-3,
                         "test")
    link = cal.Link(MS, 125e6, "test")
    rows = predict_config(cfg, [64], ["ring", "complete"], link, d=30, compute_s=1e-4,
                          costs=None, reference=ref)
    by = {(r.step.topology, r.step.algorithm): r for r in rows}
    rho8, rho64 = 1 - spectral_gap("ring", 8), 1 - spectral_gap("ring", 64)
    assert by["ring", "allreduce_sgd"].steps == 50
    assert by["ring", "dpsgd"].steps == pytest.approx(50 + 30 * (1 - rho8**2) / (1 - rho64**2))
    assert by["complete", "dpsgd"].steps == pytest.approx(50 + 30 * (1 - rho8**2))
    assert by["ring", "choco_sgd"].steps == pytest.approx(
        50 + 70 * (1 - rho8) ** 2 / (1 - rho64) ** 2)
    for r in rows:
        assert r.time_s == pytest.approx(r.steps * r.step.step_s)
    upper = predict_config(cfg, [64], ["ring"], link, d=30, compute_s=1e-4, costs=None,
                           reference=ref, transient="bound")
    dp = next(r for r in upper if r.step.algorithm == "dpsgd")
    assert dp.steps == pytest.approx(80 * (1 - rho8**2) / (1 - rho64**2))
    better = predict_config(cfg, [64], ["complete"], link, d=30, compute_s=1e-4, costs=None,
                            reference=ref, transient="bound")
    assert [r.steps for r in better] == [50, 80, 120]  # a better W: at most S_ref
    with pytest.raises(ConfigError, match="transient"):
        predict_config(cfg, [64], ["ring"], link, d=30, compute_s=0.0, costs=None,
                       reference=ref, transient="some")


# --------------------------------------------------------------------------- calibration

def test_rates_delays_and_link_files(tmp_path: Path) -> None:
    assert cal.parse_rate("1gbit") == 125e6 and cal.parse_rate("100Mbit/s") == 12.5e6
    assert cal.parse_rate("125MB/s") == 125e6
    assert cal.parse_delay("1ms") == 1e-3 and cal.parse_delay("250us") == 250e-6
    for bad in ("1 furlong", "fast", "0gbit"):
        with pytest.raises(ConfigError):
            cal.parse_rate(bad)
    with pytest.raises(ConfigError, match="delay"):
        cal.parse_delay("1 fortnight")
    link = cal.link_params("1gbit", "1ms", base_latency_s=30e-6)
    assert link.alpha_s == pytest.approx(1.03e-3) and link.beta_Bps == 125e6
    f = tmp_path / "link.json"
    f.write_text(json.dumps({"alpha_s": 2e-3, "beta_Bps": 1e7, "sizes": [8]}))
    assert cal.link_params(link=f).alpha_s == 2e-3
    assert cal.link_params(link={"fit": {"alpha_s": 1e-4, "beta_Bps": 5e6}}).beta_Bps == 5e6
    assert cal.link_params("10mbit", link=f).beta_Bps == pytest.approx(1.25e6)
    with pytest.raises(ConfigError, match="alpha_s"):
        cal.link_params(link={"beta": 1})
    with pytest.raises(ConfigError, match="rate"):
        cal.link_params()


def test_codec_costs_are_measured_once_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    costs = cal.CodecCosts.load(path)
    t = costs.seconds("encode", TopK(ratio=0.01), 50_000)
    assert t > 0 and path.exists()
    again = cal.CodecCosts.load(path)
    assert again.seconds("encode", TopK(ratio=0.01), 50_000) == t  # from the file
    assert "TopK(ratio=0.01)|float64" in json.loads(path.read_text())["codecs"]
    # a fixed k above 1,000 is calibrated on longer vectors (k must fit d)
    assert costs.seconds("decode", TopK(1500), 200_000) > 0
    assert costs.entries["TopK(k=1500)|float64"]["sizes"] == [10_000, 1_000_000]


def test_compute_is_timed_on_the_config_problem() -> None:
    cfg = load_config(DEMO)
    full8 = cal.estimate_compute(cfg, 8, None)
    batch = cal.estimate_compute(cfg, 8, 4)
    assert full8 > 0 and batch > 0
    assert cal.model_dim(cfg) == 30


# --------------------------------------------------------------------------- CLI

def _cal_file(tmp_path: Path) -> Path:
    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"codecs": {
        "axpy|float64": {"axpy": [1e-6, 1e-9], "per": "d"},
        "TopK(k=1)|float64": {"encode": [5e-6, 1e-9], "decode": [2e-6, 0.0], "per": "k"}}}))
    return p


def test_cli_prints_a_table_and_writes_json(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from decomp.cli import main

    out = tmp_path / "model.json"
    code = main(["model", str(DEMO), "--ranks", "16", "--ranks", "64", "--rate", "1gbit",
                 "--delay", "1ms", "--compute-ms", "0.2", "--calibration",
                 str(_cal_file(tmp_path)), "--steps-to-target", "300", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "## ring, n = 16" in text and "## ring, n = 64" in text
    assert "EF21 (top-1)" in text and "step ms" in text
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 6 and doc["alpha_s"] == pytest.approx(1.03e-3)
    cfg = load_config(DEMO)
    want = predict_step_time(cfg, 30, 64, "ring", 1.03e-3, 125e6, 2e-4,
                             costs=cal.CodecCosts.load(_cal_file(tmp_path)))
    got = {r["method"]: r for r in doc["rows"] if r["n"] == 64}
    for label, st in want.items():
        assert got[label]["step_s"] == pytest.approx(st.step_s)
        assert got[label]["time_s"] == pytest.approx(300 * st.step_s)


def test_cli_notes_a_batch_larger_than_the_shard(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from decomp.cli import main

    code = main(["model", str(DEMO), "--ranks", "64", "--rate", "1gbit", "--calibration",
                 str(_cal_file(tmp_path)), "--set", "methods.2.batch_size=16"])
    out = capsys.readouterr().out
    assert code == 0 and "at n = 64 a shard has 9 rows < batch_size 16" in out


def test_cli_steps_from_a_sim_run_now(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--sim: the reference curve of the config at --sim-workers, read at --target; the
    master–worker counts are carried unchanged to n = 16."""
    from decomp.cli import main
    from decomp.runner import simulate_config

    sets = ["run.steps=60", "run.log_every=5"]
    code = main(["model", str(DEMO), "--ranks", "16", "--rate", "1gbit", "--compute-ms", "0.1",
                 "--calibration", str(_cal_file(tmp_path)), "--sim", "--sim-workers", "2",
                 "--target", "0.5", "--json", str(tmp_path / "m.json"),
                 *[a for s in sets for a in ("--set", s)]])
    assert code == 0 and "decomp sim at n = 2" in capsys.readouterr().out
    doc = json.loads((tmp_path / "m.json").read_text())
    cfg = load_config(DEMO, [*sets, f'out_dir="{tmp_path}"'])
    simulate_config(cfg, 2, write=True)
    want = read_curve(tmp_path / cfg.name, 0.5, 2).steps
    assert any(v is not None for v in want.values())
    assert {r["method"]: r["steps"] for r in doc["rows"]} == want


@pytest.mark.parametrize("args, message", [
    (["--rate", "1 gigaparsec"], "cannot read the rate"),
    (["--rate", "1gbit", "--topology", "torus", "--ranks", "1000"], "square"),
    (["--rate", "1gbit", "--ranks", "1"], ">= 2"),
    (["--rate", "1gbit", "--target", "1e-3"], "--sim-curve"),
    (["--delay", "1ms"], "rate"),
])
def test_cli_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from decomp.cli import main

    base = ["model", str(DEMO), "--compute-ms", "0.1"]
    if "--ranks" not in args:
        base += ["--ranks", "16"]
    assert main([*base, *args]) == 1
    assert message in capsys.readouterr().err


def test_the_model_prices_per_tensor_and_low_rank_methods_on_the_layout() -> None:
    """Given the model's tensors, a per-tensor Top-k costs Σ_t k_t entries (not k of the flat
    vector) and PowerSGD r·(m + k) per compressed matrix (not the dense gradient); the bytes
    are what the bound algorithm object itself declares."""
    from decomp.algorithms import PowerSGD
    from decomp.compress import bind_layout
    from decomp.layout import Layout
    from decomp.netmodel.patterns import method_spec

    layout = Layout.from_shapes([("w1", (64, 32)), ("b1", (64,)), ("w2", (10, 64))])
    d = layout.d
    per = {"algorithm": "ef21", "compressor": {"kind": "topk", "ratio": 0.01,
                                               "per_tensor": True}}
    calls = step_pattern(method_spec(per, layout), d, 4)
    bound = bind_layout(make_compressor(per["compressor"]), layout)
    assert calls[0].nbytes == bound.payload_bytes(d, np.float64)
    assert calls[0].nbytes != TopK(ratio=0.01).payload_bytes(d, np.float64)
    with pytest.raises(Exception, match="not bound to a layout"):
        step_pattern(per, d, 4)  # no layout: the per-tensor form cannot be priced
    low = step_pattern(method_spec({"algorithm": "powersgd", "rank": 2}, layout), d, 4)
    assert sum(c.nbytes for c in low) == 8 * (2 * (64 + 32) + 64 + 2 * (10 + 64))
    assert low == PowerSGD(rank=2).comm_pattern(d, 4, layout=layout)
    assert step_pattern("powersgd", d, 4)[0].nbytes == 8 * d  # one flat slot: dense, as GD


def test_the_tree_is_priced_from_the_class_pattern() -> None:
    """aggregation = "tree" (issue 23): log2(n) reduce-scatter rounds whose messages stay
    near one payload's half while the sums are sparse and halve with the range once they
    are dense, then log2(n) all-gather rounds of the total's ranges — one hop each; at 1,024
    ranks it beats the gather and moves no more than the dense all-reduce's 2·(n−1)/n·4d
    bytes on a link; 1,000 ranks add the fold and the unfold. The node-aware split (32 ranks
    per node) sends only the leaders' 2·log2(1024/32) rounds over the network."""
    from decomp.netmodel.predict import predict_step_time

    m = {"algorithm": "ef21", "compressor": {"kind": "topk", "ratio": 0.01}}
    d, kw = 1_101_834, dict(alpha=4e-5, beta=1.25e9, dtype=np.float32)
    gather = predict_step_time(m, d, 1024, aggregation="gather", **kw)
    tree = predict_step_time(m, d, 1024, aggregation="tree", **kw)
    sgd = predict_step_time("sgd", d, 1024, **kw)
    assert len(tree.calls) == 20 and all(c["call"] == "sendrecv" and c["hops"] == 1
                                         for c in tree.calls)
    rs = [c["bytes"] for c in tree.calls[:10]]
    assert max(rs) < 2 * rs[0] and rs[-1] < rs[0]  # sparse halves, then dense shrinking
    assert tree.comm_s < gather.comm_s / 20 and tree.link_bytes < sgd.link_bytes
    odd = predict_step_time(m, d, 1000, aggregation="tree", **kw)
    assert [c["what"].split(":")[0] for c in (odd.calls[0], odd.calls[-1])] == ["fold", "unfold"]
    node = predict_step_time(m, d, 1024, aggregation="tree", ranks_per_node=32, **kw)
    net = [c for c in node.calls if not c["what"].startswith("node")]
    assert len(net) == 2 * 5 and node.comm_s < gather.comm_s / 10
    # a method that keeps the master prices its gather under either setting
    plus = {"algorithm": "ef21_plus", "compressor": {"kind": "topk", "ratio": 0.01}}
    assert predict_step_time(plus, d, 64, aggregation="tree", **kw).calls == \
        predict_step_time(plus, d, 64, aggregation="gather", **kw).calls
