"""The run folder ``<out_dir>/<name>/``: checked and claimed before any data is loaded, so
nothing a user wrote is lost or overwritten.

- ``name`` is one path component: no separator, not ``.``/``..``, not absolute, printable, at
  most :data:`MAX_NAME` characters.
- ``out_dir`` must be a writable directory (created if missing).
- ``name`` (plus its lock file's suffix) fits the file system's limit on a file name, in bytes.
- One owner at a time: rank 0 takes the lock ``<out_dir>/.<name>.lock`` (:mod:`.lock`) before
  anything is written; a folder in use by another run is refused and left as it is.
- An existing run folder is refused unless the run is a ``resume`` (it must then hold a
  ``config.toml``) or an ``overwrite``: decomp's own files are moved into
  ``<run_dir>/.replaced/`` only when the new run starts (every check passed, data loaded,
  :meth:`Claim.start`), deleted once the new run has a checkpoint or ends, and put back if it
  fails before its first checkpoint (:meth:`Claim.end`); anything else in the folder is left
  alone. ``auto`` resumes a folder that holds a run and starts a new one otherwise (what a
  requeued SLURM job needs: it may have been stopped before its first output).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.errors import ConfigError, DecompError, LaunchError
from decomp.runner.lock import RunLock, acquire
from decomp.runner.outputs import BACKUP

MAX_NAME = 100
MODES = ("new", "resume", "overwrite", "auto")
#: what a run writes into its folder (removed by ``--overwrite``)
RUN_FILES = ("config.toml", "metrics.jsonl", "summary.json")
RUN_DIRS = ("checkpoints",)
#: where ``--overwrite`` keeps the old results until the new run has a checkpoint
ASIDE = ".replaced"
#: bytes the lock file's name adds to the run name (".<name>.lock.<pid>.stale")
LOCK_EXTRA = 24


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


def check_name_fits(out_dir: Path, name: str) -> str:
    """'' if ``name`` (and its lock file beside it) fits the file system of ``out_dir``."""
    try:
        limit = os.pathconf(out_dir, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(name.encode())
    if size + LOCK_EXTRA > limit:
        return (f"name is {size} bytes long (UTF-8); the file system of {out_dir} allows "
                f"file names of {limit} bytes and the run's lock file beside its folder needs "
                f"{LOCK_EXTRA} more: choose a name of at most {limit - LOCK_EXTRA} bytes")
    return ""


@dataclass
class Claim:
    """A run folder claimed for one run: ``run_dir``, the ``mode`` it runs in, the lock
    (rank 0 only) and, for ``--overwrite``, the old results moved aside by :meth:`start`."""

    run_dir: Path
    mode: str
    lock: RunLock | None = None
    moved: list[str] = field(default_factory=list)

    @property
    def aside(self) -> Path:
        return self.run_dir / ASIDE

    def start(self) -> None:
        """The new run starts (every check passed, the data loaded): ``--overwrite`` moves
        decomp's old files into ``<run_dir>/.replaced/`` (a leftover of an earlier attempt
        is deleted first)."""
        if self.lock is None or self.mode != "overwrite" or not self.run_dir.is_dir():
            return
        shutil.rmtree(self.aside, ignore_errors=True)
        for f in (*RUN_FILES, *RUN_DIRS, BACKUP):
            if (self.run_dir / f).exists():
                self.aside.mkdir(exist_ok=True)
                os.replace(self.run_dir / f, self.aside / f)
                self.moved.append(f)

    def end(self, ok: bool) -> str:
        """The run ended. Kept (``ok``, or a checkpoint of the new run exists): the old files
        are deleted. Else they are put back in place of the new run's (returns a note)."""
        if self.lock is None or not self.moved:
            return ""
        if ok or any((self.run_dir / "checkpoints").glob("m*.json")):
            shutil.rmtree(self.aside, ignore_errors=True)
            self.moved = []
            return ""
        for f in (*RUN_FILES, *RUN_DIRS, BACKUP):
            target = self.run_dir / f
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        for f in self.moved:
            os.replace(self.aside / f, self.run_dir / f)
        shutil.rmtree(self.aside, ignore_errors=True)
        self.moved = []
        return (f"--overwrite: the new run failed before its first checkpoint; the earlier "
                f"results in {self.run_dir} are restored")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def claim_run_dir(out_dir: str | Path, name: str, mode: str, comm: Any = None) -> Claim:
    """Lock, check and prepare ``<out_dir>/<name>/`` for a run in ``mode`` (new | resume |
    overwrite | auto); rank 0 looks at the disk and holds the lock (taken before anything is
    written to the folder), every rank gets the same verdict. The returned :class:`Claim`
    says the mode to run in (``auto`` becomes ``resume`` or ``new``); nothing is removed here
    (``--overwrite`` moves the old results aside at :meth:`Claim.start`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_name(name)
    run_dir = Path(out_dir) / name
    verdict = ""
    lock = None
    if comm is None or comm.Get_rank() == 0:
        try:
            verdict = _probe_writable(Path(out_dir))
            if verdict:
                verdict += " (set out_dir in the config or pass --out DIR)"
            else:
                verdict = check_name_fits(Path(out_dir), name)
            if not verdict:
                lock = acquire(out_dir, name, run_dir)
                if mode == "auto":
                    mode = "resume" if (run_dir / "config.toml").is_file() else "new"
                verdict = _verdict(run_dir, mode)
        except DecompError as e:
            verdict = str(e)
        if verdict and lock is not None:
            lock.release()
            lock = None
    if comm is not None and comm.Get_size() > 1:
        verdict, mode = comm.bcast((verdict, mode), root=0)  # control path, once per run
    if verdict:
        cls = LaunchError if verdict.startswith("run folder") else ConfigError
        raise cls(verdict)
    return Claim(run_dir, mode, lock)


def _verdict(run_dir: Path, mode: str) -> str:
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
    return ""
