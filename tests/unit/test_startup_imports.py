"""``decomp run`` imports only what the run needs (issue 23, start-up): a numpy run on
scikit-learn's bundled breast-cancer set (the demo) loads no scikit-learn, matplotlib or torch
and none of the other sub-commands' machinery (cost model, report, SLURM, bench); the parser
for one sub-command imports that sub-command's module only. Each probe is a fresh interpreter,
so what another test imported does not hide a regression."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from decomp.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "jobs" / "configs" / "demo.toml"
#: top-level packages a numpy run must not load (each costs ~0.5-2 s a rank)
HEAVY = ("sklearn", "matplotlib", "torch")
#: decomp modules only other sub-commands need
NOT_FOR_RUN = ("decomp.netmodel", "decomp.report", "decomp.slurm", "decomp.bench",
               "decomp.torch", "decomp.cli.topo", "decomp.cli.model", "decomp.cli.bench",
               "decomp.cli.plot", "decomp.cli.compare", "decomp.cli.slurm", "decomp.cli.sim")

_PROBE = """
import sys
{body}
heavy = {heavy!r}
avoid = {avoid!r}
print(sorted(m for m in sys.modules
             if m.split('.')[0] in heavy or any(m == a or m.startswith(a + '.') for a in avoid)))
"""


def _loaded(body: str, cwd: Path, avoid: tuple[str, ...] = NOT_FOR_RUN) -> list[str]:
    """The heavy / other-command modules a fresh interpreter holds after running ``body``."""
    code = _PROBE.format(body=body, heavy=HEAVY, avoid=avoid)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=cwd, env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 (our own print of a list)


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_numpy_decomp_run_imports_no_sklearn_matplotlib_torch(tmp_path: Path) -> None:
    body = ("from decomp.cli import main\n"
            f"rc = main(['run', {str(DEMO)!r}, '--steps', '1', '--out', {str(tmp_path)!r}, "
            "'--no-progress'])\n"
            "assert rc == 0, rc\n")
    assert _loaded(body, tmp_path) == []
    assert (tmp_path / "demo" / "summary.json").is_file()


def test_the_run_parser_imports_only_the_run_subcommand(tmp_path: Path) -> None:
    body = ("from decomp.cli import build_parser, _commands_for\n"
            "build_parser(_commands_for(['run', 'x.toml'])).parse_args(['run', 'x.toml'])\n")
    assert _loaded(body, tmp_path) == []


def test_the_probe_catches_a_regression(tmp_path: Path) -> None:
    """The same probe flags what the full parser (every sub-command) and scikit-learn's own
    loader import, so an eager import creeping back into the run path fails the tests above."""
    assert "sklearn" in {m.split(".")[0] for m in _loaded("import sklearn.datasets", tmp_path)}
    full = _loaded("from decomp.cli import build_parser\nbuild_parser()", tmp_path)
    assert "decomp.cli.topo" in full and "decomp.cli.model" in full


def test_the_help_lists_every_subcommand() -> None:
    from decomp.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert tuple(sub.choices) == SUBCOMMANDS


def test_bundled_sets_equal_scikit_learns_loaders() -> None:
    """breast_cancer and digits, read from scikit-learn's CSV files without importing it,
    are the arrays its loaders return."""
    from sklearn import datasets

    from decomp.data.tabular import _sklearn_set

    for name, loader in (("breast_cancer", datasets.load_breast_cancer),
                         ("digits", datasets.load_digits)):
        A, y = _sklearn_set(name)
        bunch = loader()
        assert A.dtype == np.float64 and np.array_equal(A, bunch.data), name
        assert np.array_equal(y, bunch.target), name
