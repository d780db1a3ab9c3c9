"""Run folders as data: ``config.toml``, ``metrics.jsonl`` and ``summary.json`` of ``decomp
run`` / ``decomp sim`` (``<out_dir>/<name>/``), read without MPI, torch or the engine.

A path given to :func:`find_runs` is a run folder (it holds ``metrics.jsonl`` or
``summary.json``) or a folder of them (a sweep's ``<out>/<sweep>/<task>/``, searched
recursively). ``summary.json`` is ``{"run": {...}, "methods": [...]}``; the older form, a bare
list of methods, is read too. A ``metrics.jsonl`` cut by a kill (half a last line) is read up
to its last whole line.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decomp.errors import DecompError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUN_FILES = ("metrics.jsonl", "summary.json")


class RunFolderError(DecompError):
    """A path that is not a run folder (or holds none), or a file that cannot be read."""


@dataclass(eq=False)
class MethodRun:
    """One method of one run: its metrics rows (in step order) and its summary entry."""

    run: Run
    label: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # position among the run's methods

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown" if not self.rows else "ok?"))

    @property
    def config(self) -> dict[str, Any]:
        """This method's ``[[methods]]`` table of the run's config ({} when unknown)."""
        methods = self.run.config.get("methods", [])
        for m in methods:
            if m.get("name", m.get("algorithm")) == self.label:
                return dict(m)
        return dict(methods[self.index]) if self.index < len(methods) else {}

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r))
        seen.pop("method", None)
        return list(seen)

    def column(self, name: str) -> np.ndarray:
        """The values of ``name`` over the rows (nan where a row lacks it or it is not a
        number)."""
        return np.array([_number(r.get(name)) for r in self.rows], dtype=np.float64)

    def final(self, name: str) -> float:
        """The last row's value of ``name`` (nan if absent)."""
        return _number(self.rows[-1].get(name)) if self.rows else math.nan


@dataclass(eq=False)
class Run:
    """A run folder: its config (parsed ``config.toml``), run metadata and methods."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    methods: list[MethodRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v)


def read_summary(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run metadata, method entries) of a ``summary.json`` ({} and [] if it is missing)."""
    if not path.is_file():
        return {}, []
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: not valid JSON ({e})") from None
    if isinstance(doc, list):  # the form before run metadata
        return {}, doc
    if isinstance(doc, dict) and isinstance(doc.get("methods"), list):
        return dict(doc.get("run") or {}), doc["methods"]
    raise RunFolderError(f"{path}: expected {{\"run\": ..., \"methods\": [...]}}")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a cut last line is dropped; other bad lines are an
    error)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a kill cut the last line
            raise RunFolderError(f"{path}:{i + 1}: not a JSON line") from None
    return rows


def load_run(path: str | Path) -> Run:
    """Read one run folder."""
    p = Path(path)
    if not is_run_dir(p):
        raise RunFolderError(f"{p} is not a run folder (no metrics.jsonl or summary.json)")
    config: dict[str, Any] = {}
    if (p / "config.toml").is_file():
        try:
            config = tomllib.loads((p / "config.toml").read_text())
        except tomllib.TOMLDecodeError as e:
            raise RunFolderError(f"{p / 'config.toml'}: invalid TOML: {e}") from None
    meta, entries = read_summary(p / "summary.json")
    run = Run(p, config, meta)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in read_metrics(p / "metrics.jsonl"):
        by_label.setdefault(str(row.get("method", "")), []).append(row)
    labels = [str(e.get("method")) for e in entries]
    labels += [m for m in by_label if m not in labels]
    for i, label in enumerate(labels):
        rows = sorted(by_label.get(label, []), key=lambda r: _number(r.get("step")))
        summary = next((e for e in entries if str(e.get("method")) == label), {})
        run.methods.append(MethodRun(run, label, rows, summary, i))
    return run


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in RUN_FILES)


def _natural(p: Path) -> tuple[tuple[Any, ...], ...]:
    """A sort key: each path part split into text and numbers ("10" after "9")."""
    return tuple(tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", part))
                 for part in p.parts)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every run folder under ``paths`` (a run folder itself, or a folder searched
    recursively), in the order given and then by name, numbers in numeric order."""
    runs: list[Run] = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise RunFolderError(f"{p}: no such file or directory")
        if is_run_dir(p):
            runs.append(load_run(p))
            continue
        found = {f.parent for name in RUN_FILES for f in p.rglob(name)}
        found = {d for d in found if not any(a in found for a in d.parents)}  # not nested
        if not found:
            raise RunFolderError(f"{p} holds no run folder (no metrics.jsonl or summary.json "
                                 "below it)")
        runs += [load_run(d) for d in sorted(found, key=_natural)]
    return runs


def all_methods(runs: list[Run]) -> list[MethodRun]:
    return [m for r in runs for m in r.methods]


__all__ = ["MethodRun", "Run", "RunFolderError", "all_methods", "find_runs", "is_run_dir",
           "load_run", "read_metrics", "read_summary"]
