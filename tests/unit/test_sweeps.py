"""One sweep definition (a config + ``[grid]`` TOML file) read alike by ``decomp slurm`` (the
job array's table), ``decomp slurm --list-tasks`` (jobs/local/sweep.sh) and ``decomp sim``
(every grid point into its own run folder), and two sweeps never share file names."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from decomp.cli import main
from decomp.config import load_config
from decomp.report import all_methods, best_rows, find_runs
from decomp.slurm import load_source

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.toml"
EF21_SWEEP = REPO / "jobs" / "configs" / "ef21_a9a_sweep.toml"


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    """The demo config (breast_cancer: no data files) with EF21's multiplier and k swept."""
    p = tmp_path / "demo_sweep.toml"
    p.write_text(f'config = "{DEMO}"\nname = "demo-sweep"\n'
                 'set = ["run.steps=40", "run.log_every=10"]\n[grid]\n'
                 '"methods.2.lr_multiplier" = [2, 16]\n'
                 '"methods.2.compressor" = [{kind = "topk", k = 1}, {kind = "topk", k = 4}]\n')
    return p


def test_list_tasks_are_the_sbatch_table_rows(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slurm", str(EF21_SWEEP), "--list-tasks", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    src = load_source(EF21_SWEEP)
    assert len(lines) == len(src.settings()) == 6
    for task, line in enumerate(lines):
        words = shlex.split(line)
        assert words[:4] == [str(task), str(src.config), "--out",
                             str(tmp_path / "ef21-a9a-sweep")]
        sets = words[5::2]
        assert words[4::2] == ["--set"] * len(sets)
        assert sets == [f'name="{task}"', *src.task_overrides(task)]
        cfg = load_config(src.config, sets)
        assert cfg.name == str(task)
    script = tmp_path / "s.sbatch"
    assert main(["slurm", str(EF21_SWEEP), "--out", str(tmp_path), "--script", str(script)]) == 0
    table = script.read_text().split("# >>> sweep table\n")[1].split("# <<< sweep table")[0]
    for task, setting in enumerate(src.settings()):
        row = next(r for r in table.splitlines() if r.strip().startswith(f"{task})"))
        assert [w for w in shlex.split(row.split("SETTING=(", 1)[1].rsplit(")", 1)[0])
                if w != "--set"] == setting


def test_two_sweep_forms_write_two_scripts(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = REPO / "jobs" / "configs" / "ef21_a9a.toml"
    assert main(["slurm", str(EF21_SWEEP), "--out", str(tmp_path)]) == 0
    assert main(["slurm", str(cfg), "--out", str(tmp_path), "--sweep",
                 "methods.0.lr_multiplier=[4, 16, 64]", "--sweep",
                 'methods.0.compressor=[{kind="topk",k=1}, {kind="topk",k=8}]']) == 0
    assert main(["slurm", str(cfg), "--out", str(tmp_path), "--sweep",
                 "methods.0.lr_multiplier=[1, 2]"]) == 0
    capsys.readouterr()
    scripts = sorted((tmp_path / "slurm").glob("*.sbatch"))
    assert len(scripts) == 3  # before: the two --sweep forms both wrote decomp-ef21-a9a-sweep
    names = {s.read_text().split("SWEEP_NAME=")[1].split()[0] for s in scripts}
    assert len(names) == 3 and "ef21-a9a-sweep" in names


def test_sim_runs_every_grid_point_into_its_own_folder(sweep_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    assert main(["sim", str(sweep_file), "--workers", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sweep demo-sweep: 4 task(s) of 4" in text and f"decomp compare {out}" in text
    src = load_source(sweep_file)
    for task, setting in enumerate(src.settings()):
        folder = out / "demo-sweep" / str(task)
        cfg = load_config(folder / "config.toml")  # the resolved setting, still loadable
        expected = load_config(DEMO, [*src.task_overrides(task), f'name="{task}"'])
        assert cfg.methods[2].lr_multiplier == expected.methods[2].lr_multiplier
        assert cfg.methods[2].compressor == expected.methods[2].compressor
        assert cfg.run.steps == 40 and cfg.name == str(task)
        rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if r["method"] == "EF21 (top-1)"] == [0, 10, 20, 30, 40]
        assert setting[0].endswith(str(int(cfg.methods[2].lr_multiplier)))
    methods = [m for m in all_methods(find_runs([out])) if m.label == "EF21 (top-1)"]
    best = best_rows(methods, "grad_norm_sq", "lr_multiplier")
    assert [row["method"] for row in best] == ["EF21 (top-1) [compressor=topk k=1]",
                                               "EF21 (top-1) [compressor=topk k=4]"]
    for row, k in zip(best, (1, 4), strict=True):  # one group per k: the lowest final value
        group = [m for m in methods if m.config["compressor"]["k"] == k]
        assert len(group) == 2
        assert row["final grad_norm_sq"] == min(m.final("grad_norm_sq") for m in group)


def test_sim_sweep_tasks_and_jobs(sweep_file: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["sim", str(sweep_file), "--workers", "2", "--out", str(one),
                 "--tasks", "1,3"]) == 0
    assert main(["sim", str(sweep_file), "--workers", "2", "--out", str(two),
                 "--tasks", "1,3", "--jobs", "2"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (one / "demo-sweep").iterdir()) == ["1", "3"]
    for task in ("1", "3"):  # separate processes compute the same numbers
        assert ((one / "demo-sweep" / task / "metrics.jsonl").read_text()
                == (two / "demo-sweep" / task / "metrics.jsonl").read_text())
    assert main(["sim", str(sweep_file), "--workers", "2", "--out", str(one),
                 "--tasks", "7"]) == 1
    assert "sweep demo-sweep has tasks 0-3" in capsys.readouterr().err
