"""Rank 0's files of a run, ``<out_dir>/<name>/``: ``config.toml`` (resolved),
``metrics.jsonl`` (one line per logged step and method) and ``summary.json`` (one entry per
method with its status: ok, diverged, interrupted or failed, and the run's metadata). The
progress display is :mod:`decomp.runner.progress`.

``summary.json`` and ``config.toml`` are replaced atomically (written to a temporary file, then
renamed), so a kill never leaves half a file. On a resume, ``metrics.jsonl`` keeps the rows each
method had logged up to its checkpoint (:meth:`Outputs.keep_rows`) and grows from there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decomp.runner.diskfull import storage_error, writing
from decomp.runner.diskfull import write_text_atomic as write_atomic
from decomp.runner.results import MethodResult

#: where a resume keeps the rows it read until the run ends (in the run folder)
BACKUP = ".metrics.resume.jsonl"


def check_rows(run_dir: Path, label: str, step: int, log_every: int) -> None:
    """Resume: refuse (ConfigError) a run folder whose ``metrics.jsonl`` (with the resume
    backup) lacks rows ``label`` logged before its checkpoint at ``step`` (step 0 and the
    multiples of ``log_every`` below it): rows removed or the file replaced by another."""
    from decomp.errors import ConfigError

    seen: set[Any] = set()
    for source in (run_dir / BACKUP, run_dir / "metrics.jsonl"):
        if source.exists():
            for line in source.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and row.get("method") == label:
                    seen.add(row.get("step"))
    want = [0, *range(log_every, step, log_every)] if step > 0 and log_every > 0 else []
    missing = [t for t in want if t not in seen]
    if missing:
        shown = ", ".join(map(str, missing[:6])) + (" ..." if len(missing) > 6 else "")
        raise ConfigError(
            f"--resume: {run_dir / 'metrics.jsonl'} lacks {len(missing)} of the "
            f"{len(want)} rows {label} logged before its checkpoint at step {step} (steps "
            f"{shown}): rows were removed or the file replaced; put the file back, or start "
            "again with --overwrite")


class Outputs:
    """The run folder ``directory`` (rank 0 writes; no-op where ``active`` is False).

    config_toml: the resolved config, written as ``config.toml`` at the start; resume: append
    to the metrics of an earlier run of the same folder instead of starting them anew.
    """

    def __init__(self, directory: Path, config_toml: str, active: bool, *,
                 resume: bool = False, meta: dict[str, Any] | None = None,
                 cfg: Any = None) -> None:
        self.active = active
        self.dir = directory
        # run metadata and the config, for summary.json and config.toml's footer (metadata.py)
        self.meta, self.cfg, self.config_toml = meta, cfg, config_toml
        if active:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / "config.toml", config_toml)
            self._metrics = open(self.dir / "metrics.jsonl", "a" if resume else "w")  # noqa: SIM115
        self._pending: dict[str, list[tuple[int, str]]] = {}

    def keep_rows(self, last_step: dict[str, int], *, log_every: int, steps: int) -> None:
        """Resume: keep each method's metrics rows up to its checkpoint step (``last_step``
        by method label; methods not in it lose their rows, they start again) that a straight
        run of ``steps`` steps logs too (step 0, multiples of ``log_every``, the last step).

        The kept rows are written back method by method as each method starts
        (:meth:`begin`), so the file ends in the order a straight run writes. Until the run
        ends (:meth:`finish`), every row read here stays in ``.metrics.resume.jsonl``, which
        the next resume reads too: a kill during a resume loses no row."""
        if not self.active:
            return
        self._metrics.close()
        path, backup = self.dir / "metrics.jsonl", self.dir / BACKUP
        seen: dict[tuple[Any, Any], str] = {}
        for source in (backup, path):
            if not source.exists():
                continue
            for line in source.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                seen.setdefault((row.get("method"), row.get("step")), line)
        write_atomic(backup, "".join(f"{line}\n" for line in seen.values()))
        self._pending = {}
        for (method, step), line in seen.items():
            logged = step == 0 or step == steps or step % log_every == 0
            if logged and step <= last_step.get(method, -1):
                self._pending.setdefault(method, []).append((step, line))
        write_atomic(path, "")
        self._metrics = open(path, "a")  # noqa: SIM115

    def begin(self, label: str) -> None:
        """A method starts: write the rows it had before a resume (see :meth:`keep_rows`)."""
        if self.active and label in self._pending:
            for _, line in sorted(self._pending.pop(label), key=lambda sl: sl[0]):
                self._metrics.write(line + "\n")
            self._metrics.flush()

    def finish(self) -> None:
        """The run ended with every method done: the resume backup is no longer needed."""
        if self.active:
            (self.dir / BACKUP).unlink(missing_ok=True)

    def metrics(self, row: dict[str, Any]) -> None:
        if self.active:
            line = json.dumps(row) + "\n"
            try:
                with writing(self.dir / "metrics.jsonl", "metrics row to"):
                    self._metrics.write(line)
                    self._metrics.flush()
            except OSError as e:
                raise storage_error(e, self.dir / "metrics.jsonl", len(line), "metrics row "
                                    "to") from None

    def summary(self, results: list[MethodResult]) -> None:
        """summary.json = {"run": metadata + numeric step sizes, "methods": [...]}; config.toml
        gets the same as comments at its end (runner.metadata)."""
        if self.active:
            from decomp.runner.metadata import config_footer, summary_document

            doc = summary_document(self.meta, self.cfg, results)
            write_atomic(self.dir / "summary.json", json.dumps(doc, indent=2) + "\n")
            if self.cfg is not None:
                write_atomic(self.dir / "config.toml",
                             self.config_toml + config_footer(self.meta, self.cfg, results))

    def close(self) -> None:
        if self.active:
            self._metrics.close()

