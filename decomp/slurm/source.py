"""What a job runs (a config, or a sweep file over one) and which template renders it, for
:mod:`decomp.slurm`."""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError
from decomp.slurm.options import check_name, parse_sweep_arg, toml_literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_SUFFIX = ".sbatch"


# ---- what to run: a config, or a sweep file over one -----------------------------------------

@dataclass
class Source:
    """The config to run and, for a sweep, the grid of ``--set`` overrides."""

    config: Path
    raw: dict[str, Any]
    sweep_name: str | None = None
    base_sets: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def is_sweep(self) -> bool:
        return bool(self.grid)

    def settings(self) -> list[list[str]]:
        """One list of ``KEY=VALUE`` overrides per array task (last grid key varies fastest)."""
        if not self.grid:
            return []
        keys = list(self.grid)
        return [[f"{k}={toml_literal(v)}" for k, v in zip(keys, combo, strict=True)]
                for combo in itertools.product(*(self.grid[k] for k in keys))]

    def task_overrides(self, task: int) -> list[str]:
        """The ``--set`` overrides of one task: the file's ``set`` list, then its grid point
        (the run's name and outputs folder are the caller's: ``<out>/<sweep name>/<task>/``)."""
        settings = self.settings()
        if not 0 <= task < len(settings):
            raise ConfigError(f"sweep {self.sweep_name}: no task {task} (tasks 0-"
                              f"{len(settings) - 1})")
        return [*self.base_sets, *settings[task]]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


SWEEP_KEYS = ("config", "name", "set", "grid")


def load_source(path: str | Path, sweeps: Sequence[str] = ()) -> Source:
    """A config file, or a sweep file (top-level ``config`` and ``[grid]``), plus ``--sweep``s.

    A sweep file::

        config = "ef21_a9a.toml"          # relative to this file
        name = "ef21-a9a-sweep"           # results in runs/<name>/<array task>/
        set = ["run.steps=1000"]          # optional: overrides for every task
        [grid]                            # one array task per combination
        "methods.0.lr_multiplier" = [4, 16, 64]
        "methods.0.compressor" = [{kind = "topk", k = 1}, {kind = "topk", k = 8}]
    """
    raw = _read_toml(Path(path).expanduser())
    p = Path(path).expanduser().resolve()
    if "grid" in raw or ("config" in raw and isinstance(raw.get("config"), str)):
        unknown = sorted(set(raw) - set(SWEEP_KEYS))
        if unknown:
            raise ConfigError(f"{p}: unknown sweep key(s) {', '.join(unknown)} "
                              f"(valid: {', '.join(SWEEP_KEYS)})")
        if not isinstance(raw.get("config"), str):
            raise ConfigError(f"{p}: a sweep file needs config = \"path/to/config.toml\"")
        grid = raw.get("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{p}: [grid] must be a table of KEY = [values]")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{p}: grid key {key!r} needs a non-empty array of values")
        base_sets = raw.get("set", [])
        if not isinstance(base_sets, list) or not all(isinstance(s, str) for s in base_sets):
            raise ConfigError(f"{p}: set must be an array of \"key=value\" strings")
        config = (p.parent / raw["config"]).resolve()
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{p}: name must be a string")
        src = Source(config, _read_toml(config), sweep_name=name, base_sets=list(base_sets),
                     grid=dict(grid))
    else:
        src = Source(p, raw)
    for text in sweeps:
        key, values = parse_sweep_arg(text)
        src.grid[key] = values
    if src.grid and src.sweep_name is None:
        src.sweep_name = f"{src.raw.get('name', 'run')}-sweep"
    if sweeps:  # a grid from the command line: its own name, so two grids never share files
        digest = hashlib.sha1(repr(sorted((k, repr(v)) for k, v in src.grid.items()))
                              .encode()).hexdigest()[:6]
        src.sweep_name = f"{src.sweep_name}-{digest}"
    if src.sweep_name is not None:
        check_name("sweep name", src.sweep_name)
    return src


def choose_template(src: Source) -> str:
    """sweep for a grid; decentralized (the family's name) for gossip algorithms; torch for
    torch models; else master_worker (the family's name)."""
    from decomp.algorithms.registry import DECENTRALIZED_FAMILY, MASTER_WORKER_FAMILY, names

    if src.is_sweep:
        return "sweep"
    methods = src.raw.get("methods", [])
    algos = {str(m.get("algorithm", "")).lower() for m in methods if isinstance(m, dict)}
    if algos & set(names(DECENTRALIZED_FAMILY)) or "topology" in src.raw:
        return DECENTRALIZED_FAMILY
    problem = src.raw.get("problem", {})
    if isinstance(problem, dict) and ("model" in problem or "torch" in str(problem.get("kind"))
                                      or "mnist1d" in str(problem.get("dataset", "")).lower()):
        return "torch"
    return MASTER_WORKER_FAMILY


def template_dirs() -> list[Path]:
    """Where templates are looked up by name: ./jobs/slurm, then the repository's."""
    dirs = [Path.cwd() / "jobs" / "slurm", REPO / "jobs" / "slurm"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def find_template(name: str) -> Path:
    """A template by name (``master_worker``, ``sweep``, ...) or path."""
    p = Path(name).expanduser()
    if p.suffix == TEMPLATE_SUFFIX or "/" in name:
        if p.is_file():
            return p.resolve()
        raise ConfigError(f"template file {name!r} not found")
    for d in template_dirs():
        cand = d / f"{name}{TEMPLATE_SUFFIX}"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in template_dirs() if d.is_dir()
                    for f in d.glob(f"*{TEMPLATE_SUFFIX}")})
    raise ConfigError(f"no SLURM template {name!r} in {', '.join(map(str, template_dirs()))} "
                      f"(known: {', '.join(known) or 'none'})")
