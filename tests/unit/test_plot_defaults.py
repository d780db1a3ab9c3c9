"""``decomp plot``'s defaults, checked on the Figure it returns (axis scales, y label, legend
entries, title), on run folders written by ``decomp sim``: a torch run is drawn as its
training loss (‖∇f‖² of a network rises while it learns), bits and bytes on a log x axis, the
run folder in the legend when a method's name occurs in several folders, and the topology in
the title only when every method is decentralized."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decomp.cli import main
from decomp.config import load_config
from decomp.report import all_methods, find_runs, plot_methods
from decomp.report.plot import default_y, legend_names
from decomp.runner import simulate_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.toml"
DEC = REPO / "jobs" / "configs" / "decentralized.toml"


def _sim(config: Path, out: Path, name: str, sets: list[str], workers: int = 2) -> Path:
    cfg = load_config(config, [*sets, f'name="{name}"', f'out_dir="{out}"'])
    simulate_config(cfg, workers, write=True)
    return out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("plotruns")
    return {
        "a": _sim(DEMO, out / "a", "demo", ["run.steps=40", "run.log_every=5"]),
        "b": _sim(DEMO, out / "b", "demo", ["run.steps=40", "run.log_every=5"]),
        "dec": _sim(DEC, out, "dec", ["run.steps=20", "run.log_every=5",
                                      'problem.dataset="breast_cancer"', "problem.lam=0.1",
                                      'problem.scale="standard"'], workers=4),
        "torch": _torch_run(out),
    }


def _torch_run(out: Path) -> Path:
    """One SGD method on digits with the package's MLP, 2 workers, 30 steps."""
    pytest.importorskip("torch")
    cfg_path = out / "torch.toml"
    cfg_path.write_text(f"""name = "digits-mlp"
seed = 0
out_dir = "{out}"
[problem]
kind = "torch"
model = "mlp"
model_options = {{ hidden = [32] }}
dataset = "digits"
shard = "iid"
[run]
steps = 30
log_every = 10
x0 = "model"
[[methods]]
name = "SGD"
algorithm = "sgd"
lr = 0.3
batch_size = 32
""")
    simulate_config(load_config(cfg_path), 2, write=True)
    return out / "digits-mlp"


def _legend(fig: Any) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_torch_run_defaults_to_its_training_loss(runs: dict[str, Path], tmp_path: Path) -> None:
    methods = all_methods(find_runs([runs["torch"]]))
    assert default_y(methods) == "loss"
    fig = plot_methods(methods, [tmp_path / "t.png"])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "loss f(x)"
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "SGD"]
    assert np.array_equal(line.get_ydata(), methods[0].column("loss"))
    # the loss falls while ‖∇f‖² of this network rises: the default shows the former
    g = methods[0].column("grad_norm_sq")
    assert methods[0].column("loss")[-1] < methods[0].column("loss")[0] and g[-1] > g[0]


def test_a_users_loop_folder_is_a_torch_run(runs: dict[str, Path], tmp_path: Path) -> None:
    """A folder of decomp.torch.MetricsWriter (no config.toml; its run metadata names the
    front end), here the torch run's files so rewritten: loss by default, though it has
    grad_norm_sq; without config and metadata, a folder without grad_norm_sq is one too."""
    import json
    import shutil

    own = tmp_path / "own"
    shutil.copytree(runs["torch"], own)
    (own / "config.toml").unlink()
    doc = json.loads((own / "summary.json").read_text())
    doc["run"] = {"front_end": "decomp.torch.MetricsWriter", "n_workers": 2}
    (own / "summary.json").write_text(json.dumps(doc))
    methods = all_methods(find_runs([own]))
    assert "grad_norm_sq" in methods[0].columns() and default_y(methods) == "loss"
    doc["run"] = {"n_workers": 2}
    (own / "summary.json").write_text(json.dumps(doc))
    assert default_y(all_methods(find_runs([own]))) == "grad_norm_sq"
    rows = [json.loads(r) for r in (own / "metrics.jsonl").read_text().splitlines()]
    (own / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "grad_norm_sq"}) + "\n" for r in rows))
    assert default_y(all_methods(find_runs([own]))) == "loss"


def test_numpy_runs_keep_grad_norm_and_an_explicit_y_wins(runs: dict[str, Path],
                                                          tmp_path: Path) -> None:
    methods = all_methods(find_runs([runs["a"]]))
    assert default_y(methods) == "grad_norm_sq"
    fig = plot_methods(methods, [tmp_path / "n.png"])
    assert fig.axes[0].get_ylabel() == "‖∇f(x)‖²"
    torch_methods = all_methods(find_runs([runs["torch"]]))
    fig = plot_methods(torch_methods, [tmp_path / "g.png"], y=["grad_norm_sq"])
    assert fig.axes[0].get_ylabel() == "‖∇f(x)‖²"


def test_bits_and_bytes_on_a_log_axis_steps_linear(runs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    methods = all_methods(find_runs([runs["a"]]))
    fig = plot_methods(methods, [tmp_path / "x.png"],
                       x=["step", "bits", "bytes", "bits_total"])
    assert [ax.get_xscale() for ax in fig.axes] == ["linear", "log", "log", "log"]
    bits_ax = fig.axes[1]
    for line in bits_ax.get_lines():
        if not line.get_label().startswith("_"):
            assert (np.asarray(line.get_xdata()) > 0).all()  # step 0 (no bits yet) left out
    fig = plot_methods(methods, [tmp_path / "l.png"], x=["bits"], xscale="linear")
    assert fig.axes[0].get_xscale() == "linear"


def test_cli_defaults(runs: dict[str, Path], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`decomp plot` with no -y / --xscale: the Figure plot_methods returns to the CLI."""
    import decomp.report as report

    figs = []
    real = report.plot_methods
    monkeypatch.setattr(report, "plot_methods", lambda *a, **k: figs.append(real(*a, **k)))
    assert main(["plot", str(runs["torch"]), "-x", "bytes", "-o", str(tmp_path / "c.png")]) == 0
    ax = figs[0].axes[0]
    assert (ax.get_xscale(), ax.get_ylabel()) == ("log", "loss f(x)")
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_the_run_folder_is_in_the_legend_when_names_repeat(runs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    methods = all_methods(find_runs([runs["a"], runs["b"]]))
    fig = plot_methods(methods, [tmp_path / "r.png"], run_in_legend=True)
    legend = _legend(fig)
    assert legend == [f"{m.label} ({where}/demo)" for where in ("a", "b")
                      for m in methods[:3]]
    # `decomp plot A B`: several paths given, the CLI asks for the folders
    import decomp.report as report

    figs: list[Any] = []
    real = report.plot_methods
    try:
        report.plot_methods = lambda *a, **k: figs.append(real(*a, **k))  # type: ignore
        assert main(["plot", str(runs["a"]), str(runs["b"]), "-o", str(tmp_path / "c.png")]) == 0
        assert main(["plot", str(runs["a"].parent.parent), "-o", str(tmp_path / "s.png")]) == 0
    finally:
        report.plot_methods = real  # type: ignore
    assert _legend(figs[0]) == legend
    # one path holding every folder: methods told apart by their settings, and by the folder
    # only where the settings are equal (labels' own fallback): the two demo runs
    one_path = _legend(figs[1])
    assert [t for t in one_path if t.startswith("GD ")] == [
        "GD (dense allreduce) (a/demo)", "GD (dense allreduce) (b/demo)"]
    # (that fallback names every method's folder, as before)
    assert any(t.startswith("SGD (") and t.endswith("/digits-mlp)") for t in one_path)
    # one folder, or folders whose method names differ: no folder in the legend
    one = all_methods(find_runs([runs["a"]]))
    assert _legend(plot_methods(one, [tmp_path / "o.png"])) == [m.label for m in one]
    mixed = all_methods(find_runs([runs["a"], runs["torch"]]))
    assert legend_names(mixed) == [m.label for m in mixed]


def test_topology_in_the_title_only_for_decentralized_runs(runs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    mw = all_methods(find_runs([runs["a"]]))
    assert "topology" in mw[0].run.config  # the resolved config has the default ring ...
    head = plot_methods(mw, [tmp_path / "m.png"]).get_suptitle()
    assert "ring" not in head and "breast_cancer" in head  # ... which the title leaves out
    dec = all_methods(find_runs([runs["dec"]]))
    assert {m.summary["family"] for m in dec} == {"decentralized"}
    assert "ring (metropolis)" in plot_methods(dec, [tmp_path / "d.png"]).get_suptitle()
    both = plot_methods([*mw, *dec], [tmp_path / "b.png"]).get_suptitle()
    assert "ring" not in both
