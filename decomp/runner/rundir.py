"""The run folder ``<out_dir>/<name>/``: checked and claimed before any data is loaded, so
nothing a user wrote is lost or overwritten.

- ``name`` is one path component: no separator, not ``.``/``..``, not absolute, printable, at
  most :data:`MAX_NAME` characters.
- ``out_dir`` must be a writable directory (created if missing).
- An existing run folder is refused unless the run is a ``resume`` (it must then hold a
  ``config.toml``) or an ``overwrite`` (decomp's own files in it are removed first; anything
  else in the folder is left alone). ``auto`` resumes a folder that holds a run and starts a
  new one otherwise (what a requeued SLURM job needs: it may have been stopped before its
  first output).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError, LaunchError

MAX_NAME = 100
MODES = ("new", "resume", "overwrite", "auto")
#: what a run writes into its folder (removed by ``--overwrite``)
RUN_FILES = ("config.toml", "metrics.jsonl", "summary.json")
RUN_DIRS = ("checkpoints",)


def check_name(name: str) -> str:
    """The run name as a single, safe path component (ConfigError otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name must be a non-empty string (the run folder's name)")
    if len(name) > MAX_NAME:
        raise ConfigError(f"name is {len(name)} characters long; the run folder's name may "
                          f"have at most {MAX_NAME}")
    if not name.isprintable() or name != name.strip():
        raise ConfigError(f"name {name!r} has non-printable characters or surrounding "
                          "spaces; use letters, digits, '-', '_' and '.'")
    if "/" in name or "\\" in name or os.sep in name or name in (".", "..") or \
            os.path.isabs(name):
        raise ConfigError(f"name {name!r} must be one folder name (no '/', not '.' or '..', "
                          "not absolute): the run is written to <out_dir>/<name>/; put the "
                          "directory part in out_dir (or --out)")
    return name


def _probe_writable(out_dir: Path) -> str:
    """'' if ``out_dir`` is (or can be made) a writable directory, else the reason."""
    try:
        if out_dir.exists() and not out_dir.is_dir():
            return f"out_dir {str(out_dir)!r} exists and is not a directory"
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".decomp-probe-"):
            pass
    except OSError as e:
        return f"out_dir {str(out_dir)!r} is not writable: {e.strerror or e}"
    return ""


def claim_run_dir(out_dir: str | Path, name: str, mode: str,
                  comm: Any = None) -> tuple[Path, str]:
    """Check and prepare ``<out_dir>/<name>/`` for a run in ``mode`` (new | resume |
    overwrite | auto); rank 0 looks at the disk, every rank gets the same verdict. Returns the
    path and the mode to run in (``auto`` becomes ``resume`` or ``new``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_name(name)
    run_dir = Path(out_dir) / name
    verdict = ""
    if comm is None or comm.Get_rank() == 0:
        if mode == "auto":
            mode = "resume" if (run_dir / "config.toml").is_file() else "new"
        verdict = _verdict(Path(out_dir), run_dir, mode)
    if comm is not None and comm.Get_size() > 1:
        verdict, mode = comm.bcast((verdict, mode), root=0)  # control path, once per run
    if verdict:
        cls = LaunchError if verdict.startswith("run folder") else ConfigError
        raise cls(verdict)
    return run_dir, mode


def _verdict(out_dir: Path, run_dir: Path, mode: str) -> str:
    reason = _probe_writable(out_dir)
    if reason:
        return reason + " (set out_dir in the config or pass --out DIR)"
    exists = run_dir.exists() and any(run_dir.iterdir()) if run_dir.is_dir() else \
        run_dir.exists()
    if run_dir.exists() and not run_dir.is_dir():
        return f"run folder {run_dir} exists and is not a directory"
    if mode == "resume":
        if not (run_dir / "config.toml").is_file():
            return (f"run folder {run_dir} has no config.toml: nothing to resume (run without "
                    "--resume to start it)")
        return ""
    if exists and mode == "new":
        return (f"run folder {run_dir} already exists: pass --resume to continue it, "
                "--overwrite to replace its results, or choose another name (--set name=...)")
    if mode == "overwrite" and run_dir.is_dir():
        for f in RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)
        for d in RUN_DIRS:
            shutil.rmtree(run_dir / d, ignore_errors=True)
    return ""
