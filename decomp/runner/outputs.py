"""Rank 0's files of a run, ``<out_dir>/<name>/``: ``config.toml`` (resolved),
``metrics.jsonl`` (one line per logged step and method) and ``summary.json``; and the progress
bar."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from decomp.runner.results import MethodResult


class Outputs:
    """The run folder ``directory`` (rank 0 writes; no-op where ``active`` is False).

    config_toml: the resolved config, written as ``config.toml`` at the start.
    """

    def __init__(self, directory: Path, config_toml: str, active: bool) -> None:
        self.active = active
        self.dir = directory
        if active:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.toml").write_text(config_toml)
            self._metrics = open(self.dir / "metrics.jsonl", "w")  # noqa: SIM115

    def metrics(self, row: dict[str, Any]) -> None:
        if self.active:
            self._metrics.write(json.dumps(row) + "\n")
            self._metrics.flush()

    def summary(self, results: list[MethodResult]) -> None:
        if self.active:
            (self.dir / "summary.json").write_text(
                json.dumps([asdict(r) for r in results], indent=2) + "\n")

    def close(self) -> None:
        if self.active:
            self._metrics.close()


def progress_bar(total: int, label: str, enabled: bool) -> Any:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal (in batch
    logs it would be one line per refresh)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, disable=not (enabled and sys.stderr.isatty()),
                leave=False, file=sys.stderr, dynamic_ncols=True)
