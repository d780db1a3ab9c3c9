"""The plain progress line (stderr not a terminal), the run metadata of summary.json /
config.toml, and the full metrics curve of ``decomp sim --out`` (one process)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from decomp.config import load_config
from decomp.runner import simulate_config
from decomp.runner.progress import ProgressLine, every_s_from_env, make_progress, show_metrics
from decomp.runner.simulate import log_steps

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.toml"


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_line_at_most_every_n_seconds_with_rate_and_eta() -> None:
    clock, out = _Clock(), io.StringIO()
    p = ProgressLine(1000, "EF21 top-1", every_s=10, stream=out, clock=clock)
    for _ in range(79):  # 79 steps in 9.875 s: nothing yet
        clock.t += 0.125
        p.update(1)
    assert out.getvalue() == ""
    show_metrics(p, {"grad_norm_sq": 1.5e-4, "loss": 0.3, "bits_up": 2.5e6})
    clock.t += 0.125
    p.update(1)  # step 80 at 10 s: one line
    lines = out.getvalue().splitlines()
    assert lines == ["[progress] EF21 top-1: step 80/1000 (8%), ||grad f||^2 1.500e-04, "
                     "2.50 Mbit/worker, 8 steps/s, ETA 1 min 55 s"]
    for _ in range(40):  # 5 s more: still one line
        clock.t += 0.125
        p.update(1)
    assert len(out.getvalue().splitlines()) == 1
    for _ in range(40):
        clock.t += 0.125
        p.update(1)
    assert len(out.getvalue().splitlines()) == 2 and "step 160/1000" in out.getvalue()


def test_progress_line_torch_metrics_and_resumed_start() -> None:
    clock, out = _Clock(), io.StringIO()
    p = ProgressLine(500, "SGD", every_s=0, initial=300, stream=out, clock=clock)
    p.observe({"loss": 0.25, "test_acc": 0.875})
    clock.t += 2.0
    p.update(100)  # 100 steps in 2 s after a resume at step 300
    assert out.getvalue().strip() == ("[progress] SGD: step 400/500 (80%), loss 0.2500, test acc "
                                      "0.8750, 50 steps/s, ETA 2 s")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_make_progress_bar_on_a_terminal_line_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm import tqdm

    assert make_progress(10, "x", False, stream=_Stream(True)) is None
    bar = make_progress(10, "x", True, stream=_Stream(True))
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("DECOMP_PROGRESS_EVERY", "2.5")
    line = make_progress(10, "x", True, stream=_Stream(False))
    assert isinstance(line, ProgressLine) and line.every_s == 2.5
    assert make_progress(10, "x", True, every_s=7, stream=_Stream(False)).every_s == 7
    monkeypatch.setenv("DECOMP_PROGRESS_EVERY", "soon")
    assert every_s_from_env() == 10.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    cfg = load_config(DEMO, ["run.steps=33", "run.log_every=10", f'out_dir="{out}"'])
    simulate_config(cfg, 3, write=True)
    return out / "demo"


def test_sim_writes_a_row_per_log_step_with_the_run_columns(demo_run: Path) -> None:
    rows = [json.loads(r) for r in (demo_run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((demo_run / "summary.json").read_text())
    assert log_steps(33, 10) == [0, 10, 20, 30, 33]
    for entry in summary["methods"]:
        mine = [r for r in rows if r["method"] == entry["method"]]
        assert [r["step"] for r in mine] == [0, 10, 20, 30, 33]
        assert set(mine[0]) >= {"loss", "grad_norm_sq", "bits_up", "bits_down",
                                "consensus_distance"}
        last = mine[-1]
        for key in ("loss", "grad_norm_sq", "bits_up", "bits_down"):
            assert last[key] == entry[key]
        bits = np.array([r["bits_up"] for r in mine])
        steps = np.array([r["step"] for r in mine])
        if entry["algorithm"] == "ef21":  # g_i^0 = C(∇f_i(x^0)) is sent before step 1
            assert bits[0] > 0
        per_step = (bits[-1] - bits[0]) / 33
        assert np.allclose(bits, bits[0] + per_step * steps, rtol=1e-12)
        grads = [r["grad_norm_sq"] for r in mine]
        assert grads[-1] < grads[0]


def test_summary_and_config_record_the_run(demo_run: Path) -> None:
    doc = json.loads((demo_run / "summary.json").read_text())
    run = doc["run"]
    assert run["engine"] == "sim" and run["n_workers"] == 3 and run["world_size"] == 1
    assert run["versions"]["numpy"] == np.__version__ and run["versions"]["decomp"]
    assert run["hosts"] and run["command"] and run["started"]
    steps = {s["method"]: s for s in run["step_sizes"]}
    for entry in doc["methods"]:
        assert steps[entry["method"]]["step_size"] == entry["lr"] > 0
        assert steps[entry["method"]]["lr"] == "theory"
    text = (demo_run / "config.toml").read_text()
    assert "# engine: sim" in text and "# methods.2 (EF21 (top-1)): lr = 'theory' x 8" in text
    again = load_config(demo_run / "config.toml")  # the comments keep it a runnable config
    assert again.methods[2].lr == "theory" and again.run.steps == 33


def test_sim_divergence_keeps_the_rows_before_it(tmp_path: Path) -> None:
    """A step far too large for GD: the reference's loss passes run.loss_blowup x its start;
    the method ends 'diverged' at that log step with the rows logged so far, as decomp run."""
    cfg = load_config(DEMO, ["run.steps=200", "run.log_every=5", f'out_dir="{tmp_path}"',
                             "methods.0.lr=1e9", "run.loss_blowup=1e3"])
    res = simulate_config(cfg, 2, write=True)
    gd = res[0]
    assert gd.status == "diverged" and "exceeded 1000 x its start" in gd.message
    rows = [json.loads(r) for r in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()
            if json.loads(r)["method"] == gd.method]
    assert rows[-1]["step"] == gd.steps < 200
    assert rows[-1]["loss"] > 1e3 * rows[0]["loss"]
    assert all(r["loss"] <= 1e3 * rows[0]["loss"] for r in rows[:-1])
    assert [r.status for r in res[1:]] == ["ok", "ok"]
