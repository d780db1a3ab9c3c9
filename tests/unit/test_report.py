"""decomp.report, ``decomp compare`` and ``decomp plot`` on run folders written by ``decomp
sim`` (the reference engine, one process): the tables' numbers are the metrics files' numbers,
the figures are real images, the labels tell sweep tasks apart, and nothing needs MPI."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from decomp.cli import main
from decomp.config import load_config
from decomp.report import (
    all_methods,
    best_rows,
    compare_rows,
    find_runs,
    labels,
    load_run,
    parse_target,
    to_csv,
)
from decomp.report.runs import RunFolderError
from decomp.runner import simulate_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.toml"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four runs of the demo config (breast_cancer, no data files needed): EF21 top-1 at
    multipliers 2, 8, 32 and 512 of the theory step, 2 workers, 60 steps."""
    out = tmp_path_factory.mktemp("runs") / "sweep"
    for task, mult in enumerate((2, 8, 32, 512)):
        cfg = load_config(DEMO, ["run.steps=60", "run.log_every=5", f'name="{task}"',
                                 f'out_dir="{out}"', f"methods.2.lr_multiplier={mult}"])
        simulate_config(cfg, 2, write=True)
    return out


def test_find_runs_reads_every_task_in_numeric_order(sweep: Path) -> None:
    runs = find_runs([sweep])
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    run = runs[0]
    assert [m.label for m in run.methods] == ["GD (dense allreduce)", "EF (top-1)",
                                              "EF21 (top-1)"]
    assert run.meta["engine"] == "sim" and run.meta["n_workers"] == 2
    rows = _rows(sweep / "0" / "metrics.jsonl")
    ef21 = [r for r in rows if r["method"] == "EF21 (top-1)"]
    assert [r["step"] for r in run.methods[2].rows] == [r["step"] for r in ef21]
    assert run.methods[2].column("grad_norm_sq").tolist() == [r["grad_norm_sq"] for r in ef21]


def test_compare_numbers_are_the_metrics_files_numbers(sweep: Path) -> None:
    methods = all_methods(find_runs([sweep]))
    target = parse_target("grad_norm_sq=0.05")
    rows = compare_rows(methods, [target])
    assert len(rows) == 12
    for row, m in zip(rows, methods, strict=True):
        file_rows = [r for r in _rows(m.run.path / "metrics.jsonl") if r["method"] == m.label]
        last = file_rows[-1]
        for col in ("loss", "grad_norm_sq", "bits_up", "bits_down"):
            assert row[col] == last[col]
        assert row["steps"] == last["step"] == 60
        summary = json.loads((m.run.path / "summary.json").read_text())
        entry = next(e for e in summary["methods"] if e["method"] == m.label)
        assert row["status"] == entry["status"] and row["lr"] == entry["lr"]
        hit = next((r for r in file_rows if r["grad_norm_sq"] <= 0.05), None)
        if hit is None:
            assert math.isnan(row["steps to grad_norm_sq<=0.05"])
        else:
            assert row["steps to grad_norm_sq<=0.05"] == hit["step"]
            assert row["bits to grad_norm_sq<=0.05"] == hit["bits_up"]
    # the CSV carries the same floats, to the last digit
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    for row, back in zip(rows, parsed, strict=True):
        assert float(back["grad_norm_sq"]) == row["grad_norm_sq"]
        assert float(back["bits_up"]) == row["bits_up"]


def test_labels_tell_sweep_tasks_apart_and_best_picks_the_lowest(sweep: Path) -> None:
    methods = [m for m in all_methods(find_runs([sweep])) if m.label == "EF21 (top-1)"]
    names = labels(methods)
    assert names == [f"EF21 (top-1) [lr_multiplier={m}]" for m in (2, 8, 32, 512)]
    best = best_rows(methods, "grad_norm_sq", "lr_multiplier",
                     [parse_target("grad_norm_sq=0.05")])
    assert len(best) == 1
    finals = {m.run.name: _rows(m.run.path / "metrics.jsonl") for m in methods}
    grads = {name: [r for r in rows if r["method"] == "EF21 (top-1)"][-1]["grad_norm_sq"]
             for name, rows in finals.items()}
    winner = min(grads, key=grads.__getitem__)
    assert best[0]["final grad_norm_sq"] == grads[winner]
    assert best[0]["best lr_multiplier"] == str((2, 8, 32, 512)[int(winner)])
    assert best[0]["tried"] == 4 and best[0]["method"] == "EF21 (top-1)"


def test_compare_cli_table_and_csv(sweep: Path, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    assert main(["compare", str(sweep / "1"), "--csv", str(tmp_path / "t.csv")]) == 0
    text = capsys.readouterr().out
    assert "EF21 (top-1)" in text and "grad_norm_sq" in text
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    file_rows = _rows(sweep / "1" / "metrics.jsonl")
    for row in rows:
        last = [r for r in file_rows if r["method"] == row["method"]][-1]
        assert float(row["loss"]) == last["loss"]
    assert main(["compare", str(sweep), "--best", "grad_norm_sq", "--over", "lr_multiplier",
                 "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| method |") and len(md.strip().splitlines()) == 5  # + 3 methods
    assert main(["compare", str(sweep), "--target", "grad_norm_sq~1"]) == 1
    assert "expected COLUMN=VALUE" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nothing")]) == 1


def _png_stats(path: Path) -> tuple[tuple[int, ...], int]:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    colors = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return img.shape, len(colors)


def test_plot_writes_real_png_and_pdf(sweep: Path, tmp_path: Path) -> None:
    png, pdf = tmp_path / "f.png", tmp_path / "f.pdf"
    assert main(["plot", str(sweep), "-x", "bits", "-x", "step", "-y", "grad_norm_sq", "-y",
                 "loss", "-o", str(png), "-o", str(pdf)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    shape, n_colors = _png_stats(png)
    assert shape[0] > 500 and shape[1] > 800  # 2 x 2 axes at 100 dpi
    assert n_colors > 50  # lines in several colours, text: not a blank canvas
    assert 20_000 < png.stat().st_size < 200_000


def test_plot_lines_follow_the_data(sweep: Path, tmp_path: Path) -> None:
    from decomp.report import plot_methods

    methods = [m for m in all_methods(find_runs([sweep / "0"]))]
    fig = plot_methods(methods, [tmp_path / "g.png"], x=["bits"], y=["grad_norm_sq"])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # positive values over more than a factor 20
    drawn = {line.get_label(): line for line in ax.get_lines() if not
             line.get_label().startswith("_")}
    assert set(drawn) == {m.label for m in methods}
    for m in methods:
        x, y = drawn[m.label].get_data()
        sent = m.column("bits_up") > 0  # bits on a log axis: step 0 (no bits yet) left out
        assert np.array_equal(y, m.column("grad_norm_sq")[sent])
        assert np.array_equal(x, m.column("bits_up")[sent]) and sent.sum() >= len(sent) - 1
    assert "breast_cancer" in fig.get_suptitle() and "n = 2" in fig.get_suptitle()


def test_plot_refuses_unknown_columns_and_formats(sweep: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(sweep), "-y", "nope", "-o", str(tmp_path / "a.png")]) == 1
    assert "no metrics column 'nope'" in capsys.readouterr().err
    assert main(["plot", str(sweep), "-o", str(tmp_path / "a.jpeg")]) == 1
    assert not (tmp_path / "a.png").exists()


def test_older_summary_and_a_cut_metrics_file_are_read(sweep: Path, tmp_path: Path) -> None:
    run = tmp_path / "old"
    run.mkdir()
    doc = json.loads((sweep / "0" / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(doc["methods"]))  # the bare-list form
    text = (sweep / "0" / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + text.splitlines()[-1][:20])  # a kill mid-line
    loaded = load_run(run)
    assert [m.status for m in loaded.methods] == ["ok", "ok", "ok"]
    assert sum(len(m.rows) for m in loaded.methods) == len(text.splitlines())
    (run / "metrics.jsonl").write_text("{bad\n" + text)
    with pytest.raises(RunFolderError, match="not a JSON line"):
        load_run(run)


def test_report_and_its_commands_need_no_mpi_or_torch(sweep: Path, tmp_path: Path) -> None:
    """decomp plot / compare on a machine without mpi4py and torch (imports of both fail)."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mpi4py", "torch"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from decomp.cli import main
assert main(["compare", {str(sweep)!r}]) == 0
assert main(["plot", {str(sweep)!r}, "-o", {str(tmp_path / "n.png")!r}]) == 0
assert "mpi4py" not in sys.modules and "torch" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.png").stat().st_size > 10_000


def test_compare_columns_and_the_divergence_step(sweep: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(sweep / "0"), "--columns", "method,loss", "--csv", "-"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "method,loss" and len(out) == 4
    assert main(["compare", str(sweep / "0"), "--columns", "method,nope"]) == 1
    assert "no column(s) nope" in capsys.readouterr().err
    cfg = load_config(DEMO, ["run.steps=100", "run.log_every=5", f'out_dir="{tmp_path}"',
                             "methods.0.lr=1e9", "run.loss_blowup=1e3"])
    simulate_config(cfg, 2, write=True)
    rows = compare_rows(all_methods(find_runs([tmp_path / "demo"])))
    gd = rows[0]
    assert gd["status"] == "diverged" and gd["diverged at"] == gd["steps"] > 0
    assert all(math.isnan(r["diverged at"]) for r in rows[1:])
